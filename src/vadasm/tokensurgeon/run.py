"""`vadasm tokensurgeon MODEL DONOR OUT`: MODEL's weights with DONOR's tokenizer.

One pass: both tokenizers are read and matched (`vocab.plan_tokens`), the embedding (and an untied
LM head) is rebuilt with DONOR's row order (shared tokens keep MODEL's rows, the others are
predicted by `approximate.predict_rows`), every other tensor is streamed from MODEL unchanged,
and config, generation config and DONOR's tokenizer files are written beside them, atomically.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from vadasm.arch.table import Architecture, architecture_for
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint, PlannedTensor, ShardedWriter, atomic_output_dir, check_output_free
from vadasm.io.model_folder import read_json
from vadasm.io.provenance import provenance_record, write_provenance
from vadasm.options import FORCE_HELP, option
from vadasm.tokensurgeon.approximate import SURGERY_METHODS, predict_rows
from vadasm.tokensurgeon.vocab import TokenPlan, plan_tokens, read_tokenizer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json")
TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")
MIN_SHARED = 16  # below this no map or pursuit is worth trusting


@dataclass
class SurgeryOptions:
    """How to run a token surgery; `vadasm tokensurgeon` derives its flags from these fields."""

    method: str = option("omp", short="-a", help=(
        "How rows of tokens MODEL lacks are predicted: omp (mergekit's default: each new token as a sparse "
        "combination of K shared tokens in DONOR's space, same coefficients on MODEL's rows), lstsq or "
        "procrustes (ours: one anchor-token map DONOR space -> MODEL space, as the graft fits)."))
    k: int = option(64, short="-k", help="Shared tokens per new token for omp (mergekit's -k).")  # mergekit's default
    batch_size: int = option(512, help="New tokens predicted per batch (memory vs speed).")
    force: bool = option(False, help=FORCE_HELP)
    progress: bool = option(True, cli=False, help="Progress bars (the CLI turns them off for --quiet and --json).")


@dataclass
class SurgeryResult:
    output: str
    method: str
    k: int | None
    vocab_rows: int
    shared_tokens: int  # rows copied from MODEL
    predicted_tokens: int
    zero_rows: int
    tied_embeddings: bool
    rebuilt: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def token_surgery(model_ref: str | Path, donor_ref: str | Path, output: str | Path,
                  options: SurgeryOptions | None = None) -> SurgeryResult:
    """Write MODEL with DONOR's vocabulary to `output`; see the module docstring."""
    opts = options or SurgeryOptions()
    if opts.method not in SURGERY_METHODS:
        raise VadasmError(f"unknown token surgery method {opts.method!r} (choose from {', '.join(SURGERY_METHODS)})")
    if opts.k < 1 or opts.batch_size < 1:
        raise VadasmError(f"-k and --batch-size must be at least 1 (got {opts.k} and {opts.batch_size})")
    check_output_free(output, opts.force, [model_ref, donor_ref])
    started = time.perf_counter()
    model, m_arch = _open_text(model_ref, "MODEL")
    donor, d_arch = _open_text(donor_ref, "DONOR")
    try:
        m_embed, d_embed = m_arch.text.spec["embed"][0], d_arch.text.spec["embed"][0]
        d_tok, m_tok = read_tokenizer(donor.path), read_tokenizer(model.path)
        plan = plan_tokens(d_tok, m_tok, donor.shape(d_embed)[0], model.shape(m_embed)[0])
        if opts.method == "omp" and len(plan.copy_out) < max(opts.k, MIN_SHARED):
            raise VadasmError(f"{donor.path}: only {len(plan.copy_out)} tokens shared with {model.path}; "
                              f"omp with -k {opts.k} needs at least {max(opts.k, MIN_SHARED)}")
        if len(plan.copy_out) < MIN_SHARED:
            raise VadasmError(f"{donor.path}: only {len(plan.copy_out)} tokens shared with {model.path}; "
                              f"token surgery needs at least {MIN_SHARED}")
        tied = m_arch.text.spec["lm_head"] not in model
        rebuilt = {m_embed: _rebuild(model.get_checked(m_embed), donor.get_checked(d_embed), plan, opts, "embed")}
        if not tied:
            head = m_arch.text.spec["lm_head"]
            d_head = d_arch.text.spec["lm_head"] if d_arch.text.spec["lm_head"] in donor else d_embed
            rebuilt[head] = _rebuild(model.get_checked(head), donor.get_checked(d_head), plan, opts, "lm_head")
            bias = m_arch.text.spec.get("lm_head_bias")
            if bias and bias in model:
                rebuilt[bias] = _remap_only(model.get_checked(bias), plan)
        result = SurgeryResult(str(Path(output).expanduser().resolve()), opts.method,
                               opts.k if opts.method == "omp" else None, plan.rows, len(plan.copy_out),
                               len(plan.new_out), plan.zero_rows, tied, sorted(rebuilt))
        _write(model, donor, m_arch, Path(output), rebuilt, plan, opts, result, started)
    finally:
        model.close()
        donor.close()
    return result


def _open_text(ref: str | Path, role: str) -> tuple[Checkpoint, Architecture]:
    ck = Checkpoint.open(ref)
    try:
        arch = architecture_for(ck.config, ck.keys(), str(ck.path / "config.json"))
        if arch.has_vision:
            raise VadasmError(f"{ck.path}: token surgery takes text-only models ({role} is {arch.model_type})")
        if arch.text.spec["embed"][0] not in ck:
            raise VadasmError(f"{ck.path}: {role} has no token embedding {arch.text.spec['embed'][0]}")
    except BaseException:
        ck.close()
        raise
    return ck, arch


def _rebuild(model_rows: torch.Tensor, donor_rows: torch.Tensor, plan: TokenPlan, opts: SurgeryOptions,
             what: str) -> torch.Tensor:
    """A [plan.rows, D_model] matrix in MODEL's dtype: copied, predicted and zero rows."""
    out = _remap_only(model_rows, plan)
    shared_donor = donor_rows[plan.copy_out[plan.copy_out < len(donor_rows)]].float()
    shared_model = model_rows[plan.copy_model[plan.copy_out < len(donor_rows)]].float()
    with tqdm(total=len(plan.new_out), desc=f"predicting {what} rows", unit="token",
              disable=not opts.progress or len(plan.new_out) == 0) as bar:
        predicted = predict_rows(opts.method, donor_rows[plan.new_out].float(), shared_donor, shared_model,
                                 k=opts.k, batch_size=opts.batch_size, progress=bar.update)
    if not torch.isfinite(predicted).all():
        raise VadasmError(f"{what}: predicted rows are not finite (degenerate shared-token rows); "
                          "try --method lstsq")
    out[plan.new_out] = predicted.to(out.dtype)
    return out


def _remap_only(tensor: torch.Tensor, plan: TokenPlan) -> torch.Tensor:
    out = tensor.new_zeros((plan.rows, *tensor.shape[1:]))
    out[plan.copy_out] = tensor[plan.copy_model]
    return out


def _write(model: Checkpoint, donor: Checkpoint, arch: Architecture, output: Path, rebuilt: dict,
           plan: TokenPlan, opts: SurgeryOptions, result: SurgeryResult, started: float) -> None:
    plan_items = [PlannedTensor(n, tuple(rebuilt[n].shape) if n in rebuilt else model.shape(n), model.dtype(n))
                  for n in model.keys()]
    with atomic_output_dir(output, opts.force, [model.path, donor.path]) as tmp:
        writer = ShardedWriter(tmp, plan_items)
        for item in tqdm(plan_items, desc="writing", unit="tensor", disable=not opts.progress):
            writer.write(item.name, rebuilt[item.name] if item.name in rebuilt else model.get_checked(item.name))
        writer.close()
        config = _output_config(model.config, donor.config, arch, plan.rows)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        _write_generation_config(model, donor, config, tmp)
        for file in donor.sidecar_files():  # each checked (confined, parsable) when DONOR was opened
            if file.name in TOKENIZER_FILES:
                shutil.copy2(file, tmp / file.name)
        model.verify_unchanged()
        donor.verify_unchanged()
        result.seconds = round(time.perf_counter() - started, 3)
        write_provenance(tmp, provenance_record(
            "tokensurgeon",
            inputs=[{"role": role, "path": str(c.path), "fingerprint": c.fingerprint()}
                    for role, c in (("model", model), ("donor", donor))],
            options={"method": opts.method, "k": opts.k, "batch_size": opts.batch_size},
            result={k: v for k, v in result.to_dict().items() if k not in ("output", "seconds")}))


def _output_config(model_cfg: dict, donor_cfg: dict, arch: Architecture, rows: int) -> dict:
    """MODEL's config with DONOR's vocabulary size and special token ids (as mergekit sets them)."""
    config = json.loads(json.dumps(model_cfg))
    names = arch.text.spec["config"].get("vocab_size") or "vocab_size"
    names = [names] if isinstance(names, str) else names
    config[next((n for n in names if n in config), names[0])] = rows
    for key in TOKEN_ID_KEYS:
        if key in donor_cfg:
            config[key] = donor_cfg[key]
        elif key in config:
            del config[key]  # MODEL's id points at another token now
    return config


def _write_generation_config(model: Checkpoint, donor: Checkpoint, config: dict, folder: Path) -> None:
    """MODEL's generation settings, with token ids taken from DONOR (its generation config first)."""
    source = model.path / "generation_config.json"
    if not source.is_file():
        return
    generation = read_json(model.path, source)
    donor_file = donor.path / "generation_config.json"
    donor_gen = read_json(donor.path, donor_file) if donor_file.is_file() else {}
    if not isinstance(generation, dict) or not isinstance(donor_gen, dict):
        raise VadasmError(f"{source if not isinstance(generation, dict) else donor_file}: not a JSON object")
    for key in (*TOKEN_ID_KEYS, "decoder_start_token_id"):
        value = donor_gen.get(key, config.get(key))
        if value is None:
            generation.pop(key, None)
        else:
            generation[key] = value
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2, sort_keys=True) + "\n")
