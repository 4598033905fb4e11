"""Pruning of task vectors, kept apart from how the pruned deltas are combined."""

from __future__ import annotations

import torch


def magnitude_prune(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `density` fraction of entries with the largest |delta| (TIES' trim step).

    At least one entry survives when density > 0. Uses `topk` (a partial selection), not a full
    sort, which is what makes TIES fast on large matrices.
    """
    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * delta.numel()))
    flat = delta.reshape(-1)
    keep = torch.topk(flat.abs(), k, sorted=False).indices
    mask = torch.zeros_like(flat)
    mask[keep] = 1
    return (flat * mask).reshape(delta.shape)


def random_prune(
    delta: torch.Tensor, density: float, rescale: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """DARE: drop each entry with probability 1 - density; with `rescale`, divide survivors by
    density so the expected value of every entry is unchanged (Yu et al., 2023)."""
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    keep = torch.rand(delta.shape, generator=generator, device=delta.device) < density
    pruned = delta * keep
    return pruned / density if rescale else pruned
