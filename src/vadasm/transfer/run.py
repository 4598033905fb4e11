"""Experimental cross-size language transfer, always written and scored beside its controls.

Writes two checkpoints of the recipient's architecture and shapes: OUTPUT (recipient + beta * the
transported MLP delta, see `mlp.py`) and OUTPUT-control-random (recipient + a Gaussian delta of the
same Frobenius norm, tensor by tensor). The third arm, zero delta, is the recipient itself. With
`tasks`, all three are scored on the same held-out test items and the result says plainly whether
the transfer beat both controls. Attention, norms and embeddings are not transferred (head counts
and head sizes differ across sizes; nothing maps a head of one model onto a head of the other).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from vadasm.arch import Architecture, architecture_for
from vadasm.errors import VadasmError
from vadasm.graft.embedding_maps import embed_scale, fit_map, shared_anchors
from vadasm.io import Checkpoint, PlannedTensor, ShardedWriter, atomic_output_dir, check_output_free
from vadasm.io.provenance import input_records, natural_key, provenance_record, tensor_seed, write_provenance
from vadasm.options import FORCE_HELP, option
from vadasm.transfer.mlp import MlpTransfer, MlpWeights, layer_pairs, matched_norm_random, mlp_transfer

MLP_ROLES = ("mlp_gate", "mlp_up", "mlp_down")
CONTROL_SUFFIX = "-control-random"


@dataclass
class TransferOptions:
    """How to run a transfer; `vadasm transfer` derives its flags from these fields."""

    beta: float = option(0.1, help="Multiplier of the transferred delta.")
    map_method: str = option("lstsq", help="Residual-stream map fitted on shared anchor tokens: lstsq or procrustes.")
    # also seeds the random-matching diagnostic and, in the CLI, the scored task items
    seed: int = option(0, help="Seed of the random-delta control and the task items.")
    force: bool = option(False, help=FORCE_HELP)
    progress: bool = option(True, cli=False, help="Progress bars (the CLI turns them off for --quiet and --json).")


@dataclass
class TransferResult:
    output: str
    control: str
    recipient: str
    donor: str
    donor_base: str | None
    mode: str  # "task_vector" (donor - donor_base) or "difference" (donor - recipient, seed's large - small)
    options: dict
    maps: dict = field(default_factory=dict)  # anchors and held-out retrieval of both residual maps
    layers: list[dict] = field(default_factory=list)
    not_transferred: list[dict] = field(default_factory=list)
    controls: dict = field(default_factory=dict)
    scores: list[dict] = field(default_factory=list)
    verdict: str = "not scored: run with tasks to compare against the controls"
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def language_transfer(recipient_ref, donor_ref, output, donor_base_ref=None,
                      options: TransferOptions | None = None) -> TransferResult:
    """Transfer the donor's MLP knowledge into a recipient of another width (experimental)."""
    opts = options or TransferOptions()
    started = time.perf_counter()
    output = Path(output)
    control = output.with_name(output.name + CONTROL_SUFFIX)
    for path in (output, control):
        check_output_free(path, opts.force, [recipient_ref, donor_ref, donor_base_ref])
    recipient, r_arch = _open_text(recipient_ref)
    donor, d_arch = _open_text(donor_ref)
    base = _open_text(donor_base_ref)[0] if donor_base_ref else None
    if base is not None and any(base.shape(n) != donor.shape(n) for n in donor.keys() if n in base):
        raise VadasmError(f"{base.path}: donor base must have the donor's shapes")
    r_width = r_arch.text.config_value(recipient.config, "hidden_size")
    d_width = d_arch.text.config_value(donor.config, "hidden_size")
    r_mlp, d_mlp = _mlp_names(recipient, r_arch), _mlp_names(donor, d_arch)
    if r_width == d_width and all(recipient.shape(n) == donor.shape(n) for n in recipient.keys() if n in donor):
        raise VadasmError("recipient and donor have the same shapes: use `vadasm merge` (a real task vector)")
    to_recipient, to_donor, maps = residual_maps(recipient, r_arch, donor, d_arch, opts.map_method)
    pairs = layer_pairs(len(r_mlp), len(d_mlp))
    result = TransferResult(
        str(output), str(control), str(recipient.path), str(donor.path), str(base.path) if base else None,
        "task_vector" if base else "difference", asdict(opts), maps=maps)
    result.not_transferred = [
        {"tensors": "attention (q/k/v/o)", "reason": "head counts and sizes differ; no defined map between heads"},
        {"tensors": "embeddings, lm_head, norms", "reason": "kept: the residual map is fitted on them, not applied"},
    ]
    gen = torch.Generator().manual_seed(opts.seed)
    cache: dict[int, MlpTransfer] = {}
    logs: dict[int, dict] = {}

    def delta(name: str) -> torch.Tensor | None:
        role = r_arch.role(name)
        if role.role not in MLP_ROLES or not name.endswith(".weight") or role.layer not in r_mlp:
            return None
        layer = role.layer
        if layer not in logs:
            d_layer = sorted(d_mlp)[pairs[sorted(r_mlp).index(layer)]]
            t = cache[layer] = mlp_transfer(
                _mlp(recipient, r_arch, r_mlp[layer]), _mlp(donor, d_arch, d_mlp[d_layer]),
                _mlp(base, d_arch, d_mlp[d_layer]) if base else None, to_recipient, to_donor, gen)
            logs[layer] = {"layer": layer, "donor_layer": d_layer, "matched_cosine": round(t.matched_cosine, 6),
                           "null_matched_cosine": round(t.null_cosine, 6)}
        t = cache[layer]
        d = {"mlp_gate": t.delta_gate, "mlp_up": t.delta_up, "mlp_down": t.delta_down}[role.role] * opts.beta
        relative = float(d.norm()) / float(recipient.get(name).float().norm())
        logs[layer][f"{role.role}_relative_delta"] = round(relative, 6)
        if sum(k.endswith("_relative_delta") for k in logs[layer]) == 3:
            del cache[layer]  # memory follows one layer
        return d

    _write_pair(recipient, output, control, delta, opts, result, started,
                [recipient, donor] + ([base] if base else []), lambda: setattr(result, "layers", list(logs.values())))
    return result


def residual_maps(recipient: Checkpoint, r_arch: Architecture, donor: Checkpoint, d_arch: Architecture,
                  method: str = "lstsq", held_out: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Linear maps donor->recipient [d_d, d_r] and recipient->donor [d_r, d_d] between residual streams,
    fitted on tokens both vocabularies spell the same (effective embeddings), with held-out
    top-1 retrieval among all anchors as the quality measure."""
    if method not in ("lstsq", "procrustes"):
        raise VadasmError(f"unknown map method '{method}' (lstsq, procrustes)")
    d_ids, r_ids = shared_anchors(_token_strings(donor), _token_strings(recipient))
    widths = max(r_arch.text.config_value(recipient.config, "hidden_size"),
                 d_arch.text.config_value(donor.config, "hidden_size"))
    if len(d_ids) * (1 - held_out) <= widths:
        raise VadasmError(f"only {len(d_ids)} tokens are spelled the same in both vocabularies; fitting a "
                          f"{widths}-wide map needs more than {int(widths / (1 - held_out))}")
    r_emb, d_emb = _effective_embeddings(recipient, r_arch), _effective_embeddings(donor, d_arch)
    x, y = d_emb[d_ids], r_emb[r_ids]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(len(x) * held_out)
    test, fit = order[:cut], order[cut:]
    forward = fit_map(x[fit], y[fit], method)
    backward = fit_map(y[fit], x[fit], method)
    maps = {"method": method, "anchors": len(d_ids), "held_out": cut,
            "retrieval_top1_donor_to_recipient": _retrieval(forward(x[test]), y, test),
            "retrieval_top1_recipient_to_donor": _retrieval(backward(y[test]), x, test)}
    return (forward.matrix * forward.scale).float(), (backward.matrix * backward.scale).float(), maps


def _retrieval(mapped: torch.Tensor, targets: torch.Tensor, truth: torch.Tensor) -> float:
    t = targets.double() / targets.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    hits = 0
    for start in range(0, len(mapped), 1024):
        m = mapped[start:start + 1024].double()
        nearest = (m / m.norm(dim=1, keepdim=True).clamp_min(1e-12) @ t.T).argmax(1)
        hits += int((nearest == truth[start:start + 1024]).sum())
    return round(hits / max(1, len(mapped)), 4)


def _token_strings(checkpoint: Checkpoint) -> list[str]:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
    except (OSError, ValueError) as err:
        raise VadasmError(f"{checkpoint.path}: language transfer needs the tokenizer ({err})") from None
    strings = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    for i in tokenizer.all_special_ids:
        strings[i] = ""  # control tokens carry no shared meaning
    return strings


def _effective_embeddings(checkpoint: Checkpoint, arch: Architecture) -> torch.Tensor:
    hidden = arch.text.config_value(checkpoint.config, "hidden_size")
    return checkpoint.get_checked(arch.text.spec["embed"][0]).float() * embed_scale(arch.model_type, hidden)


def _open_text(ref) -> tuple[Checkpoint, Architecture]:
    ck = Checkpoint.open(ref)
    arch = architecture_for(ck.config, ck.keys(), str(ck.path / "config.json"))
    if arch.has_vision:
        raise VadasmError(f"{ck.path}: language transfer takes text-only checkpoints (got {arch.model_type})")
    if "mlp_input_norm" not in arch.text.spec:
        raise VadasmError(f"{ck.path}: language transfer supports gated-MLP families with a known MLP input norm "
                          f"(not {arch.model_type})")
    return ck, arch


def _mlp_names(ck: Checkpoint, arch: Architecture) -> dict[int, dict[str, str]]:
    """{layer: {role: tensor name}} for layers with a separate gate, up and down projection."""
    layers: dict[int, dict[str, str]] = {}
    for name in ck.keys():
        role = arch.role(name)
        if role.role in MLP_ROLES and name.endswith(".weight"):
            layers.setdefault(role.layer, {})[role.role] = name
    prefix = arch.text.spec["layer_prefix"]
    for layer, names in layers.items():
        names["norm"] = prefix.format(layer=layer) + arch.text.spec["mlp_input_norm"]
    return {k: v for k, v in layers.items() if len(v) == 4 and v["norm"] in ck}


def _mlp(ck: Checkpoint, arch: Architecture, names: dict[str, str]) -> MlpWeights:
    offset = arch.text.spec.get("norm_weight_offset", 0.0)
    return MlpWeights(ck.get_checked(names["mlp_gate"]).float(), ck.get_checked(names["mlp_up"]).float(),
                      ck.get_checked(names["mlp_down"]).float(), ck.get_checked(names["norm"]).float() + offset)


def _write_pair(recipient: Checkpoint, output: Path, control: Path, delta, opts: TransferOptions,
                result: TransferResult, started: float, inputs: list[Checkpoint], finish) -> None:
    """Stream the recipient once, writing the transfer and its matched-norm random control."""
    squared = {"delta": 0.0, "control": 0.0}
    names = sorted(recipient.keys(), key=natural_key)
    plan = [PlannedTensor(n, recipient.shape(n), recipient.get(n).dtype) for n in names]
    read = list(inputs)  # opened checkpoints: also checked for changes before the rename
    with (atomic_output_dir(output, opts.force, read) as out_tmp,
          atomic_output_dir(control, opts.force, read) as ctl_tmp):
        writers = ShardedWriter(out_tmp, plan), ShardedWriter(ctl_tmp, plan)
        for item in tqdm(plan, desc="language transfer", unit="tensor", disable=not opts.progress):
            tensor = recipient.get_checked(item.name)
            change = delta(item.name)
            if change is None:
                for writer in writers:
                    writer.write(item.name, tensor)
                continue
            noise = matched_norm_random(change, torch.Generator().manual_seed(tensor_seed(opts.seed, item.name)))
            squared["delta"] += float(change.norm()) ** 2
            squared["control"] += float(noise.norm()) ** 2
            writers[0].write(item.name, (tensor.float() + change).to(item.dtype))
            writers[1].write(item.name, (tensor.float() + noise).to(item.dtype))
        for writer in writers:
            writer.close()
        result.controls = {
            "zero_delta": {"model": str(recipient.path), "what": "the recipient itself"},
            "random_delta": {"model": str(control), "what": "Gaussian delta, same Frobenius norm per tensor",
                             "seed": opts.seed, "delta_norm": squared["delta"] ** 0.5,
                             "control_norm": squared["control"] ** 0.5},
        }
        finish()
        result.seconds = round(time.perf_counter() - started, 3)
        for folder, kind in ((out_tmp, "language_transfer"), (ctl_tmp, "language_transfer_control_random")):
            for file in recipient.sidecar_files():
                shutil.copy2(file, folder / file.name)
            (folder / "config.json").write_text(json.dumps(recipient.config, indent=2, sort_keys=True) + "\n")
            _provenance(folder, kind, result, inputs)


def _provenance(folder: Path, kind: str, result: TransferResult, inputs: list[Checkpoint]) -> None:
    write_provenance(folder, provenance_record(kind, experimental=True, inputs=input_records(inputs),
                                               result=result.to_dict()))


def score_with_controls(result: TransferResult, tasks: Sequence[str] = ("arith", "perplexity"),
                        limit: int | None = 100, split: str = "test", seed: int = 0) -> TransferResult:
    """Score zero delta (recipient), transfer and random delta on identical held-out items and
    write the scores and a verdict into both outputs' vadasm_config.json."""
    from vadasm.eval.backends import TransformersBackend
    from vadasm.eval.harness import evaluate

    arms = {"zero_delta": result.recipient, "transfer": result.output, "random_delta": result.control}
    report = evaluate([(arm, lambda p=path: TransformersBackend(p)) for arm, path in arms.items()],
                      list(tasks), split=split, limit=limit, seed=seed)
    result.scores = [{"arm": s.model, "task": s.task, "metric": s.metric, "value": s.value, "n": s.n}
                     for s in report.scores]
    result.verdict = verdict(result.scores)
    for folder in (result.output, result.control):
        payload = json.loads(Path(folder, "vadasm_config.json").read_text())
        payload["result"] = result.to_dict()
        Path(folder, "vadasm_config.json").write_text(json.dumps(payload, indent=2) + "\n")
    return result


def verdict(scores: list[dict]) -> str:
    """'helps' only if the transfer beats both controls on every task (perplexity: lower is better)."""
    lines, wins = [], []
    for task in dict.fromkeys(s["task"] for s in scores):
        by_arm = {s["arm"]: s["value"] for s in scores if s["task"] == task}
        sign = -1 if next(s["metric"] for s in scores if s["task"] == task) == "perplexity" else 1
        won = all(sign * (by_arm["transfer"] - by_arm[c]) > 0 for c in ("zero_delta", "random_delta"))
        wins.append(won)
        lines.append(f"{task}: transfer {by_arm['transfer']:.4g} vs zero delta {by_arm['zero_delta']:.4g}, "
                     f"random delta {by_arm['random_delta']:.4g} -> {'beats' if won else 'does not beat'} controls")
    head = "helps" if wins and all(wins) else "does not help (does not beat the controls on every task)"
    return head + "; " + "; ".join(lines)
