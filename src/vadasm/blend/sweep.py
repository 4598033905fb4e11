"""`vadasm blend`: a sweep of SVD sigma blends of a before/after model pair in one pass.

The flow for one weight: read after and before -> one SVD of the after-weight (or reuse it from
`vadasm decompose`) and singular values of the before-weight -> `shift = U diag(S_b - S_a) Vh` ->
for each alpha, `W_after + (1-a) * shift` goes straight into that alpha's writer. Every alpha folder
has its own `ShardedWriter`, all inside one atomic output folder, so memory stays a few times the
largest matrix and a failure leaves nothing behind.

As in the seed, every 2-D weight is blended by default, token embeddings and LM head included.
With `include_embeddings=False` those skip the SVD and follow the linear path
`a*W_after + (1-a)*W_before` instead (alpha 0 is the before tensor, alpha 1 the after tensor, bit
for bit), listed in `skipped_keys` as `excluded_embeddings`. Every other tensor that is not
blended is copied from the after model, with the seed's reason.

The folders are byte-identical run to run for the same inputs: no clock time or output path is
written inside them, and the sigma log's header has a fixed order.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from vadasm.blend.decompose import DecompositionStore, is_float_matrix
from vadasm.blend.options import BlendOptions
from vadasm.blend.select import EMBEDDINGS_NOT_SELECTED, TensorRoles, TensorSelector
from vadasm.blend.svd import Svd, blend_weights, interpolate_weights, sigma_shift, singular_values_fp32, svd_fp32
from vadasm.errors import VadasmError
from vadasm.io import (
    Checkpoint,
    PlannedTensor,
    ShardedWriter,
    atomic_output_dir,
    parse_size,
)
from vadasm.io.provenance import provenance_record, set_config_dtype, write_provenance
from vadasm.version import __version__

META_FILE = "svd_blend_meta.json"
SIGMA_LOG = "sigma_logs.safetensors"
SIGMA_SUMMARY = "sigma_logs.json"
SUMMARY_FILE = "blend_summary.json"
EXCLUDED_EMBEDDINGS = "excluded_embeddings"
LINEAR_RULE = "linear: a*W_after + (1-a)*W_before (alpha 0 = before, alpha 1 = after, exactly)"


@dataclass
class BlendResult:
    output: str
    folders: dict[str, str]  # alpha label -> folder
    tensors: int
    blended: int
    skipped: dict[str, int]  # reason -> count
    reused_decompositions: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def alpha_labels(alphas: list[float]) -> list[str]:
    """`alpha_{a:.1f}` as the seed names them; more decimals only where one would collide."""
    if not alphas:
        raise VadasmError("no alphas given")
    if len(set(alphas)) != len(alphas):
        raise VadasmError(f"repeated alpha in {alphas}")
    for decimals in range(1, 7):
        labels = [f"alpha_{a:.{decimals}f}" for a in alphas]
        if len(set(labels)) == len(labels):
            return labels
    raise VadasmError(f"alphas {alphas} are too close to name their folders apart")


def plan_blend(after: Checkpoint, before: Checkpoint, selector: TensorSelector, roles: TensorRoles,
               store: DecompositionStore | None) -> tuple[list[str], list[str], dict[str, str]]:
    """(SVD-blended, linearly interpolated, skipped with reason) after-tensors, from shapes alone.

    The interpolated ones (embeddings left out of the SVD) are listed in `skipped` too, with reason
    `excluded_embeddings`, so that blended + skipped covers every tensor as in the seed's meta.
    """
    blended, interpolated, skipped = [], [], {}
    for name in after.keys():
        shape, dtype = after.shape(name), after.entries[name].dtype
        if name not in before:
            reason = "missing_in_before"
        elif len(shape) != 2:
            reason = "ndim!=2"
        elif before.shape(name) != shape:
            reason = "shape_mismatch"
        elif not is_float_matrix(dtype, shape):
            reason = "not_float"
        else:
            reason = selector.reason_to_skip(name, roles)
        if reason is None and store is not None and name in store and tuple(store.tensors[name]["shape"]) != shape:
            reason = "sigma_mismatch"
        if reason == EMBEDDINGS_NOT_SELECTED:
            interpolated.append(name)
            skipped[name] = EXCLUDED_EMBEDDINGS
        elif reason:
            skipped[name] = reason
        else:
            blended.append(name)
    return blended, interpolated, skipped


def _check_svd(svd: Svd, shape: tuple[int, ...], rank: int | None) -> bool:
    """A stored decomposition fits the weight: U (m x r), S (r), Vh (r x n) with enough singular values."""
    m, n = shape
    r = len(svd.S)
    needed = min(m, n) if rank is None else min(rank, m, n)
    return svd.S.ndim == 1 and r >= needed and tuple(svd.U.shape) == (m, r) and tuple(svd.Vh.shape) == (r, n)


def run_blend(before_ref: str, after_ref: str, output: str | Path, options: BlendOptions) -> BlendResult:
    """Blend the singular values of a before/after pair for every alpha in `options.alphas`.

    One SVD of each after-weight serves all alphas; each alpha becomes a loadable checkpoint
    `output/alpha_{a:.1f}/` with the sigma logs and a summary beside them, written atomically.
    Which weights are blended and what is copied (with reasons) is recorded in svd_blend_meta.json.
    """
    start = time.perf_counter()
    labels = alpha_labels(options.alphas)
    if options.rank is not None and options.rank < 1:
        raise VadasmError(f"--rank must be at least 1 (got {options.rank})")
    opened = dict(allow_pickle=options.allow_pickle, trust_remote_code=options.trust_remote_code)
    after = Checkpoint.open(after_ref, **opened)
    before = Checkpoint.open(before_ref, **opened)
    after_print, before_print = after.fingerprint(), before.fingerprint()
    store = None
    if options.from_decomposition:
        store = DecompositionStore(options.from_decomposition)
        if store.fingerprint != after_print:
            which = "the before model" if store.fingerprint == before_print else store.source
            raise VadasmError(f"{store.folder}: decomposition of {which}, not of the after model {after.path}")
    roles = TensorRoles(after.config, after.keys())
    blended, interpolated, skipped = plan_blend(after, before, options.selector, roles, store)
    plan = [PlannedTensor(n, after.shape(n), _out_dtype(after.dtype(n), options.dtype)) for n in after.keys()]

    sigma_log: dict[str, torch.Tensor] = {}
    sigma_summary: dict[str, dict] = {}
    reused = 0
    blended_set, interpolated_set = set(blended), set(interpolated)
    read = [before, after, options.from_decomposition]  # opened checkpoints are also checked for changes
    with atomic_output_dir(output, options.force, read) as tmp:
        writers = []
        for label in labels:
            (tmp / label).mkdir()
            writers.append(ShardedWriter(tmp / label, plan, parse_size(options.shard_size)))
        for planned in tqdm(plan, desc="blend", unit="tensor", disable=not options.progress):
            name = planned.name
            w_after = after.get_checked(name)
            if name in interpolated_set:
                pairs = interpolate_weights(before.get_checked(name), w_after, options.alphas)
                for writer, (_, w) in zip(writers, pairs, strict=True):
                    writer.write(name, w)
                continue
            spectra = None
            if name in blended_set:
                stored = store.get(name) if store is not None and name in store else None
                if stored is not None and not _check_svd(stored, planned.shape, options.rank):
                    skipped[name] = "sigma_mismatch"
                else:
                    reused += stored is not None
                    spectra = _spectra(w_after, before.get_checked(name), stored, options)
            if spectra is None:  # copied from the after model
                for writer in writers:
                    writer.write(name, w_after)
                continue
            shift, s_before, s_after = spectra
            for writer, (_, w) in zip(writers, blend_weights(w_after.to(options.device), shift, options.alphas),
                                      strict=True):
                writer.write(name, w)
            sigma_log[f"{name}/S_before"] = s_before.cpu().clone()
            sigma_log[f"{name}/S_after"] = s_after.cpu().clone()
            sigma_summary[name] = _sigma_entry(roles, name, planned.shape, s_before.cpu(), s_after.cpu(), options.rank)
        for writer in writers:
            writer.close()
        blended_keys = [n for n in blended if n not in skipped]
        inputs = {
            "before": {"path": str(before.path.resolve()), "fingerprint": before_print},
            "after": {"path": str(after.path.resolve()), "fingerprint": after_print},
        }
        recipe = {
            "rank": options.rank, "include": options.selector.include, "exclude": options.selector.exclude,
            "include_embeddings": options.selector.include_embeddings,
            "excluded_embeddings": None if options.selector.include_embeddings else LINEAR_RULE,
            "dtype": str(options.dtype).removeprefix("torch.") if options.dtype else None,
            "from_decomposition": options.from_decomposition, "architecture_known": roles.known,
        }
        details = {
            "blended_keys": blended_keys,
            "skipped_keys": dict(sorted(skipped.items())),
            "only_in_before": sorted(set(before.keys()) - set(after.keys())),
            "shapes": {n: list(after.shape(n)) for n in after.keys()},
            "sigma_log": f"../{SIGMA_LOG}",
        }
        for label, alpha in zip(labels, options.alphas, strict=True):
            _write_folder_files(after, tmp / label, alpha, inputs, recipe, details, options.dtype)
        # One metadata key: safetensors writes several in a random order (the rank is in the meta).
        save_file(sigma_log, str(tmp / SIGMA_LOG), metadata={"format": "vadasm-sigma-v1"})
        (tmp / SIGMA_SUMMARY).write_text(json.dumps(sigma_summary, indent=2) + "\n")
        counts: dict[str, int] = {}
        for reason in skipped.values():
            counts[reason] = counts.get(reason, 0) + 1
        out = Path(output).expanduser().resolve()
        result = BlendResult(
            output=str(out), folders={label: str(out / label) for label in labels},
            tensors=len(plan), blended=len(blended_keys), skipped=counts, reused_decompositions=reused,
            seconds=round(time.perf_counter() - start, 3),
        )
        (tmp / SUMMARY_FILE).write_text(json.dumps(_summary_file(result, labels), indent=2) + "\n")
    return result


def _summary_file(result: BlendResult, labels: list[str]) -> dict:
    """`blend_summary.json`: the result without clock time or absolute paths, so runs compare equal."""
    summary = {k: v for k, v in result.to_dict().items() if k not in ("output", "seconds")}
    summary["folders"] = {label: label for label in labels}
    return summary


def _spectra(w_after: torch.Tensor, w_before: torch.Tensor, stored: Svd | None, options: BlendOptions
             ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(shift, S_before, S_after) of one weight pair, computed on the chosen device."""
    device = options.device
    if torch.equal(w_before, w_after):  # e.g. a frozen layer: same spectrum, only S is needed for the log
        s = singular_values_fp32(w_after.to(device))
        return None, s, s
    svd = svd_fp32(w_after.to(device)) if stored is None else Svd(
        stored.U.to(device), stored.S.to(device), stored.Vh.to(device))
    s_before = singular_values_fp32(w_before.to(device))
    return sigma_shift(svd, s_before, options.rank), s_before, svd.S


def _write_folder_files(after: Checkpoint, folder: Path, alpha: float, inputs: dict, recipe: dict, details: dict,
                        dtype: torch.dtype | None) -> None:
    """Everything beside the weights: config, tokenizer, svd_blend_meta.json, vadasm_config.json."""
    _copy_sidecars(after, folder, dtype)
    meta = {"alpha": alpha, **inputs, **recipe, **details, "tool": f"vadasm {__version__}"}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    write_provenance(folder, provenance_record(
        "blend", inputs=inputs, recipe={"method": "svd_sigma_blend", "alpha": alpha, **recipe}))


def _out_dtype(dtype: torch.dtype, wanted: torch.dtype | None) -> torch.dtype:
    return wanted if wanted is not None and dtype.is_floating_point else dtype


def _sigma_entry(roles: TensorRoles, name: str, shape: tuple[int, ...], s_before: torch.Tensor,
                 s_after: torch.Tensor, rank: int | None) -> dict:
    layer, kind = roles.layer_and_type(name)
    k = len(s_after) if rank is None else min(rank, len(s_after))
    norm = float(torch.linalg.vector_norm(s_before[:k]))
    change = float(torch.linalg.vector_norm(s_after[:k] - s_before[:k])) / norm if norm else None
    return {"layer": layer, "type": kind, "shape": list(shape), "blended_rank": k,
            "sigma_rel_change": change, "top_sigma_before": float(s_before[0]),
            "top_sigma_after": float(s_after[0])}


def _copy_sidecars(after: Checkpoint, folder: Path, dtype: torch.dtype | None) -> None:
    """config.json (dtype updated if converted) and the tokenizer/generation files of the after model."""
    if dtype is None:
        shutil.copy2(after.path / "config.json", folder / "config.json")
    else:
        config = dict(after.config)
        set_config_dtype(config, dtype)
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for file in after.sidecar_files():
        shutil.copy2(file, folder / file.name)
