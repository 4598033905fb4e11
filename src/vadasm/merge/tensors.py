"""One output tensor of a merge, from its sources: whole (aligned inputs, re-indexed vocabulary rows,
methods that need all of it) or streamed in row chunks written as soon as they are merged.

`run_merge` (run.py) decides per tensor which path to take; the chunked result is bit-identical to
the whole-tensor one (tests/merge/test_chunked.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from vadasm.align import Alignment
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint, ShardedWriter
from vadasm.io.provenance import tensor_seed
from vadasm.merge.plan import TensorAction
from vadasm.merge.recipe import MergeConfig, resolve_setting
from vadasm.merge.slices import LayerSlice, SliceInput
from vadasm.merge.tokenizer import Vocabulary, vocabulary_rows
from vadasm.merge.two_pass import merge_two_pass
from vadasm.methods.sparsify import magnitude_cuts

# Entries per input in one chunk of a row-wise merge (4 MiB in fp32). Small on purpose: glibc recycles
# blocks this size without returning them to the kernel, while 32 MiB chunks were measured to spend
# over half their CPU time in page faults on fresh memory.
CHUNK_ELEMENTS = 1 << 20
# TIES finds its cuts in two or three passes over |delta|; up to this many entries (all models, 128 MiB
# in fp32) they are kept between passes instead of read and recomputed. Vocabulary-sized matrices stream.
CUT_CACHE_ELEMENTS = 1 << 25


Source = tuple[Checkpoint, str]  # a checkpoint and the name of the tensor read from it


def sources_of(piece: LayerSlice, action: TensorAction, checkpoints: dict[str, Checkpoint]
               ) -> tuple[Source | None, list[Source]]:
    """(base, inputs) of one output tensor: each checkpoint with the name its tensor has there."""
    def source(entry: SliceInput) -> Source:
        return checkpoints[entry.model], action.source_name(entry.model)

    return (source(piece.base) if piece.base else None), [source(entry) for entry in piece.inputs]


def merge_tensor(recipe: MergeConfig, method, action: TensorAction, piece: LayerSlice,
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
    params = method_params(recipe, method, piece, name, action.t)
    generators = tensor_generators(recipe.seed, name, len(inputs), device)
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
    params = method_params(recipe, method, piece, action.name, action.t)
    generators = tensor_generators(recipe.seed, action.name, len(inputs), device)
    base_tensor = remapped[piece.base.model] if piece.base else None
    return method.func(base_tensor, [remapped[entry.model] for entry in piece.inputs], **params,
                       generator=generators).cpu()


def merge_rows(recipe: MergeConfig, method, action: TensorAction, piece: LayerSlice,
               sources: tuple[Source | None, list[Source]], device: str, writer: ShardedWriter,
               out_dtype: torch.dtype) -> None:
    """Merge one tensor in chunks of rows, writing each chunk as soon as it is computed.

    Memory follows the chunk (CHUNK_ELEMENTS entries per input), not the tensor, and each
    checkpoint is read once per chunk even when it is both the base and an input. For TIES the
    per-model magnitude cuts are found first, in streaming passes over the same chunks. The result
    is bit-identical to `_merge_tensor` (tests/merge/test_chunked.py).
    """
    name, shape = action.name, action.shape
    base, inputs = sources
    params = method_params(recipe, method, piece, name, action.t)
    row_size = math.prod(shape[1:])
    step = max(1, CHUNK_ELEMENTS // max(1, row_size))
    ranges = [(start, min(start + step, shape[0])) for start in range(0, shape[0], step)]
    base = base if method.needs_base else None
    distinct = list({(id(ck), name): (ck, name) for ck, name in ([base] if base else []) + inputs}.values())
    columns = tuple(slice(0, s) for s in shape[1:])  # planned truncation of a larger vocabulary
    if _verbatim(method, params, inputs, shape):
        _copy_rows(inputs[0], name, ranges, out_dtype, writer)
        return

    def read(rows: tuple[int, int], check: bool) -> dict[int, torch.Tensor]:
        parts = {}
        for ck, source_name in distinct:
            part = ck.read_rows(source_name, *rows)[(slice(None), *columns)].to(device=device, dtype=torch.float32)
            if check:
                ck.refuse_non_finite(source_name, part)
            parts[(id(ck), source_name)] = part
        return parts

    def key(source: Source) -> tuple[int, str]:
        return id(source[0]), source[1]

    if not method.rows_independent:  # a whole-tensor statistic first, then the rows (two_pass.py)
        def chunk(rows: tuple[int, int], check: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
            parts = read(rows, check)
            return parts[key(base)], [parts[key(s)] for s in inputs]

        merge_two_pass(method, shape, params, tensor_generators(recipe.seed, name, len(inputs), device), chunk,
                       lambda merged: writer.write_rows(name, merged), max(2, torch.get_num_threads()),
                       models=len(inputs))
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
    generators = tensor_generators(recipe.seed, name, len(inputs), device)
    offset = 0
    for parts in _prefetched(ranges, lambda rows: read(rows, check=True)):
        if method.magnitude_pruning:
            extra["offset"] = offset
        merged = method.func(parts[key(base)] if base is not None else None, [parts[key(s)] for s in inputs],
                             **params, generator=generators, **extra)
        writer.write_rows(name, merged)
        offset += merged.numel()


def _verbatim(method, params: dict, inputs: list[Source], shape: tuple[int, ...]) -> bool:
    """A passthrough at scale 1 of a whole tensor: its rows need no fp32 round trip (which would give
    the same bits, at several times the cost; frankenmerges are pure copies)."""
    if method.name != "passthrough" or params["scale"][0] != 1.0:
        return False
    ck, source_name = inputs[0]
    return tuple(ck.shape(source_name)) == tuple(shape)


def _copy_rows(source: Source, name: str, ranges: list[tuple[int, int]], out_dtype: torch.dtype,
               writer: ShardedWriter) -> None:
    """Write a source tensor's rows as read (converted only when the output dtype differs, through fp32
    as the merge path does), refusing NaN/Inf like any merged input."""
    ck, source_name = source

    def read(rows: tuple[int, int]) -> torch.Tensor:
        part = ck.read_rows(source_name, *rows)
        ck.refuse_non_finite(source_name, part)
        return part if part.dtype == out_dtype else part.float()

    for part in _prefetched(ranges, read):
        writer.write_rows(name, part, queue=False)


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


def method_params(recipe: MergeConfig, method, piece: LayerSlice, name: str, t: float) -> dict:
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


def tensor_generators(seed: int, name: str, count: int, device: str) -> list[torch.Generator]:
    """One generator per input model, so each model's random mask is drawn in flat order and
    chunked merges draw exactly the masks whole-tensor merges draw."""
    first = tensor_seed(seed, name)
    return [torch.Generator(device=device).manual_seed((first + i) % 2**63) for i in range(count)]
