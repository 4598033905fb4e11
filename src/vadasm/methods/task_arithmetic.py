"""Task-vector merges: task arithmetic, TIES, DARE, DELLA, Model Breadcrumbs (linear and TIES forms).

All are one computation (as in mergekit's generalized task arithmetic): take each model's
delta from the base, optionally prune it (magnitude for TIES, random for DARE, magnitude-ranked
random for DELLA, outliers and small entries for breadcrumbs; see sparsify.py), weight it,
optionally keep only entries agreeing with the elected sign, sum, optionally normalise by the
weights that contributed, scale by lambda, add back to the base.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vadasm.errors import VadasmError
from vadasm.methods.registry import DENSITY, INT8_MASK, LAMBDA, WEIGHT, MergeMethod, Param, register
from vadasm.methods.sparsify import (
    DellaMask,
    MagnitudeCut,
    apply_cut,
    apply_della_mask,
    della_prune,
    magnitude_outliers_prune,
    magnitude_prune,
    random_prune,
)


def sign_consensus_mask(weighted_deltas: torch.Tensor, method: str = "sum") -> torch.Tensor:
    """TIES' sign election over stacked deltas [models, ...]: `sum` elects the sign with the most
    total mass, `count` the sign of most models; ties go to +. Returns where each model agrees
    (sign(delta) == elected sign; zeros never agree). Boolean temporaries only: no float copy of
    the stack, which bounds the memory of whole-tensor merges."""
    positive, negative = weighted_deltas > 0, weighted_deltas < 0
    if method == "sum":
        elected_plus = weighted_deltas.sum(dim=0) >= 0
    elif method == "count":
        elected_plus = positive.sum(dim=0, dtype=torch.int32) >= negative.sum(dim=0, dtype=torch.int32)
    else:
        raise ValueError(f"unknown consensus method '{method}'")
    return torch.where(elected_plus, positive, negative)


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
    epsilon: Sequence[float] | None = None,
    gamma: Sequence[float] | None = None,
    della_masks: Sequence[DellaMask | None] | None = None,
) -> torch.Tensor:
    """base + lambda * combine(prune(t_i - base) * w_i), computed in fp32 (see module docstring).

    Every step but magnitude pruning is elementwise, so the inputs may be consecutive rows of
    larger tensors: pass the per-model `cuts` found over the whole tensors (`magnitude_cuts`),
    `offset` (flat index of the rows' first entry) and one `generator` per model (each draws its
    DARE mask in flat order); the result is then bit-identical to merging the whole tensors.
    `pruning="della"` (per-model `epsilon`) and `"outliers"` (breadcrumbs, per-model `gamma`) need
    whole tensors; for them `rescale` restores each delta's L1 norm, as mergekit does. DELLA also
    runs on rows when given each model's mask for them and its rescale factor (`della_masks`, drawn
    over the whole tensor first; None: that model is not pruned).
    """
    if not tensors:
        return base
    base32 = base.float()
    density = density if density is not None else [1.0] * len(tensors)
    generators = generator if isinstance(generator, Sequence) else [generator] * len(tensors)
    stacked = torch.empty((len(tensors), *base32.shape), dtype=torch.float32, device=base32.device)
    for i, (tensor, dens) in enumerate(zip(tensors, density)):  # written in place: no second copy of all deltas
        row = stacked[i]
        delta = torch.sub(tensor.float(), base32, out=row)
        if pruning == "magnitude":
            delta = apply_cut(delta, cuts[i], offset) if cuts is not None else magnitude_prune(delta, dens)
        elif pruning == "random":
            delta = random_prune(delta, dens, rescale, generators[i])
        elif pruning == "della" and della_masks is not None:
            delta = apply_della_mask(delta, della_masks[i]) if della_masks[i] is not None else delta
        elif pruning == "della":
            delta = della_prune(delta, dens, epsilon[i], rescale, generators[i])
        elif pruning == "outliers":
            delta = magnitude_outliers_prune(delta, dens, gamma[i], rescale)
        if delta is not row:
            row.copy_(delta)
        del delta, row
    weights = torch.tensor(list(weight), dtype=torch.float32, device=base.device).reshape(-1, *([1] * base.dim()))
    stacked.mul_(weights)
    if consensus:
        mask = sign_consensus_mask(stacked, consensus)
        mixed = stacked.mul_(mask).sum(dim=0)
        divisor = stacked.copy_(mask).mul_(weights).sum(dim=0)  # = (weights * mask).sum(0), in the stack's memory
        del mask
        divisor[divisor == 0] = 1
    else:
        mixed = stacked.sum(dim=0)
        divisor = weights.sum(dim=0)  # one value, broadcast
        divisor[divisor.abs() < 1e-8] = 1
    del stacked
    if normalize:
        mixed /= divisor
    if lambda_ != 1:
        mixed *= lambda_
    return mixed.add_(base32)


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


EPSILON = Param("epsilon", 0.15, per_model=True, low=0.0, high=1.0, high_open=True,
                help="DELLA: keep probability runs from density - epsilon to density + epsilon by magnitude rank")
GAMMA = Param("gamma", 0.01, per_model=True, low=0.0, high=1.0,
              help="breadcrumbs: fraction of the largest |delta| dropped as outliers")


def _check_della(method: str, density: Sequence[float], epsilon: Sequence[float]) -> None:
    """mergekit refuses keep probabilities outside (0, 1); say which values, in one line."""
    for d, e in zip(density, epsilon):
        if d < 1 and (d + e >= 1 or d - e <= 0):
            raise VadasmError(f"recipe: {method} needs density +/- epsilon inside (0, 1), got density {d:g}, "
                              f"epsilon {e:g} (use epsilon < {min(d, 1 - d):g})")


def _variant(name: str, pruning: str | None, consensus: str | None, normalize: bool, reference: str,
             summary: str, rescale: bool | None = None, extra: tuple[Param, ...] = ()) -> None:
    def merge(base, tensors, *, weight, density, normalize, rescale, generator=None, int8_mask=False,
              cuts=None, offset=0, **kw):
        if pruning == "della":
            _check_della(name, density, kw["epsilon"])
        return generalized_task_arithmetic(
            base, tensors, weight=weight, density=density, pruning=pruning, consensus=consensus,
            normalize=normalize, lambda_=kw["lambda"], rescale=rescale, generator=generator,
            cuts=cuts, offset=offset, epsilon=kw.get("epsilon"), gamma=kw.get("gamma"),
            della_masks=kw.get("della_masks"),
        )

    params = (
        WEIGHT, DENSITY,
        Param("normalize", normalize, kind=bool, help="divide by the sum of the weights that contributed"),
        LAMBDA,
        Param("rescale", pruning == "random" if rescale is None else rescale, kind=bool,
              help="DARE: divide survivors by density; DELLA, breadcrumbs: restore each delta's L1 norm"),
        INT8_MASK, *extra,
    )
    register(MergeMethod(name, merge, needs_base=True, base_is_input=False, params=params, reference=reference,
                         rows_independent=pruning in (None, "magnitude", "random"),
                         magnitude_pruning=pruning == "magnitude", summary=summary))


_variant("task_arithmetic", None, None, False, "https://arxiv.org/abs/2212.04089",
         "base + weighted sum of the models' deltas from the base")
_variant("ties", "magnitude", "sum", True, "https://arxiv.org/abs/2306.01708",
         "task arithmetic with magnitude pruning and sign election")
_variant("dare_linear", "random", None, False, "https://arxiv.org/abs/2311.03099",
         "task arithmetic with random drop-and-rescale of each delta")
_variant("dare_ties", "random", "sum", False, "https://arxiv.org/abs/2311.03099",
         "DARE pruning with TIES' sign election")
_variant("della", "della", "sum", True, "https://arxiv.org/abs/2406.11617",
         "DELLA: magnitude-ranked random drop, L1 rescale, TIES' sign election", rescale=True, extra=(EPSILON,))
_variant("della_linear", "della", None, False, "https://arxiv.org/abs/2406.11617",
         "DELLA's magnitude-ranked random drop, then task arithmetic", rescale=True, extra=(EPSILON,))
_variant("breadcrumbs", "outliers", None, False, "https://arxiv.org/abs/2312.06795",
         "Model Breadcrumbs: drop the largest (gamma) and smallest deltas, then task arithmetic", extra=(GAMMA,))
_variant("breadcrumbs_ties", "outliers", "sum", False, "https://arxiv.org/abs/2312.06795",
         "Model Breadcrumbs' mask with TIES' sign election", extra=(GAMMA,))
