"""SVD sigma blending as pure tensor math: no I/O, no printing.

The blend of a weight pair keeps the after model's singular vectors and mixes the spectra:
`W(a) = U diag(a*S_after + (1-a)*S_before) Vh`. Since `U diag(S_after) Vh = W_after`, this is
`W(a) = W_after + (1-a) * U diag(S_before - S_after) Vh`, which is how we compute it:

- one SVD of the after-weight and singular values only of the before-weight serve every alpha;
- alpha 1 returns the after-weight itself (bit for bit), and equal spectra change nothing;
- the rounding error scales with the spectral change, not with |W|, so near-identical models
  (the usual before/after-RL case) are not drowned in reconstruction noise of U S Vh.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Svd:
    """Thin SVD of an m x n matrix: U (m x r), S (r, descending), Vh (r x n), r = min(m, n)."""

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor


def svd_fp32(weight: torch.Tensor) -> Svd:
    """Thin fp32 SVD; a wide matrix is decomposed through its transpose (~4x faster on CPU)."""
    w = weight.to(torch.float32)
    if w.shape[0] < w.shape[1]:
        u, s, vh = torch.linalg.svd(w.T, full_matrices=False)
        return Svd(vh.T.contiguous(), s, u.T.contiguous())
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    return Svd(u, s, vh)


def singular_values_fp32(weight: torch.Tensor) -> torch.Tensor:
    """Singular values only (no vectors: ~1.5x cheaper), same orientation rule as `svd_fp32`."""
    w = weight.to(torch.float32)
    return torch.linalg.svdvals(w.T if w.shape[0] < w.shape[1] else w)


def sigma_shift(svd_after: Svd, s_before: torch.Tensor, rank: int | None = None) -> torch.Tensor | None:
    """`U diag(S_before - S_after) Vh` over the top `rank` singular values (all if None).

    This is `W_before_sigma - W_after`; None when the spectra agree exactly (nothing to blend).
    """
    k = len(svd_after.S) if rank is None else min(rank, len(svd_after.S))
    delta = s_before[:k].to(svd_after.S) - svd_after.S[:k]
    if not torch.any(delta):
        return None
    return (svd_after.U[:, :k] * delta) @ svd_after.Vh[:k]


def blend_weights(
    w_after: torch.Tensor, shift: torch.Tensor | None, alphas: Sequence[float]
) -> Iterator[tuple[float, torch.Tensor]]:
    """Yield `(alpha, W(alpha))` one at a time, so only one blended matrix is alive at once.

    `W(a) = W_after + (1-a) * shift`. Alpha 1 and a zero shift yield `w_after` unchanged (same
    dtype and bits); other alphas are fp32.
    """
    base = None
    for alpha in alphas:
        if alpha == 1.0 or shift is None:
            yield alpha, w_after
            continue
        if base is None:
            base = w_after.to(torch.float32)
        yield alpha, torch.add(base, shift, alpha=1.0 - alpha)


def interpolate_weights(
    w_before: torch.Tensor, w_after: torch.Tensor, alphas: Sequence[float]
) -> Iterator[tuple[float, torch.Tensor]]:
    """Yield `(alpha, a*W_after + (1-a)*W_before)`: the plain linear path, used where no SVD is wanted.

    Alpha 1 yields `w_after` and alpha 0 `w_before` themselves (same dtype and bits); others are fp32.
    """
    for alpha in alphas:
        if alpha == 1.0:
            yield alpha, w_after
        elif alpha == 0.0:
            yield alpha, w_before
        else:
            yield alpha, torch.lerp(w_before.to(torch.float32), w_after.to(torch.float32), alpha)


def blended_spectrum(
    s_after: torch.Tensor, s_before: torch.Tensor, alpha: float, rank: int | None = None
) -> torch.Tensor:
    """The singular values of `W(alpha)`: `a*S_after + (1-a)*S_before` on the top `rank`, S_after below."""
    k = len(s_after) if rank is None else min(rank, len(s_after))
    out = s_after.to(torch.float32).clone()
    out[:k] = alpha * s_after[:k] + (1.0 - alpha) * s_before[:k].to(out)
    return out
