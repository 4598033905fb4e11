"""Streamed merges for methods that need a whole-tensor statistic: Model Stock (the angle between
the models' offsets from the base) and DELLA (each pruned delta's L1 rescale factor).

Two passes over the chunks of whole leading rows that the whole-tensor functions walk
(`model_stock.row_chunks`, `sparsify.della_row_chunks`): the first gathers the statistic (Model
Stock's Gram of the offsets; DELLA's masks, drawn in flat order, and L1 norms), the second merges
each chunk and writes it. Memory follows the chunk (DELLA keeps its masks, one byte per entry per
model) instead of every input whole in fp32, except that a tensor under `KEEP_BYTES` keeps its chunks
from the first pass for the second instead of reading them again. Reads, the bf16 -> fp32 conversion and the first
pass's per-chunk work (the Gram's matrix products; DELLA's per-row ranking sorts, most of its
time) run on worker threads ahead of the in-order consumer: two by default, so a sort-bound DELLA
keeps both cores of a small machine busy, or `--threads` many. Results are bit-identical to the
whole-tensor functions (tests/merge/test_two_pass.py): same chunks, deterministic steps.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from vadasm.methods.model_stock import (
    CHUNK_ELEMENTS,
    cosine_from_gram,
    merge_grams,
    model_stock_ratio,
    offset_gram,
    row_chunks,
)
from vadasm.methods.sparsify import (
    DellaMask,
    della_draw,
    della_keep_probabilities,
    della_row_chunks,
    della_rows,
    della_scale,
)

# A tensor whose fp32 rows (base + inputs) fit here is read once and its chunks kept between the passes
# (every layer weight of a 1B-8B model); larger ones (embeddings, LM heads) are read twice, so memory
# stays bounded. Reading and converting the rows again was most of a second pass's time at 1B.
KEEP_BYTES = 1 << 30
Chunk = tuple[torch.Tensor, list[torch.Tensor]]  # the base's rows and each input's, fp32
Reader = Callable[[tuple[int, int], bool], Chunk]  # rows [start, stop), check for NaN/Inf -> chunk


@dataclass(frozen=True)
class _Plan:
    chunks: Callable[[Sequence[int]], list[slice]]  # the row chunks the whole-tensor function walks
    prepare: Callable[[Chunk, dict], Any]  # per chunk, on a worker thread (pure)
    gather: Callable[[Iterator[Any], dict, Sequence[torch.Generator]], Any]  # in order -> state
    merge_kwargs: Callable[[Any, int], dict]  # extra arguments of the method for chunk `index`


def streams_in_two_passes(method_name: str, shape: Sequence[int]) -> bool:
    """Whether `merge_two_pass` handles this method and tensor (not a 1-D Model Stock tensor longer
    than one chunk: with filter_wise it is one vector, which chunks would split; it is merged whole)."""
    if method_name not in _PLANS or len(shape) == 0:
        return False
    return method_name != "model_stock" or len(shape) >= 2 or math.prod(shape) <= CHUNK_ELEMENTS


def merge_two_pass(method, shape: Sequence[int], params: dict, generators: Sequence[torch.Generator],
                   read: Reader, write: Callable[[torch.Tensor], None], workers: int = 2, models: int = 2) -> None:
    """Merge one tensor with `method` (model_stock, della, della_linear) in two passes over row chunks,
    writing each merged chunk in order; `read(rows, check)` reads the rows of the base and the `models`
    inputs as fp32. A tensor whose rows fit in `KEEP_BYTES` is read once, its chunks kept for the second
    pass; a larger one is read again."""
    plan = _PLANS[method.name]
    ranges = [(rows.start or 0, shape[0] if rows.stop is None else rows.stop) for rows in plan.chunks(shape)]
    kept: dict[tuple[int, int], Chunk] = {}
    keep = (models + 1) * math.prod(shape) * 4 <= KEEP_BYTES  # the base's and inputs' fp32 rows

    def first(rows: tuple[int, int]) -> Any:
        chunk = read(rows, True)
        if keep:
            kept[rows] = chunk
        return plan.prepare(chunk, params)

    state = plan.gather(_pipelined(ranges, first, workers), params, generators)
    second = ((kept.pop(rows) for rows in ranges) if keep
              else _pipelined(ranges, lambda rows: read(rows, False), workers))
    for index, (base, inputs) in enumerate(second):
        write(method.func(base, inputs, **params, generator=generators, **plan.merge_kwargs(state, index)))


def _pipelined(ranges: list[tuple[int, int]], work: Callable[[tuple[int, int]], Any], workers: int) -> Iterator[Any]:
    """work(rows) for each range, yielded in order, `workers` ranges computed ahead on threads
    (file reads, dtype conversion, sorts and matrix products release the GIL)."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vadasm-two-pass") as pool:
        queued = iter(ranges)
        pending = deque(pool.submit(work, rows) for _, rows in zip(range(workers), queued))
        while pending:
            result = pending.popleft().result()
            following = next(queued, None)
            if following is not None:
                pending.append(pool.submit(work, following))
            yield result


def _stock_gather(grams: Iterator[torch.Tensor], params: dict, generators) -> list[torch.Tensor]:
    """Each chunk's Model Stock ratio: one for the tensor, or its chunk's vectors' with filter_wise."""
    grams = list(grams)
    filter_wise = params["filter_wise"]
    ratio = model_stock_ratio(cosine_from_gram(merge_grams(grams, filter_wise)), grams[0].shape[-1])
    return list(ratio.split([g.shape[0] for g in grams])) if filter_wise else [ratio.reshape(())] * len(grams)


def _della_prepare(chunk: Chunk, params: dict) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """Each model's delta rows and keep probabilities for one chunk (None: density >= 1, nothing
    pruned; density <= 0 is refused by the method before the second pass writes anything)."""
    base, inputs = chunk
    out = []
    for tensor, density, epsilon in zip(inputs, params["density"], params["epsilon"]):
        if not 0 < density < 1:
            out.append(None)
            continue
        rows = della_rows(tensor - base)
        out.append((rows, della_keep_probabilities(rows, density, epsilon)))
    return out


def _della_gather(prepared: Iterator[list], params: dict, generators: Sequence[torch.Generator]
                  ) -> list[list[DellaMask | None]]:
    """Per chunk, per model: the mask drawn in flat order from that model's generator, with the
    rescale factor from the L1 norms of the whole tensor (as `della_prune`)."""
    keeps: list[list[torch.Tensor | None]] = []
    sums = [[0.0, 0.0] for _ in params["density"]]
    for chunk in prepared:
        row = []
        for i, entry in enumerate(chunk):
            if entry is None:
                row.append(None)
                continue
            keep, before, after = della_draw(*entry, generators[i])
            sums[i][0] += before
            sums[i][1] += after
            row.append(keep)
        keeps.append(row)
    scales = [della_scale(*total) if params["rescale"] else None for total in sums]
    return [[None if keep is None else DellaMask(keep, scale) for keep, scale in zip(row, scales)] for row in keeps]


_STOCK = _Plan(row_chunks, lambda chunk, params: offset_gram(*chunk, params["filter_wise"]), _stock_gather,
               lambda state, index: {"ratio": state[index]})
_DELLA = _Plan(della_row_chunks, _della_prepare, _della_gather, lambda state, index: {"della_masks": state[index]})
_PLANS = {"model_stock": _STOCK, "della": _DELLA, "della_linear": _DELLA}
