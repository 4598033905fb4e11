"""RAM and RAM+ (tensor-local): Reinforced Agent Merging (https://arxiv.org/abs/2601.13572), as mergekit 0.1.5.

Each model's delta from the base counts at an entry when |delta| > epsilon. Entries changed by
one model only keep that model's delta whole (plain averaging would dilute it by the number of
models); entries changed by several are averaged over the models that changed them. RAM+ also
scales each model's unique entries by 1 + r * clamp(shared / unique, 0, alpha), its count of
shared over unique entries within the tensor. mergekit computes that ratio per tensor ("tensor
local", hence `ramplus_tl`), not over the whole model; we follow mergekit. Only the paper's abstract
and summaries could be read offline: they describe the same split (shared entries averaged, unique
ones kept whole in RAM and rescaled by an overlap-based factor in RAM+); the exact RAM+ factor
(clamp, epsilon floor) is mergekit's and was not checked against the paper's equations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vadasm.methods.registry import MergeMethod, Param, register

EPSILON = Param("epsilon", 1e-5, low=0.0, help="a delta entry counts as changed when its magnitude exceeds this")


def _changed_entries(base: torch.Tensor, tensors: Sequence[torch.Tensor], epsilon: float):
    """Flat deltas [models, entries], which entries each model changed, and how many models changed each."""
    base32 = base.float()
    deltas = torch.stack([t.float() - base32 for t in tensors]).view(len(tensors), -1)
    changed = deltas.abs() > epsilon
    counts = changed.sum(dim=0, keepdim=True)
    return deltas, changed, counts


def ram_merge(base: torch.Tensor, tensors: Sequence[torch.Tensor], epsilon: float = 1e-5) -> torch.Tensor:
    """base + sum of unique deltas + mean of overlapping deltas (over the models that changed the entry)."""
    if not tensors:
        return base.float()
    deltas, changed, counts = _changed_entries(base, tensors, epsilon)
    kept = deltas * changed
    merged = (kept * (counts == 1) + kept * (counts > 1) / counts.clamp(min=1)).sum(dim=0, keepdim=True)
    return base.float() + merged.reshape(base.shape)


def ramplus_tl_merge(base: torch.Tensor, tensors: Sequence[torch.Tensor], r: float = 0.1, alpha: float = 0.2,
                     epsilon: float = 1e-5) -> torch.Tensor:
    """RAM with each model's unique entries scaled by 1 + r * clamp(shared_i / unique_i, 0, alpha)."""
    if not tensors:
        return base.float()
    deltas, changed, counts = _changed_entries(base, tensors, epsilon)
    overlap, unique = counts > 1, counts == 1
    shared_counts = (changed & overlap).sum(dim=1)
    unique_counts = (changed & unique).sum(dim=1)
    rho = shared_counts / unique_counts.clamp(min=epsilon)
    boost = 1 + r * rho.clamp(min=0, max=alpha)
    kept = deltas * changed
    merged = (kept * unique * boost.unsqueeze(-1) + kept * overlap / counts.clamp(min=1)).sum(dim=0, keepdim=True)
    return base.float() + merged.reshape(base.shape)


def _ram(base, tensors, *, epsilon, generator=None):
    return ram_merge(base, tensors, epsilon)


def _ramplus_tl(base, tensors, *, r, alpha, epsilon, generator=None):
    return ramplus_tl_merge(base, tensors, r=r, alpha=alpha, epsilon=epsilon)


register(MergeMethod(
    "ram", _ram, needs_base=True, base_is_input=False, params=(EPSILON,), rows_independent=True,
    reference="https://arxiv.org/abs/2601.13572",
    summary="base + deltas, averaged only where several models changed the same entry"))

register(MergeMethod(
    "ramplus_tl", _ramplus_tl, needs_base=True, base_is_input=False,
    params=(
        Param("r", 0.1, help="strength of the boost of each model's unique entries"),
        Param("alpha", 0.2, help="cap on the shared/unique ratio used in the boost"),
        EPSILON,
    ),
    reference="https://arxiv.org/abs/2601.13572",
    summary="RAM with each model's unique entries boosted by its shared/unique ratio within the tensor"))
