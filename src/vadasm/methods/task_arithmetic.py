"""Task-vector merges: task arithmetic, TIES, DARE-linear, DARE-TIES.

All four are one computation (as in mergekit's generalized task arithmetic): take each model's
delta from the base, optionally prune it (magnitude for TIES, random for DARE), weight it,
optionally keep only entries agreeing with the elected sign, sum, optionally normalise by the
weights that contributed, scale by lambda, add back to the base.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vadasm.methods.registry import DENSITY, INT8_MASK, LAMBDA, WEIGHT, MergeMethod, Param, register
from vadasm.methods.sparsify import MagnitudeCut, apply_cut, magnitude_prune, random_prune


def sign_consensus_mask(weighted_deltas: torch.Tensor, method: str = "sum") -> torch.Tensor:
    """TIES' sign election over stacked deltas [models, ...]: `sum` elects the sign with the most
    total mass, `count` the sign of most models; ties go to +. Returns where each model agrees."""
    sign = weighted_deltas.sign()
    if method == "sum":
        elected = torch.where(weighted_deltas.sum(dim=0) >= 0, 1.0, -1.0)
    elif method == "count":
        elected = torch.where(sign.sum(dim=0) >= 0, 1.0, -1.0)
    else:
        raise ValueError(f"unknown consensus method '{method}'")
    return sign == elected


def generalized_task_arithmetic(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    density: Sequence[float] | None = None,
    pruning: str | None = None,
    consensus: str | None = None,
    normalize: bool = False,
    lambda_: float = 1.0,
    rescale: bool = True,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    cuts: Sequence[MagnitudeCut | None] | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """base + lambda * combine(prune(t_i - base) * w_i), computed in fp32 (see module docstring).

    Every step but magnitude pruning is elementwise, so the inputs may be consecutive rows of
    larger tensors: pass the per-model `cuts` found over the whole tensors (`magnitude_cuts`),
    `offset` (flat index of the rows' first entry) and one `generator` per model (each draws its
    DARE mask in flat order); the result is then bit-identical to merging the whole tensors.
    """
    if not tensors:
        return base
    base32 = base.float()
    density = density if density is not None else [1.0] * len(tensors)
    generators = generator if isinstance(generator, Sequence) else [generator] * len(tensors)
    deltas = []
    for i, (tensor, dens) in enumerate(zip(tensors, density)):
        delta = tensor.float() - base32
        if pruning == "magnitude":
            delta = apply_cut(delta, cuts[i], offset) if cuts is not None else magnitude_prune(delta, dens)
        elif pruning == "random":
            delta = random_prune(delta, dens, rescale, generators[i])
        deltas.append(delta)
    stacked = torch.stack(deltas)
    del deltas
    weights = torch.tensor(list(weight), dtype=torch.float32, device=base.device).reshape(-1, *([1] * base.dim()))
    stacked.mul_(weights)
    if consensus:
        mask = sign_consensus_mask(stacked, consensus)
        mixed = (stacked * mask).sum(dim=0)
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = stacked.sum(dim=0)
        divisor = weights.sum(dim=0).expand_as(mixed).clone()
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed /= divisor
    if lambda_ != 1:
        mixed *= lambda_
    return base32 + mixed


def ties_merge(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    density: float = 1.0,
    normalize: bool = True,
    lambda_: float = 1.0,
) -> torch.Tensor:
    """TIES-Merging (Yadav et al., 2023): trim each delta to its top-`density` magnitudes, elect a
    sign per entry by total mass, average the agreeing deltas. Works on plain tensors."""
    weights = weights if weights is not None else [1.0] * len(tensors)
    return generalized_task_arithmetic(
        base, tensors, weight=weights, density=[density] * len(tensors), pruning="magnitude",
        consensus="sum", normalize=normalize, lambda_=lambda_,
    )


def dare_merge(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    density: float = 0.5,
    ties: bool = False,
    rescale: bool = True,
    seed: int = 0,
) -> torch.Tensor:
    """DARE (Yu et al., 2023): randomly drop 1 - `density` of each delta, rescale survivors by
    1/density, then add (or TIES-combine with `ties=True`). Seeded, so repeatable."""
    weights = weights if weights is not None else [1.0] * len(tensors)
    return generalized_task_arithmetic(
        base, tensors, weight=weights, density=[density] * len(tensors), pruning="random",
        consensus="sum" if ties else None, rescale=rescale,
        generator=torch.Generator().manual_seed(seed),
    )


def _variant(name: str, pruning: str | None, consensus: str | None, normalize: bool, reference: str,
             summary: str) -> None:
    def merge(base, tensors, *, weight, density, normalize, rescale, generator=None, int8_mask=False,
              cuts=None, offset=0, **kw):
        return generalized_task_arithmetic(
            base, tensors, weight=weight, density=density, pruning=pruning, consensus=consensus,
            normalize=normalize, lambda_=kw["lambda"], rescale=rescale, generator=generator,
            cuts=cuts, offset=offset,
        )

    params = (
        WEIGHT, DENSITY,
        Param("normalize", normalize, kind=bool, help="divide by the sum of the weights that contributed"),
        LAMBDA,
        Param("rescale", pruning == "random", kind=bool, help="DARE: divide survivors by density"),
        INT8_MASK,
    )
    register(MergeMethod(name, merge, needs_base=True, base_is_input=False, params=params, reference=reference,
                         rows_independent=True, magnitude_pruning=pruning == "magnitude", summary=summary))


_variant("task_arithmetic", None, None, False, "https://arxiv.org/abs/2212.04089",
         "base + weighted sum of the models' deltas from the base")
_variant("ties", "magnitude", "sum", True, "https://arxiv.org/abs/2306.01708",
         "task arithmetic with magnitude pruning and sign election")
_variant("dare_linear", "random", None, False, "https://arxiv.org/abs/2311.03099",
         "task arithmetic with random drop-and-rescale of each delta")
_variant("dare_ties", "random", "sum", False, "https://arxiv.org/abs/2311.03099",
         "DARE pruning with TIES' sign election")
