"""Model Stock (Jang et al., 2024, https://arxiv.org/abs/2403.19522), as mergekit 0.1.5 computes it.

Fine-tunes of one base lie on a thin shell around their centre, so the average of a few of them
is pulled back toward the base by t = N cos / (1 + (N - 1) cos), cos being the angle between the
fine-tunes' offsets from the base: result = t * average + (1 - t) * base.

Where mergekit departs from the paper we follow mergekit: the paper derives t for fine-tunes at
equal angles and measures the angle per layer; mergekit averages the cosine over every pair of
offsets, per whole tensor (or per row of the last dimension with `filter_wise`), clamps each
norm product at 1e-6, clamps cos to [-1, 1], and keeps the base (t = 0) where
|1 + (N - 1) cos| < 1e-6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from vadasm.errors import VadasmError
from vadasm.methods.registry import MergeMethod, Param, register

# Offsets are formed a block of about this many entries per model at a time, so the statistics
# cost a few small buffers instead of one tensor-sized copy per model. Whole tensors are walked in
# chunks of whole leading rows of this size too: the same chunks a streamed (two-pass) merge reads,
# so both give bit-identical results.
CHUNK_ELEMENTS = 1 << 20


def model_stock_ratio(cos: torch.Tensor, count: int) -> torch.Tensor:
    """t = N cos / (1 + (N - 1) cos), and 0 where the denominator is within 1e-6 of 0 (mergekit)."""
    denominator = 1 + (count - 1) * cos
    singular = denominator.abs() < 1e-6
    safe = torch.where(singular, torch.ones_like(denominator), denominator)
    return torch.where(singular, torch.zeros_like(cos), count * cos / safe)


def row_chunks(shape: Sequence[int]) -> list[slice]:
    """Chunks of whole leading rows, about CHUNK_ELEMENTS entries each (one chunk for 0-d/1-d tensors
    of up to CHUNK_ELEMENTS entries)."""
    if len(shape) == 0:
        return [slice(None)]
    step = max(1, CHUNK_ELEMENTS // max(1, math.prod(shape[1:])))
    return [slice(start, min(start + step, shape[0])) for start in range(0, shape[0], step)] or [slice(0, 0)]


def offset_gram(base: torch.Tensor, tensors: Sequence[torch.Tensor], filter_wise: bool = False) -> torch.Tensor:
    """Dot products between the offsets (tensor - base) of one chunk of leading rows, in fp64:
    [1, N, N] for the flat angle, [vectors, N, N] with `filter_wise` (vectors along the last dim).
    Each block of at most CHUNK_ELEMENTS entries per model is one fp32 matrix product."""
    rows = _as_rows(base, filter_wise)
    parts = [_as_rows(t, filter_wise) for t in tensors]
    count, (num_rows, width) = len(parts), rows.shape
    gram = torch.zeros(num_rows, count, count, dtype=torch.float64, device=base.device)
    if not filter_wise or rows.shape[0] == 1:  # one vector: [N, block] @ [block, N]
        flat = rows.reshape(-1)
        offsets = torch.empty(count, min(width, CHUNK_ELEMENTS), dtype=torch.float32, device=base.device)
        for c in range(0, width, CHUNK_ELEMENTS):
            span = slice(c, min(c + CHUNK_ELEMENTS, width))
            block = offsets[:, :span.stop - c]
            for i, part in enumerate(parts):
                torch.sub(part.reshape(-1)[span].float(), flat[span].float(), out=block[i])
            gram[0] += (block @ block.T).double()
        return gram
    row_step = max(1, CHUNK_ELEMENTS // max(1, width))
    col_step = max(1, min(width, CHUNK_ELEMENTS))
    for r in range(0, num_rows, row_step):
        for c in range(0, width, col_step):
            block = (slice(r, r + row_step), slice(c, c + col_step))
            offsets = torch.stack([p[block].float() - rows[block].float() for p in parts], dim=1)  # [rows, N, cols]
            gram[block[0]] += (offsets @ offsets.transpose(1, 2)).double()
    return gram


def merge_grams(grams: Sequence[torch.Tensor], filter_wise: bool) -> torch.Tensor:
    """The whole tensor's Gram from its chunks' (`offset_gram` of each chunk of `row_chunks`):
    summed for one flat angle, concatenated for one angle per vector."""
    return torch.cat(list(grams)) if filter_wise else torch.stack(list(grams)).sum(dim=0)


def cosine_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Mean cosine over all pairs of offsets, per vector of `gram` [vectors, N, N] (mergekit: each
    norm product clamped at 1e-6, each cosine clamped to [-1, 1]); fp32, shape [vectors]."""
    count = gram.shape[-1]
    norms = gram.diagonal(dim1=1, dim2=2).clamp(min=0).sqrt()
    pairs = [(i, j) for i in range(count) for j in range(i + 1, count)]
    cos = torch.stack([(gram[:, i, j] / (norms[:, i] * norms[:, j]).clamp(min=1e-6)).clamp(-1, 1) for i, j in pairs])
    return cos.mean(dim=0).float()


def mean_pairwise_cosine(
    base: torch.Tensor, tensors: Sequence[torch.Tensor], filter_wise: bool = False
) -> torch.Tensor:
    """Mean cosine over all pairs of offsets (tensor - base): one value, or one per vector along the
    last dimension with `filter_wise` (shape [vectors]). Dot products accumulate in fp64 by chunks."""
    if base.dim() == 0:  # one entry: one vector either way
        base, tensors, filter_wise = base.reshape(1), [t.reshape(1) for t in tensors], False
    if filter_wise and base.dim() == 1:  # one vector: its Gram is not split by rows
        cos = cosine_from_gram(offset_gram(base, tensors, True))
    else:
        grams = [offset_gram(base[rows], [t[rows] for t in tensors], filter_wise) for rows in row_chunks(base.shape)]
        cos = cosine_from_gram(merge_grams(grams, filter_wise))
    return cos if filter_wise else cos.reshape(())


def stock_combine(base: torch.Tensor, tensors: Sequence[torch.Tensor], ratio: torch.Tensor,
                  filter_wise: bool = False) -> torch.Tensor:
    """t * mean(tensors) + (1 - t) * base in fp32, `ratio` t: one value, or one per vector of these
    rows with `filter_wise`. Elementwise, so chunks of rows give the whole tensor's entries."""
    out = torch.add(tensors[0].float(), tensors[1].float())
    for tensor in tensors[2:]:
        out.add_(tensor.float())
    out.div_(len(tensors))
    rows, ratio = _as_rows(out, filter_wise), ratio.reshape(-1, 1)
    rows.mul_(ratio).addcmul_(_as_rows(base.float(), filter_wise), 1 - ratio)
    return out


def model_stock(base: torch.Tensor, tensors: Sequence[torch.Tensor], filter_wise: bool = False) -> torch.Tensor:
    """t * mean(tensors) + (1 - t) * base with Model Stock's t (module docstring); fp32 result.

    Needs at least two fine-tunes (the angle between offsets is undefined for one)."""
    if len(tensors) < 2:
        raise ValueError(f"model_stock needs at least two models besides the base, got {len(tensors)}")
    ratio = model_stock_ratio(mean_pairwise_cosine(base, tensors, filter_wise), len(tensors))
    return stock_combine(base, tensors, ratio, filter_wise)


def _as_rows(tensor: torch.Tensor, filter_wise: bool) -> torch.Tensor:
    """A [vectors, width] view: one row (flat) or one row per vector along the last dimension."""
    if not filter_wise or tensor.dim() == 0:
        return tensor.reshape(1, -1)
    return tensor.reshape(-1, tensor.shape[-1])


def _model_stock(base, tensors, *, filter_wise, weight=None, generator=None, ratio=None):
    """`ratio`: t already found over the whole tensor, these being some of its rows (merge/two_pass.py)."""
    if len(tensors) < 2:
        raise VadasmError(f"recipe: model_stock needs at least two models besides the base_model, got {len(tensors)}")
    if ratio is None:
        return model_stock(base, tensors, filter_wise)
    return stock_combine(base, tensors, ratio, filter_wise)


register(MergeMethod(
    "model_stock", _model_stock, needs_base=True, base_is_input=False, min_inputs=2,
    params=(Param("filter_wise", False, kind=bool,
                  help="one angle per vector along the last dimension instead of one per tensor"),
            # mergekit skips keys a method does not declare; recipes often carry a per-model weight
            Param("weight", 1.0, per_model=True, ignored=True,
                  help="accepted for mergekit recipes; model_stock ignores it (the angle sets the mix)")),
    reference="https://arxiv.org/abs/2403.19522",
    summary="moves from the base toward the models' average by a ratio set by the angle between their deltas",
))
