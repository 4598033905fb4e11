"""SCE merging (FuseChat, Wan et al., 2024, https://arxiv.org/abs/2408.07990), as mergekit 0.1.5 computes it.

Three steps on the models' deltas from the base ("task vectors"):
- Select: keep the `select_topk` fraction of entries where the deltas vary most across models
  (variance over models; k counts only entries of non-zero variance);
- Calculate: one weight per model, its mean squared (selected) delta, normalised to sum to 1
  (uniform when they sum below 1e-6);
- Erase: per entry, drop the deltas whose sign disagrees with the weighted majority (TIES' sign
  election by total mass), and average the rest by their weights.

We follow mergekit's code step by step (it has no per-model `weight`); we did not check each
step against the paper's equations. Ties in the variance ranking keep the first entries in flat
order (mergekit's `topk` leaves them to the sort).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vadasm.methods.registry import INT8_MASK, MergeMethod, Param, register
from vadasm.methods.sparsify import top_k_mask
from vadasm.methods.task_arithmetic import sign_consensus_mask


def sce_select_mask(deltas: torch.Tensor, select_topk: float) -> torch.Tensor:
    """Where the stacked deltas [models, ...] vary most: the top int(select_topk * nonzero) entries
    of their variance over models (population variance), as a bool mask of one delta's shape."""
    if select_topk >= 1:
        return torch.ones(deltas.shape[1:], dtype=torch.bool, device=deltas.device)
    if select_topk <= 0:
        return torch.zeros(deltas.shape[1:], dtype=torch.bool, device=deltas.device)
    variance = torch.var(deltas, dim=0, unbiased=False)
    k = int(int(torch.count_nonzero(variance)) * select_topk)
    return top_k_mask(variance.abs(), k)


def sce_weights(deltas: torch.Tensor) -> torch.Tensor:
    """One weight per model: mean squared delta, normalised to sum 1 (uniform if the sum < 1e-6)."""
    weights = torch.stack([d.square().mean() for d in deltas])
    total = weights.sum().item()
    if abs(total) < 1e-6:
        return torch.full_like(weights, 1 / len(weights))
    return weights / total


def sce_merge(base: torch.Tensor, tensors: Sequence[torch.Tensor], select_topk: float = 1.0) -> torch.Tensor:
    """base + SCE's combination of the deltas (module docstring); fp32."""
    base32 = base.float()
    if not tensors:
        return base32
    deltas = torch.stack([t.float() - base32 for t in tensors])
    if select_topk < 1:
        deltas.mul_(sce_select_mask(deltas, select_topk))
    agree = sign_consensus_mask(deltas, "sum")
    weights = sce_weights(deltas)
    merged = torch.zeros_like(base32)
    total = torch.zeros_like(base32)
    for delta, keep, w in zip(deltas, agree, weights):
        kept_weight = keep * w
        merged.addcmul_(delta, kept_weight)
        total.add_(kept_weight)
    return base32 + merged / total.clamp(min=1e-6)


def _sce(base, tensors, *, select_topk, int8_mask=False, weight=None, generator=None):
    return sce_merge(base, tensors, select_topk)


register(MergeMethod(
    "sce", _sce, needs_base=True, base_is_input=False,
    params=(Param("select_topk", 1.0, low=0.0, high=1.0,
                  help="fraction of entries kept, those whose deltas vary most across the models"), INT8_MASK,
            # mergekit skips keys a method does not declare; recipes often carry a per-model weight
            Param("weight", 1.0, per_model=True, ignored=True,
                  help="accepted for mergekit recipes; sce ignores it (weights come from the deltas)")),
    reference="https://arxiv.org/abs/2408.07990",
    summary="select high-variance entries, weight models by delta energy, erase minority signs",
))
