"""Run a merge: load recipe -> plan tensors -> for each tensor read, merge, write -> provenance.

One plain loop; follow any weight from the YAML to disk by reading `run_merge` top to bottom.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from vadasm.align import Alignment, align_checkpoints
from vadasm.arch import Architecture, architecture_for
from vadasm.errors import VadasmError
from vadasm.io import (
    DEFAULT_SHARD_SIZE,
    Checkpoint,
    InputWatch,
    PlannedTensor,
    ShardedWriter,
    atomic_output_dir,
    check_output_free,
    parse_dtype,
    parse_size,
    resolve_model_path,
)
from vadasm.io.provenance import provenance_record, tensor_seed, write_provenance
from vadasm.merge.calibration import prepare_grams
from vadasm.merge.lora import LoraCheckpoint, split_reference
from vadasm.merge.plan import TensorAction, layer_contents, plan_tensors
from vadasm.merge.recipe import MergeConfig, resolve_setting
from vadasm.merge.sidecars import (
    input_record,
    prepare_chat_template,
    prepare_vocabulary,
    write_config,
    write_mergekit_config,
    write_tokenizer,
)
from vadasm.merge.slices import (
    LayerSlice,
    SliceInput,
    check_layer_structure,
    is_identity,
    output_config,
    resolve_slices,
)
from vadasm.merge.tokenizer import Vocabulary, vocabulary_rows
from vadasm.merge.two_pass import merge_two_pass, streams_in_two_passes
from vadasm.methods import get_method
from vadasm.methods.registry import ignored_settings
from vadasm.methods.sparsify import magnitude_cuts
from vadasm.options import (
    ALLOW_PICKLE_HELP,
    DEVICE_HELP,
    FORCE_HELP,
    SHARD_SIZE_HELP,
    TRUST_REMOTE_CODE_HELP,
    option,
)

# Entries per input in one chunk of a row-wise merge (4 MiB in fp32). Small on purpose: glibc recycles
# blocks this size without returning them to the kernel, while 32 MiB chunks were measured to spend
# over half their CPU time in page faults on fresh memory.
CHUNK_ELEMENTS = 1 << 20
# TIES finds its cuts in two or three passes over |delta|; up to this many entries (all models, 128 MiB
# in fp32) they are kept between passes instead of read and recomputed. Vocabulary-sized matrices stream.
CUT_CACHE_ELEMENTS = 1 << 25


@dataclass
class MergeResult:
    output: str
    merge_method: str
    architecture: str
    tensors: int
    merged: int
    not_merged: list[TensorAction] = field(default_factory=list)
    seconds: float = 0.0
    alignment: list[dict] | None = None  # per input model, when aligned (vadasm.align reports)
    notes: list[str] = field(default_factory=list)  # e.g. a mergekit parameter the method ignores

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MergeOptions:
    """How to run a recipe (flags that are not part of the recipe itself); `vadasm merge` derives its flags."""

    # output dtype; default: recipe out_dtype/dtype, else each input tensor's dtype
    dtype: str | None = option(None, help="Output dtype (float32, bfloat16, float16). Arithmetic is always fp32.")
    shard_size: str | int = option(DEFAULT_SHARD_SIZE, help=SHARD_SIZE_HELP)
    align: str | None = option(None, help=(
        "Permute each input's MLP neurons and attention heads to match the base (Hungarian weight "
        "matching) before merging: 'weights' or 'activations' (measured on held-out validation text)."))
    # torch threads for the math; the reader thread overlaps I/O with it. 1 by default: merge math is
    # memory-bound, and on shared cores OpenMP's spinning threads were measured to cost 8x more CPU.
    threads: int = option(1, help=(
        "Torch threads for the math (a reader thread overlaps I/O); more pays only on idle cores."))
    device: str = option("cpu", help=DEVICE_HELP)
    force: bool = option(False, help=FORCE_HELP)
    allow_pickle: bool = option(False, help=ALLOW_PICKLE_HELP)
    trust_remote_code: bool = option(False, help=TRUST_REMOTE_CODE_HELP)
    progress: bool = option(True, cli=False, help="Progress bars (the CLI turns them off for --quiet and --json).")


def run_merge(recipe: MergeConfig, output: str | Path, options: MergeOptions | None = None) -> MergeResult:
    """Merge the recipe's models into the folder `output`, one tensor at a time.

    Opens every input lazily, plans each output tensor (merged by the recipe's method, or copied
    from the base with the reason recorded), writes shards into a temporary folder and renames it on
    success, so a failure leaves nothing behind. Refuses bad inputs with a `VadasmError`; returns
    what was merged and what was not (`MergeResult.not_merged`).
    """
    options = options or MergeOptions()
    started = time.perf_counter()
    output = Path(output)
    refs = [part for ref in recipe.referenced_models() for part in split_reference(ref) if part]
    check_output_free(output, options.force, refs)
    method = get_method(recipe.merge_method)
    notes = ignored_settings(method, recipe.model_dump(exclude_none=True))

    checkpoints = _open_all(recipe, options)
    watch = InputWatch(checkpoints.values())  # fingerprints at open (provenance); checked again before the rename
    reference = checkpoints[recipe.base_model or recipe.referenced_models()[0]]
    arch = _common_architecture(reference, list(checkpoints.values()))
    out_dtype_name = options.dtype or recipe.out_dtype or recipe.dtype
    out_dtype = parse_dtype(out_dtype_name) if out_dtype_name else None

    slices = resolve_slices(recipe, checkpoints, arch)
    vocabulary = prepare_vocabulary(recipe, checkpoints, arch, slices)
    actions = plan_tensors(slices, checkpoints, arch, recipe.exclude_norms, vocabulary.rows if vocabulary else None)
    template = prepare_chat_template(recipe, checkpoints, reference, vocabulary)
    notes += vocabulary.notes if vocabulary else []
    if recipe.chat_template == "auto" and template is None:
        notes.append("chat_template: auto found no template among the inputs; none is set (as mergekit)")
    grams = prepare_grams(recipe, method, slices, checkpoints, options.align, options.device, options.progress)
    notes += grams.notes if grams else []
    alignments = {}
    if options.align:
        if not is_identity(slices, checkpoints, arch):
            raise VadasmError("--align works on recipes that keep every layer in place (`models:` or one full "
                              "slice); this recipe's slices move or drop layers")
        inputs = [checkpoints[m.model] for m in slices[0].inputs]
        alignments = align_checkpoints(checkpoints[slices[0].reference.model], inputs, arch, options.align)

    def source_dtype(action: TensorAction) -> torch.dtype:
        ref = slices[action.slice].reference.model
        return checkpoints[ref].dtype(action.source_name(ref))

    plan = [PlannedTensor(a.name, a.shape, out_dtype or source_dtype(a)) for a in actions]
    merged = 0

    threads_before = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    if not is_identity(slices, checkpoints, arch):
        check_layer_structure(layer_contents(actions, arch), reference, arch)
    out_config = output_config(reference.config, slices, checkpoints, arch)
    read = [c.path for c in checkpoints.values()]
    with atomic_output_dir(output, options.force, read) as tmp, _restore_threads(threads_before):
        writer = ShardedWriter(tmp, plan, parse_size(options.shard_size))
        for action in tqdm(actions, desc=f"merge ({method.name})", unit="tensor", disable=not options.progress):
            piece = slices[action.slice]
            if action.action == "copy_base":
                ref = piece.reference.model
                tensor = checkpoints[ref].get_checked(action.source_name(ref))
            else:
                merged += 1
                sources = _sources(piece, action, checkpoints)
                remap = vocabulary if action.action == "remap_vocab_then_merge" else None
                streamed = method.rows_independent or streams_in_two_passes(method.name, action.shape)
                rows_path = streamed and action.shape and math.prod(action.shape) and not alignments
                if rows_path and remap is None:
                    _merge_rows(recipe, method, action, piece, sources, options.device, writer)
                    continue
                data = {"grams": grams.for_tensor(action, piece, arch)} if grams and remap is None else {}
                tensor = _merge_tensor(recipe, method, action, piece, sources, options.device, alignments, remap, data)
            writer.write(action.name, tensor)
        writer.close()
        write_tokenizer(tmp, recipe, checkpoints, reference, vocabulary, template)
        write_config(tmp, out_config, plan, arch, vocabulary)
        write_mergekit_config(tmp, recipe)
        notes += grams.summary() if grams else []
        provenance = provenance_record(
            "merge",
            recipe=recipe.model_dump(exclude_none=True),
            inputs=[input_record(ref, c, watch.fingerprint(c)) for ref, c in checkpoints.items()],
            architecture=arch.model_type,
            not_merged=[asdict(a) for a in actions if a.action != "merge"],
        )
        if notes:
            provenance["notes"] = notes
        if options.align:
            provenance["alignment"] = [a.report.to_dict() for a in alignments.values()]
        if vocabulary is not None:
            provenance["tokenizer"] = {"vocab_size": vocabulary.rows, "notes": vocabulary.notes}
        write_provenance(tmp, provenance)
        from vadasm.card import render_card  # the card reads vadasm_config.json back

        (tmp / "README.md").write_text(render_card(tmp, location=output))
        watch.refuse_changed("merge")  # an input rewritten or replaced meanwhile: nothing written

    return MergeResult(
        output=str(output), merge_method=method.name, architecture=arch.model_type, tensors=len(actions),
        merged=merged, not_merged=[a for a in actions if a.action != "merge"],
        seconds=round(time.perf_counter() - started, 3),
        alignment=[a.report.to_dict() for a in alignments.values()] if options.align else None, notes=notes,
    )


Source = tuple[Checkpoint, str]  # a checkpoint and the name of the tensor read from it


def _sources(piece: LayerSlice, action: TensorAction, checkpoints: dict[str, Checkpoint]
             ) -> tuple[Source | None, list[Source]]:
    """(base, inputs) of one output tensor: each checkpoint with the name its tensor has there."""
    def source(entry: SliceInput) -> Source:
        return checkpoints[entry.model], action.source_name(entry.model)

    return (source(piece.base) if piece.base else None), [source(entry) for entry in piece.inputs]


def _merge_tensor(recipe: MergeConfig, method, action: TensorAction, piece: LayerSlice,
                  sources: tuple[Source | None, list[Source]], device: str,
                  alignments: dict[Path, Alignment] | None = None,
                  vocabulary: Vocabulary | None = None, data: dict | None = None) -> torch.Tensor:
    """Merge one whole tensor (methods that need all of it at once, aligned inputs, or a vocabulary
    tensor whose rows are first re-indexed to the output vocabulary). `data`: what a data-aware
    method is handed for this tensor (RegMean: its inputs' Grams)."""
    name, shape = action.name, action.shape
    base, inputs = sources
    if vocabulary is not None:
        return _merge_vocabulary_tensor(recipe, method, action, piece, sources, device, vocabulary)

    def load(source: Source) -> torch.Tensor:
        ck, source_name = source
        tensor = ck.get_checked(source_name)
        if alignments and ck.path in alignments:
            tensor = alignments[ck.path].apply(source_name, tensor)
        if tuple(tensor.shape) != shape:  # planned truncation of a larger vocabulary
            tensor = tensor[tuple(slice(0, s) for s in shape)]
        return tensor.to(device=device, dtype=torch.float32)

    base_tensor = load(base) if base is not None else None
    tensors = [load(source) for source in inputs]
    params = _method_params(recipe, method, piece, name, action.t)
    generators = _generators(recipe.seed, name, len(inputs), device)
    return method.func(base_tensor, tensors, **params, generator=generators, **(data or {})).cpu()


def _merge_vocabulary_tensor(recipe: MergeConfig, method, action: TensorAction, piece: LayerSlice,
                             sources: tuple[Source | None, list[Source]], device: str,
                             vocabulary: Vocabulary) -> torch.Tensor:
    """Re-index every source's rows to the output vocabulary (mergekit's rule for missing tokens), then merge."""
    base, inputs = sources
    named = dict(zip([entry.model for entry in piece.inputs], inputs))
    if piece.base:
        named[piece.base.model] = base
    raw = {model: ck.get_checked(name).to(device=device, dtype=torch.float32) for model, (ck, name) in named.items()}
    remapped = vocabulary_rows(raw, vocabulary)
    params = _method_params(recipe, method, piece, action.name, action.t)
    generators = _generators(recipe.seed, action.name, len(inputs), device)
    base_tensor = remapped[piece.base.model] if piece.base else None
    return method.func(base_tensor, [remapped[entry.model] for entry in piece.inputs], **params,
                       generator=generators).cpu()


def _merge_rows(recipe: MergeConfig, method, action: TensorAction, piece: LayerSlice,
                sources: tuple[Source | None, list[Source]], device: str, writer: ShardedWriter) -> None:
    """Merge one tensor in chunks of rows, writing each chunk as soon as it is computed.

    Memory follows the chunk (CHUNK_ELEMENTS entries per input), not the tensor, and each
    checkpoint is read once per chunk even when it is both the base and an input. For TIES the
    per-model magnitude cuts are found first, in streaming passes over the same chunks. The result
    is bit-identical to `_merge_tensor` (tests/merge/test_chunked.py).
    """
    name, shape = action.name, action.shape
    base, inputs = sources
    params = _method_params(recipe, method, piece, name, action.t)
    row_size = math.prod(shape[1:])
    step = max(1, CHUNK_ELEMENTS // max(1, row_size))
    ranges = [(start, min(start + step, shape[0])) for start in range(0, shape[0], step)]
    base = base if method.needs_base else None
    distinct = list({(id(ck), name): (ck, name) for ck, name in ([base] if base else []) + inputs}.values())
    columns = tuple(slice(0, s) for s in shape[1:])  # planned truncation of a larger vocabulary

    def read(rows: tuple[int, int], check: bool) -> dict[int, torch.Tensor]:
        parts = {}
        for ck, source_name in distinct:
            part = ck.read_rows(source_name, *rows)[(slice(None), *columns)].to(device=device, dtype=torch.float32)
            if check and not torch.isfinite(part.sum()) and not torch.isfinite(part).all():  # sum: 10x cheaper
                raise VadasmError(f"{ck.files[source_name]}: tensor '{source_name}' contains NaN or Inf values")
            parts[(id(ck), source_name)] = part
        return parts

    def key(source: Source) -> tuple[int, str]:
        return id(source[0]), source[1]

    if not method.rows_independent:  # a whole-tensor statistic first, then the rows (two_pass.py)
        def chunk(rows: tuple[int, int], check: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
            parts = read(rows, check)
            return parts[key(base)], [parts[key(s)] for s in inputs]

        merge_two_pass(method, shape, params, _generators(recipe.seed, name, len(inputs), device), chunk,
                       lambda merged: writer.write_rows(name, merged), max(2, torch.get_num_threads()))
        return
    extra = {}
    if method.magnitude_pruning:
        def abs_deltas():
            for parts in _prefetched(ranges, lambda rows: read(rows, check=False)):
                yield [(parts[key(source)] - parts[key(base)]).abs_() for source in inputs]

        stream = abs_deltas
        if math.prod(shape) * len(inputs) <= CUT_CACHE_ELEMENTS:  # read once, not once per selection pass
            cached = list(abs_deltas())
            stream = lambda: cached  # noqa: E731
        extra["cuts"] = magnitude_cuts(stream, math.prod(shape), params["density"])
    generators = _generators(recipe.seed, name, len(inputs), device)
    offset = 0
    for parts in _prefetched(ranges, lambda rows: read(rows, check=True)):
        if method.magnitude_pruning:
            extra["offset"] = offset
        merged = method.func(parts[key(base)] if base is not None else None, [parts[key(s)] for s in inputs],
                             **params, generator=generators, **extra)
        writer.write_rows(name, merged)
        offset += merged.numel()


def _prefetched(ranges: list[tuple[int, int]], read: Callable[[tuple[int, int]], dict]) -> Iterator[dict]:
    """`read(rows)` for each range in order, the next one read on a thread while the caller computes
    (file reads and dtype conversion release the GIL), so a second core serves I/O, not spin-waits."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vadasm-read") as pool:
        pending = pool.submit(read, ranges[0])
        for following in [*ranges[1:], None]:
            parts = pending.result()
            if following is not None:
                pending = pool.submit(read, following)
            yield parts


@contextmanager
def _restore_threads(count: int) -> Iterator[None]:
    try:
        yield
    finally:
        torch.set_num_threads(count)


def _method_params(recipe: MergeConfig, method, piece: LayerSlice, name: str, t: float) -> dict:
    """The method's parameters for one tensor: per-model lists and global values, gradients resolved.
    Precedence as in mergekit: the source's own value, then the slice's, then the recipe's."""
    shared = {**recipe.parameters, **piece.parameters}
    params = {}
    for key, default in method.model_params.items():
        values = []
        for entry in piece.inputs:
            setting = entry.parameters.get(key, shared.get(key, default))
            values.append(resolve_setting(setting, name, t))
        params[key] = values
    for key, default in method.global_params.items():
        value = resolve_setting(shared.get(key, default), name, t)
        if value is None:
            raise VadasmError(f"recipe: parameter '{key}' is required by '{method.name}' (no value for {name})")
        params[key] = value
    return params


def _generators(seed: int, name: str, count: int, device: str) -> list[torch.Generator]:
    """One generator per input model, so each model's random mask is drawn in flat order and
    chunked merges draw exactly the masks whole-tensor merges draw."""
    first = tensor_seed(seed, name)
    return [torch.Generator(device=device).manual_seed((first + i) % 2**63) for i in range(count)]


def _open_all(recipe: MergeConfig, options: MergeOptions) -> dict[str, Checkpoint]:
    """Every model of the recipe, opened; a `MODEL+LORA` reference reads MODEL with the adapter folded in."""
    opened = {}
    for ref in recipe.referenced_models():
        model, adapter = split_reference(ref)
        checkpoint = Checkpoint.open(model, allow_pickle=options.allow_pickle,
                                     trust_remote_code=options.trust_remote_code)
        opened[ref] = LoraCheckpoint.wrap(checkpoint, resolve_model_path(adapter)) if adapter else checkpoint
    return opened


def _common_architecture(reference: Checkpoint, models: list[Checkpoint]) -> Architecture:
    arch = architecture_for(reference.config, reference.keys(), source=str(reference.path / "config.json"))
    for other in models:
        if other.config["model_type"] != reference.config["model_type"]:
            raise VadasmError(
                f"{other.path / 'config.json'}: model_type '{other.config['model_type']}' differs from "
                f"'{reference.config['model_type']}' ({reference.path}); merge needs one architecture "
                "(use `vadasm graft` across families)"
            )
    return arch
