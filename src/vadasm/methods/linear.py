"""Linear (weighted-average) merge, "model soups" (Wortsman et al., 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vadasm.methods.registry import WEIGHT, MergeMethod, Param, register


def linear_merge(tensors: Sequence[torch.Tensor], weight: Sequence[float], normalize: bool = True) -> torch.Tensor:
    """sum_i w_i * t_i, divided by sum_i w_i when `normalize`; fp32 accumulation."""
    result = torch.zeros(tensors[0].shape, dtype=torch.float32, device=tensors[0].device)
    for tensor, w in zip(tensors, weight):
        result.add_(tensor.float(), alpha=float(w))
    if normalize:
        result.div_(float(sum(weight)))
    return result


def _linear(base, tensors, *, weight, normalize, generator=None):
    return linear_merge(tensors, weight, normalize)


register(MergeMethod("linear", _linear, needs_base=False, base_is_input=True,
                     params=(WEIGHT, Param("normalize", True, kind=bool, help="divide by the sum of the weights")),
                     reference="https://arxiv.org/abs/2203.05482", rows_independent=True,
                     summary="weighted average of the models (model soups)"))
