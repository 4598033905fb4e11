"""Pruning of task vectors, kept apart from how the pruned deltas are combined."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MagnitudeCut:
    """Which entries TIES' trim keeps: |d| > value, and of the entries with |d| == value only those
    at flat index < tie_end (the first ones), so exactly k entries survive and ties break the same
    way whether the tensor is processed whole or in row chunks."""

    value: float
    tie_end: int


def magnitude_cuts(
    abs_chunks: Callable[[], Iterable[Sequence[torch.Tensor]]], numel: int, densities: Sequence[float]
) -> list[MagnitudeCut | None]:
    """The exact cut keeping the top-`density` |delta| of each model, from a stream of chunks.

    `abs_chunks()` yields, in flat order, one fp32 |delta| chunk per model, and is called two or
    three times. The k-th largest value is found by radix selection on the fp32 bit patterns
    (monotonic for non-negative floats): a histogram of the upper 16 bits locates its bucket, a
    histogram of the lower 16 bits inside that bucket gives it exactly. This touches each entry a
    few times with `bincount`, never sorts, and needs no more memory than one chunk, which is
    what lets TIES run on vocabulary-sized matrices in bounded memory. None: keep everything.
    """
    ks = [max(1, int(d * numel)) if 0 < d < 1 else None for d in densities]
    active = [i for i, k in enumerate(ks) if k is not None]
    cuts: list[MagnitudeCut | None] = [None if d >= 1 else MagnitudeCut(float("inf"), 0) for d in densities]
    if not active or numel == 0:
        return cuts
    high = dict.fromkeys(active, 0)
    for chunk in abs_chunks():
        for i in active:
            high[i] = high[i] + torch.bincount(_bits(chunk[i]) >> 16, minlength=1 << 15)
    bucket, above = {}, {}
    for i in active:
        bucket[i], above[i] = _select(high[i], ks[i])
    low = dict.fromkeys(active, 0)
    for chunk in abs_chunks():
        for i in active:
            bits = _bits(chunk[i])
            low[i] = low[i] + torch.bincount(bits[(bits >> 16) == bucket[i]] & 0xFFFF, minlength=1 << 16)
    ties: dict[int, int] = {}  # model -> how many entries equal to the cut value are kept
    for i in active:
        digit, greater = _select(low[i], ks[i] - above[i])
        pattern = torch.tensor((bucket[i] << 16) | digit, dtype=torch.int32)
        value = pattern.view(torch.float32).item()
        keep_equal = ks[i] - above[i] - greater
        cuts[i] = MagnitudeCut(value, numel)
        if keep_equal < int(low[i][digit]):
            ties[i] = keep_equal
    if ties:
        seen = dict.fromkeys(ties, 0)
        offset = 0
        for chunk in abs_chunks():
            for i in list(ties):
                equal = (chunk[i].reshape(-1) == cuts[i].value).nonzero().flatten()
                if seen[i] + equal.numel() >= ties[i]:
                    cuts[i] = MagnitudeCut(cuts[i].value, offset + int(equal[ties[i] - seen[i] - 1]) + 1)
                    del ties[i]
                else:
                    seen[i] += equal.numel()
            if not ties:
                break
            offset += chunk[0].numel()
    return cuts


def magnitude_cut(delta: torch.Tensor, density: float) -> MagnitudeCut | None:
    """`magnitude_cuts` for one whole tensor."""
    return magnitude_cuts(lambda: [[delta.abs().float()]], delta.numel(), [density])[0]


def apply_cut(delta: torch.Tensor, cut: MagnitudeCut | None, offset: int = 0) -> torch.Tensor:
    """Zero the entries `cut` drops; `offset` is the flat index of delta's first entry in its tensor."""
    if cut is None:
        return delta
    size = delta.abs()
    keep = size > cut.value
    if cut.tie_end > offset:
        equal = (size == cut.value).reshape(-1)
        equal[cut.tie_end - offset:] = False
        keep |= equal.reshape(keep.shape)
    return delta * keep


def magnitude_prune(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `density` fraction of entries with the largest |delta| (TIES' trim step).

    At least one entry survives when density > 0; among equal magnitudes at the cut, the first
    in flat order are kept. Exact selection without sorting (see `magnitude_cuts`).
    """
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    return apply_cut(delta, magnitude_cut(delta, density))


def random_prune(
    delta: torch.Tensor, density: float, rescale: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """DARE: drop each entry with probability 1 - density; with `rescale`, divide survivors by
    density so the expected value of every entry is unchanged (Yu et al., 2023).

    The mask is drawn in flat order from `generator`, so drawing it for consecutive row chunks of
    a tensor gives the same mask as drawing it for the whole tensor."""
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    keep = torch.rand(delta.shape, generator=generator, device=delta.device) < density
    pruned = delta * keep
    return pruned / density if rescale else pruned


def _bits(values: torch.Tensor) -> torch.Tensor:
    """fp32 bit patterns as int32 (ordered like the values when they are non-negative)."""
    return values.reshape(-1).view(torch.int32)


def _select(histogram: torch.Tensor, k: int) -> tuple[int, int]:
    """The bin holding the k-th largest entry, and how many entries lie in higher bins."""
    from_top = histogram.flip(0).cumsum(0)
    position = int(torch.searchsorted(from_top, k))  # first index where the running count >= k
    index = histogram.numel() - 1 - position
    greater = int(from_top[position - 1]) if position > 0 else 0
    return index, greater
