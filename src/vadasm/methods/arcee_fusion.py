"""Arcee Fusion: keep the other model's change only where it matters most (mergekit 0.1.5's definition).

Importance of each entry = |other - base| * KL(softmax(other row) || softmax(base row)), the KL
divergence taken along the last dimension (one value per row; one per tensor for vectors). The
change is kept where importance >= median + 1.5 * IQR of all importances (an outlier threshold),
and the base is kept elsewhere. There is no paper (Arcee's blog and mergekit are the reference).
Quantiles are read from the sorted importances at floor(q * (n - 1)), as mergekit does; above one
million entries mergekit samples one million with replacement from torch's global (unseeded)
generator, where we draw them from the merge's seeded per-tensor generator: the same procedure,
so the results agree in distribution, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vadasm.methods.registry import MergeMethod, register

QUANTILE_SAMPLE_SIZE = 1_000_000


def fusion_importance(other: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """|other - base| times the row-wise KL divergence of softmax(other) from softmax(base)."""
    other, base = other.float(), base.float()
    p = F.softmax(other, dim=-1) + 1e-8
    q = F.softmax(base, dim=-1) + 1e-8
    return (other - base).abs() * torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)


def approximate_quantiles(values: torch.Tensor, q: torch.Tensor,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Sorted-order quantiles at floor(q * (n - 1)), over a 1M sample (with replacement) of larger inputs."""
    flat = values.reshape(-1)
    if flat.numel() > QUANTILE_SAMPLE_SIZE:
        flat = flat[torch.randint(flat.numel(), (QUANTILE_SAMPLE_SIZE,), device=flat.device, generator=generator)]
    ordered, _ = torch.sort(flat)
    return ordered[(q.to(ordered.device) * (ordered.numel() - 1)).long()]


def fusion_mask(importance: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """1.0 where importance >= median + 1.5 * (q3 - q1), else 0.0."""
    q1, median, q3 = approximate_quantiles(importance, torch.tensor([0.25, 0.5, 0.75]), generator)
    return (importance >= median + 1.5 * (q3 - q1)).float()


def arcee_fusion(base: torch.Tensor, other: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """base + (other - base) where the change is an importance outlier, else base; fp32."""
    base32, other32 = base.float(), other.float()
    return base32 + (other32 - base32) * fusion_mask(fusion_importance(other32, base32), generator)


def _arcee_fusion(base, tensors, *, generator=None):
    first = generator[0] if isinstance(generator, Sequence) else generator
    return arcee_fusion(base, tensors[0], first)


register(MergeMethod(
    "arcee_fusion", _arcee_fusion, needs_base=True, base_is_input=False, exact_inputs=1,
    reference="https://arcee.ai", summary="keep the other model's changes only where their importance is an outlier"))
