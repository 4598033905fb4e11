"""Dense <-> MoE tensor math: pure functions, no I/O.

Dense -> MoE: a dense task vector (tuned MLP minus base MLP) is added to every expert, optionally
scaled per expert (by how much the router uses it, or by the expert's norm relative to the dense
MLP). MoE -> dense: the experts are averaged into one dense MLP weight, over all experts or the
top-k the router uses most, either plainly (`uniform`) or rescaled to the experts' mean norm
(`norm_avg`: an average of dissimilar matrices is shorter than any of them, which shrinks the
layer's output; the rescale undoes that shrinkage).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

AGGREGATIONS = ("norm_avg", "uniform")
INJECT_SCALES = ("none", "usage", "norm")


def aggregate_experts(experts: Sequence[torch.Tensor], method: str = "norm_avg",
                      weights: Sequence[float] | None = None) -> torch.Tensor:
    """One dense tensor from same-shaped expert tensors (weighted mean, optionally norm-matched)."""
    if method not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation '{method}' (choose {', '.join(AGGREGATIONS)})")
    stacked = torch.stack([e.float() for e in experts])
    w = torch.ones(len(experts)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("expert weights must be non-negative and not all zero")
    w = w / w.sum()
    mean = torch.einsum("e,e...->...", w, stacked)
    if method == "uniform":
        return mean
    target = float((w * stacked.flatten(1).norm(dim=1)).sum())
    norm = float(mean.norm())
    return mean * (target / norm) if norm > 0 else mean


def top_k_experts(usage: Sequence[float], k: int | None) -> list[int]:
    """The k experts the router picks most often (all experts when k is None), ties by index."""
    order = sorted(range(len(usage)), key=lambda e: (-usage[e], e))
    return sorted(order[:k] if k else order)


def injection_scale(mode: str, expert: torch.Tensor, dense: torch.Tensor, usage_share: float | None = None,
                    num_experts: int = 1) -> float:
    """Multiplier of the dense delta for one expert tensor.

    `none`: 1 (an upcycled MoE whose experts are copies of the dense MLP then computes exactly the
    tuned dense function when its routing weights sum to one). `usage`: usage_share * num_experts
    (mean 1 over experts; rarely routed experts change less). `norm`: ||expert|| / ||dense base||,
    so the delta keeps its size relative to each expert.
    """
    if mode == "none":
        return 1.0
    if mode == "usage":
        if usage_share is None:
            raise ValueError("scale 'usage' needs router usage measured on inputs")
        return usage_share * num_experts
    if mode == "norm":
        norm = float(dense.float().norm())
        return float(expert.float().norm()) / norm if norm > 0 else 1.0
    raise ValueError(f"unknown scale '{mode}' (choose {', '.join(INJECT_SCALES)})")
