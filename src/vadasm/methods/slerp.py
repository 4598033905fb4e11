"""Spherical linear interpolation between two models, tensor by tensor (Shoemake, 1985)."""

from __future__ import annotations

import torch

from vadasm.methods.registry import MergeMethod, Param, register


def slerp(
    t: float, v0: torch.Tensor, v1: torch.Tensor, dot_threshold: float = 0.9995, eps: float = 1e-8
) -> torch.Tensor:
    """Interpolate along the great circle between the directions of v0 and v1 (t=0 gives v0).

    Falls back to linear interpolation when the two are nearly collinear, where the great
    circle is ill-defined. Magnitudes are interpolated with the same coefficients, as mergekit.
    """
    a, b = v0.float(), v1.float()
    norm_a, norm_b = a.norm(), b.norm()
    dot = ((a / norm_a if norm_a > eps else a) * (b / norm_b if norm_b > eps else b)).sum().clamp(-1, 1)
    if dot.abs() > dot_threshold:
        return (1 - t) * a + t * b
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    return (torch.sin((1 - t) * theta) / sin_theta) * a + (torch.sin(t * theta) / sin_theta) * b


def _slerp(base, tensors, *, t, weight=None, generator=None):
    return slerp(t, base, tensors[0])


# mergekit's slerp reads only `t` and silently skips any other key; recipes written for it often
# carry a per-model `weight` (copied from linear ones). We accept it too, and the run notes it is unused.
IGNORED_WEIGHT = Param("weight", 1.0, per_model=True, ignored=True,
                       help="accepted for mergekit recipes; slerp ignores it (t sets the mix)")

register(MergeMethod("slerp", _slerp, needs_base=True, base_is_input=False,
                     params=(Param("t", None, low=0.0, high=1.0, help="0 gives the base, 1 the other model"),
                             IGNORED_WEIGHT),
                     reference="https://en.wikipedia.org/wiki/Slerp", exact_inputs=1,
                     summary="spherical interpolation between the base and one other model"))
