"""Merges on the hypersphere: NuSLERP, Multi-SLERP and the Karcher mean (mergekit 0.1.5's definitions).

All three treat a tensor as one point (or, for NuSLERP without flattening, each row as a point),
interpolate its direction on the unit sphere and its length linearly. NuSLERP and Multi-SLERP
take an optional base: with one, they interpolate the deltas from it (task vectors) and add it
back; without, the raw weights. The Karcher mean ignores the base's role and merges it as one
more input, as mergekit does. Math is fp32 (mergekit computes in the inputs' dtype).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vadasm.errors import VadasmError
from vadasm.methods.registry import MergeMethod, Param, register

# mergekit requires a weight per model for nuslerp and multislerp (no default).
_WEIGHT_REQUIRED = Param("weight", None, per_model=True, help="relative share of this model (required)")


def nuslerp(t: float, v0: torch.Tensor, v1: torch.Tensor, dim: int = -1, eps: float = 1e-8,
            flatten: bool = False) -> torch.Tensor:
    """SLERP of v0 towards v1 by `t`, over the whole tensor (`flatten`) or per vector along `dim`.

    mergekit's `nuslerp` helper: vectors are normalised with a 1e-7 floor on the norm, exactly
    collinear (or antipodal) pairs fall back to linear interpolation, and the result keeps the
    interpolated lengths (the spherical coefficients are applied to the unnormalised inputs).
    """
    out_shape = v0.shape
    v0, v1 = v0.float(), v1.float()
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)

    def unit(x: torch.Tensor) -> torch.Tensor:
        return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=1e-7)

    cos_theta = torch.sum(unit(v0) * unit(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos_theta.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos_theta))
    sin_theta = torch.sin(theta)
    result = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / sin_theta
    result = torch.where(colinear, (1 - t) * v0 + t * v1, result)
    if dim != -1 and not flatten:
        result = result.transpose(dim, -1)
    return result.reshape(out_shape)


def nuslerp_merge(base: torch.Tensor | None, tensors: Sequence[torch.Tensor], weight: Sequence[float],
                  row_wise: bool = False, flatten: bool = True) -> torch.Tensor:
    """NuSLERP of two models: t = w1 / (w0 + w1) (0.5 when the weights sum to ~0), around `base` if given.

    `row_wise` interpolates each vector along dim 0 (mergekit's naming: the transpose puts dim 0
    last), otherwise each row; `flatten` (the default) treats the tensor as one vector and wins.
    """
    if len(tensors) != 2 or len(weight) != 2:
        raise ValueError("nuslerp merges exactly two tensors")
    total = sum(weight)
    t = 0.5 if abs(total) < 1e-6 else weight[1] / total
    dim = 0 if row_wise else -1
    if base is None:
        return nuslerp(t, tensors[0], tensors[1], dim=dim, flatten=flatten)
    base32 = base.float()
    return base32 + nuslerp(t, tensors[0].float() - base32, tensors[1].float() - base32, dim=dim, flatten=flatten)


def multislerp(base: torch.Tensor | None, tensors: Sequence[torch.Tensor], weight: Sequence[float],
               normalize_weights: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Barycentric interpolation on the hypersphere (Goddard's Multi-SLERP, as mergekit computes it).

    Unit directions are averaged with the weights, the inputs projected onto the tangent space at
    that mean, averaged there, and mapped back with the exponential map; the length is the
    weighted mean of the inputs' lengths. Two antipodal inputs fall back to linear interpolation.
    Departure from mergekit: weights summing to zero (with `normalize_weights`) are refused
    instead of producing NaN/inf weights.
    """
    if len(tensors) == 1:
        return tensors[0].float()
    stacked = torch.stack([t.float() for t in tensors])
    base32 = base.float() if base is not None else None
    if base32 is not None:
        stacked -= base32
    flat = stacked.view(stacked.shape[0], -1)
    weights = torch.tensor([float(w) for w in weight], dtype=torch.float32, device=flat.device)
    if normalize_weights:
        if weights.sum() == 0:
            raise VadasmError("multislerp: the weights sum to zero, so they cannot be normalised")
        weights = weights / weights.sum()
    norms = torch.norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * weights.view(-1, 1)).sum(0)
    mean_norm = torch.norm(mean)
    if mean_norm < eps:
        if stacked.shape[0] == 2:  # antipodal pair: linear interpolation
            result = (stacked[0] * weights[0] + stacked[1] * weights[1]).view(stacked.shape[1:])
            return result + base32 if base32 is not None else result
        raise VadasmError("multislerp: the weighted mean of the inputs' directions is zero (antipodal inputs "
                          "with balancing weights); use different weights")
    mean = mean / mean_norm
    dots = (units * mean).sum(-1, keepdim=True)
    tangent = ((units - dots * mean) * weights.view(-1, 1)).sum(0)
    tangent_norm = torch.norm(tangent) + eps
    result = mean * torch.cos(tangent_norm) + tangent * (torch.sin(tangent_norm) / tangent_norm)
    result = (result * (norms.squeeze(-1) * weights).sum()).view(stacked.shape[1:])
    return result + base32 if base32 is not None else result


def karcher_mean(tensors: Sequence[torch.Tensor], alphas: Sequence[float], max_iter: int = 10,
                 tol: float = 1e-5) -> torch.Tensor:
    """Weighted Karcher (Riemannian) mean of the tensors' directions, scaled by the weighted mean length.

    mergekit's iteration: start from the normalised weighted mean of the unit directions, then
    up to `max_iter` Riemannian gradient steps (log map, average, exp map), stopping when the
    tangent norm drops below `tol`. Inputs with norm <= `tol` are left out of the direction but
    their (tiny) lengths still count in the scale, as in mergekit. The cited paper
    (arXiv 2603.04972) could not be read offline; this is mergekit's algorithm, step for step.
    """
    tensors = [t.float() for t in tensors]
    if len(tensors) == 1:
        return tensors[0]
    norms = [torch.linalg.vector_norm(t) for t in tensors]
    units = [torch.zeros_like(t) if n.item() == 0.0 else t / n for t, n in zip(tensors, norms)]
    valid = [i for i, n in enumerate(norms) if n.item() > tol]
    if not valid:
        return torch.zeros_like(tensors[0])
    alpha_sum = sum(alphas[i] for i in valid)
    shares = [alphas[i] / alpha_sum for i in valid]
    points = [units[i] for i in valid]

    mean = torch.zeros_like(points[0])
    for share, point in zip(shares, points):
        mean += share * point
    mean_norm = torch.linalg.vector_norm(mean)
    mean = points[0].clone() if mean_norm.item() < tol else mean / mean_norm
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for share, point in zip(shares, points):
            dot = torch.clamp(torch.dot(mean.flatten(), point.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if theta.item() < tol:
                continue
            tangent += share * (theta / torch.sin(theta)) * (point - dot * mean)
        tangent_norm = torch.linalg.vector_norm(tangent)
        if tangent_norm.item() < tol:
            break
        mean = torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)
        unit_norm = torch.linalg.vector_norm(mean)
        if unit_norm.item() > tol:
            mean = mean / unit_norm
    return sum(alpha * norm for alpha, norm in zip(alphas, norms)) * mean


def _required_weights(method: str, weight: Sequence[float | None]) -> list[float]:
    if any(w is None for w in weight):
        raise VadasmError(f"recipe: merge method '{method}' needs a 'weight' for every model "
                          "(in its parameters, or one in the recipe's parameters); mergekit has no default either")
    return list(weight)


def _nuslerp(base, tensors, *, weight, nuslerp_row_wise, nuslerp_flatten, generator=None):
    weight = _required_weights("nuslerp", weight)
    return nuslerp_merge(base, tensors, weight, row_wise=nuslerp_row_wise, flatten=nuslerp_flatten)


def _multislerp(base, tensors, *, weight, normalize_weights, eps, generator=None):
    return multislerp(base, tensors, _required_weights("multislerp", weight), normalize_weights=normalize_weights,
                      eps=eps)


def _karcher(base, tensors, *, max_iter, tol, generator=None):
    return karcher_mean(tensors, [1.0 / len(tensors)] * len(tensors), max_iter=max_iter, tol=tol)


register(MergeMethod(
    "nuslerp", _nuslerp, needs_base=False, base_is_input=False, exact_inputs=2,
    params=(
        _WEIGHT_REQUIRED,
        Param("nuslerp_row_wise", False, kind=bool, help="interpolate each vector along dim 0 instead of each row"),
        Param("nuslerp_flatten", True, kind=bool, help="treat the whole tensor as one vector (wins over row_wise)"),
    ),
    reference="mergekit's NuSLERP (no paper; https://github.com/arcee-ai/mergekit)",
    summary="SLERP of two models with t from their weights; around the base's deltas when a base is given"))

register(MergeMethod(
    "multislerp", _multislerp, needs_base=False, base_is_input=False,
    params=(
        _WEIGHT_REQUIRED,
        Param("normalize_weights", True, kind=bool, help="divide the weights by their sum"),
        Param("eps", 1e-8, low=0.0, help="numerical floor for norms"),
    ),
    reference="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
    summary="barycentric SLERP of any number of models (around the base's deltas when a base is given)"))

register(MergeMethod(
    "karcher", _karcher, needs_base=False, base_is_input=True, base_joins_inputs=True,
    params=(
        Param("max_iter", 10, kind=int, low=0, help="Riemannian gradient steps at most"),
        Param("tol", 1e-5, low=0.0, help="stop when the step is this small; inputs this short are left out"),
    ),
    reference="https://arxiv.org/abs/2603.04972",
    summary="equal-weight Karcher mean on the hypersphere of all models (a base_model counts as one)"))
