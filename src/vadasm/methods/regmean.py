"""RegMean (Jin et al., 2023, "Dataless Knowledge Fusion by Merging Weights of Language Models").

A linear layer `y = W x` of each model i was fitted on its own inputs X_i. RegMean picks the one W
that best reproduces every model's outputs on that model's inputs, in closed form:

    W = argmin sum_i w_i ||X_i W^T - X_i W_i^T||^2 = (sum_i w_i G_i)^-1 (sum_i w_i G_i W_i^T), transposed

with G_i = X_i^T X_i the Gram matrix of the layer's inputs. Where the models' inputs live in different
directions (image tokens vs arithmetic prompts) each keeps its own behaviour, which task arithmetic
cannot do. The paper's `alpha` shrinks the off-diagonal Gram entries (alpha = 0 gives a per-input-
feature weighted average; 1 is the exact regression), which keeps the solve well conditioned.

Registered as `merge_method: regmean` (needs data): each model's Grams come from running it on its
own calibration data (vadasm.merge.calibration); tensors that are not linear layers with Grams are
averaged by weight, as the paper does for everything but linear layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vadasm.errors import VadasmError
from vadasm.methods.linear import linear_merge
from vadasm.methods.registry import MergeMethod, Param, register


def shrink_gram(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * G + (1 - alpha) * diag(G): RegMean's regularisation of the inner-product matrix."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"regmean alpha must lie in [0, 1], not {alpha}")
    return alpha * gram + (1.0 - alpha) * torch.diag(torch.diagonal(gram))


def regmean(weights: Sequence[torch.Tensor], grams: Sequence[torch.Tensor], *,
            model_weight: Sequence[float] | None = None, alpha: float = 0.9) -> torch.Tensor:
    """The RegMean merge of linear weights [out, in], each with the Gram [in, in] of its own inputs.

    `model_weight` scales each model's term of the regression (how much its behaviour counts);
    computed in fp64 and returned in the first weight's dtype.
    """
    if not weights or len(weights) != len(grams):
        raise ValueError("regmean needs one Gram matrix per weight")
    model_weight = model_weight if model_weight is not None else [1.0] * len(weights)
    columns, device = weights[0].shape[-1], weights[0].device
    lhs = torch.zeros(columns, columns, dtype=torch.float64, device=device)
    rhs = torch.zeros(columns, weights[0].shape[0], dtype=torch.float64, device=device)
    for weight, gram, scale in zip(weights, grams, model_weight):
        if weight.ndim != 2 or gram.shape != (columns, columns):
            raise ValueError(f"regmean: weight {tuple(weight.shape)} and Gram {tuple(gram.shape)} do not match")
        term = scale * shrink_gram(gram.to(device=device, dtype=torch.float64), alpha)
        lhs += term
        rhs += term @ weight.double().T
    return torch.linalg.solve(lhs, rhs).T.to(weights[0].dtype)


def regmean_or_average(tensors: Sequence[torch.Tensor], grams: Sequence[torch.Tensor] | None,
                       weight: Sequence[float], alpha: float) -> torch.Tensor:
    """One tensor of a RegMean merge: solved in closed form when each model gave the Gram of its
    inputs (a linear layer), else the weighted average `sum w_i t_i / sum w_i` (norms, biases,
    embeddings, LM head), the paper's choice for everything that is not a linear layer."""
    if grams is None:
        return linear_merge(tensors, weight, normalize=True)
    return regmean([t.float() for t in tensors], grams, model_weight=weight, alpha=alpha).float()


def _regmean(base, tensors, *, weight, alpha, calibration, calibration_samples, grams=None, generator=None):
    # `calibration` and `calibration_samples` are read once per model before the merge
    # (vadasm.merge.calibration), which hands each linear layer's Grams in as `grams`.
    try:
        return regmean_or_average(tensors, grams, weight, alpha)
    except torch.linalg.LinAlgError:
        raise VadasmError("regmean: the models' Gram matrices sum to a singular matrix for a linear layer "
                          f"(alpha {alpha}); lower alpha below 1 or give more calibration data") from None


register(MergeMethod(
    "regmean", _regmean, needs_base=False, base_is_input=True, needs_data=True,
    params=(
        Param("weight", 1.0, per_model=True, low=0.0, low_open=True,
              help="weight of reproducing this model on its own calibration data"),
        # Required, but checked when the merge runs (vadasm.merge.calibration), not as a required Param:
        # `vadasm merge RECIPE OUT --calibration ...` validates the recipe file before adding the flag's value.
        Param("calibration", "", per_model=True, kind=str,
              help="required: this model's calibration data, a JSONL file of {\"text\"[, \"answer\"]} records "
                   "or a built-in task name (its train split)"),
        Param("alpha", 0.9, low=0.0, high=1.0,
              help="scale of the Gram matrices' off-diagonal (0: per-feature average, 1: exact regression)"),
        Param("calibration_samples", 128, kind=int, low=1, help="calibration items read per model"),
    ),
    reference="https://arxiv.org/abs/2212.09849",
    summary="linear layers solved to reproduce each model on its own calibration data (needs data); "
            "other tensors: weighted average",
))
