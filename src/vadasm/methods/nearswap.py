"""NearSwap: take the other model's value where it is close to the base, keep the base elsewhere.

From the QuartetAnemoi-70B model card (alchemonaut, https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001),
as mergekit 0.1.5 implements it: per entry, weight = clamp(t / max(|base - other|, 1e-6), 0, 1) and
the result is weight * other + (1 - weight) * base. Entries closer than `t` are swapped whole;
far-apart entries barely move. There is no paper; mergekit is the definition followed here.
"""

from __future__ import annotations

import torch

from vadasm.methods.registry import MergeMethod, Param, register


def nearswap(t: float, base: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Entrywise interpolation towards `other` with weight t / |base - other| (clamped to [0, 1]); fp32."""
    a, b = base.float(), other.float()
    weight = (t / (a - b).abs().clamp(min=1e-6)).clamp(min=0, max=1)
    return weight * b + (1 - weight) * a


def _nearswap(base, tensors, *, t, generator=None):
    return nearswap(t, base, tensors[0])


register(MergeMethod(
    "nearswap", _nearswap, needs_base=True, base_is_input=False, exact_inputs=1, rows_independent=True,
    params=(Param("t", None, help="distance below which the other model's value replaces the base's"),),
    reference="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
    summary="per entry, move the base towards the other model by t / |difference| (swap near values)"))
