"""How singular subspaces turn between models: pure tensor measures, no I/O.

Definitions (the seed's `R = U_b U_a^T` on full bases composes exactly by construction, so its
"R1 @ R2 = R3" check measured nothing; these measures can fail and therefore mean something):

- principal angles between the top-k left (or right) singular subspaces of two weights,
  computed as atan2(sin, cos) so that identical subspaces give 0 to fp32 precision;
- the rotation a -> b is the orthogonal Procrustes solution `R_ab = argmin_R ||U_a R - U_b||_F`
  over k x k orthogonal R (the polar factor of `U_a^T U_b`). It is well defined despite sign
  flips and reordering of singular vectors;
- composition error `||R_01 @ R_12 - R_02||_F / sqrt(k)`: 0 when the bases only rotate inside
  a shared subspace, up to 2 when composing through the middle model explains nothing;
- spectrum change `||S_b - S_a|| / ||S_a||`;
- a null model replaces each real change `W_b - W_a` by a seeded Gaussian matrix of the same
  Frobenius norm, so every number can be read against "a random change this large".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vadasm.blend.svd import Svd


def _top_k_f64(basis: torch.Tensor, k: int) -> torch.Tensor:
    return basis[:, :k].to(torch.float64)


def principal_angles(basis_a: torch.Tensor, basis_b: torch.Tensor, k: int) -> torch.Tensor:
    """The k principal angles (radians, ascending) between span(basis_a[:, :k]) and span(basis_b[:, :k])."""
    a, b = _top_k_f64(basis_a, k), _top_k_f64(basis_b, k)
    cross = a.T @ b
    cos = torch.linalg.svdvals(cross).clamp(max=1.0)  # descending
    sin = torch.linalg.svdvals(b - a @ cross).flip(0)  # ascending, pairs with descending cos
    return torch.atan2(sin[:k], cos[:k])


def procrustes_rotation(basis_a: torch.Tensor, basis_b: torch.Tensor, k: int) -> torch.Tensor:
    """The k x k orthogonal R minimising ||A R - B||_F for the top-k columns A, B (float64)."""
    a, b = _top_k_f64(basis_a, k), _top_k_f64(basis_b, k)
    p, _, qh = torch.linalg.svd(a.T @ b)
    return p @ qh


def composition_error(r_01: torch.Tensor, r_12: torch.Tensor, r_02: torch.Tensor) -> float:
    """Relative Frobenius error of `R_01 @ R_12` against `R_02` (orthogonal, so ||R_02|| = sqrt(k))."""
    return float(torch.linalg.matrix_norm(r_01 @ r_12 - r_02) / math.sqrt(r_02.shape[0]))


def spectrum_change(s_a: torch.Tensor, s_b: torch.Tensor) -> float:
    """||S_b - S_a|| / ||S_a||."""
    s_a, s_b = s_a.to(torch.float64), s_b.to(torch.float64)
    return float(torch.linalg.vector_norm(s_b - s_a) / torch.linalg.vector_norm(s_a))


def null_step(w_from: torch.Tensor, norm: float, generator: torch.Generator) -> torch.Tensor:
    """`w_from` plus a Gaussian matrix of Frobenius norm `norm` (the null model of one change)."""
    noise = torch.randn(w_from.shape, generator=generator, dtype=torch.float32)
    return w_from.to(torch.float32) + noise * (norm / float(torch.linalg.matrix_norm(noise)))


@dataclass(frozen=True)
class PairMeasure:
    """How weight `a` turned into weight `b` in one chain (indices into the chain)."""

    a: int
    b: int
    angle_left_mean_deg: float
    angle_left_max_deg: float
    angle_right_mean_deg: float
    angle_right_max_deg: float
    spectrum_rel_change: float
    delta_rel_norm: float
    compose_err_left: float | None = None  # for (0, i), i >= 2: R(0,i-1) @ R(i-1,i) against R(0,i)
    compose_err_right: float | None = None


def measure_chain(svds: list[Svd], weights: list[torch.Tensor], k: int) -> list[PairMeasure]:
    """Measures for (0, i) and (i-1, i) over a chain base -> M1 -> M2 ... of same-shape weights."""
    k = min(k, len(svds[0].S))
    lefts = [s.U for s in svds]
    rights = [s.Vh.T for s in svds]
    pairs = [(0, i) for i in range(1, len(svds))] + [(i - 1, i) for i in range(2, len(svds))]
    rot_l = {p: procrustes_rotation(lefts[p[0]], lefts[p[1]], k) for p in pairs}
    rot_r = {p: procrustes_rotation(rights[p[0]], rights[p[1]], k) for p in pairs}
    out = []
    for a, b in pairs:
        left = torch.rad2deg(principal_angles(lefts[a], lefts[b], k))
        right = torch.rad2deg(principal_angles(rights[a], rights[b], k))
        w_a = weights[a].to(torch.float32)
        delta = float(torch.linalg.matrix_norm(weights[b].to(torch.float32) - w_a) / torch.linalg.matrix_norm(w_a))
        comp_l = comp_r = None
        if a == 0 and b >= 2:
            comp_l = composition_error(rot_l[(0, b - 1)], rot_l[(b - 1, b)], rot_l[(0, b)])
            comp_r = composition_error(rot_r[(0, b - 1)], rot_r[(b - 1, b)], rot_r[(0, b)])
        out.append(PairMeasure(
            a, b, float(left.mean()), float(left.max()), float(right.mean()), float(right.max()),
            spectrum_change(svds[a].S, svds[b].S), delta, comp_l, comp_r,
        ))
    return out
