"""RegMean (Jin et al., 2023, "Dataless Knowledge Fusion by Merging Weights of Language Models").

A linear layer `y = W x` of each model i was fitted on its own inputs X_i. RegMean picks the one W
that best reproduces every model's outputs on that model's inputs, in closed form:

    W = argmin sum_i w_i ||X_i W^T - X_i W_i^T||^2 = (sum_i w_i G_i)^-1 (sum_i w_i G_i W_i^T), transposed

with G_i = X_i^T X_i the Gram matrix of the layer's inputs. Where the models' inputs live in different
directions (image tokens vs arithmetic prompts) each keeps its own behaviour, which task arithmetic
cannot do. The paper's `alpha` shrinks the off-diagonal Gram entries (alpha = 0 gives a per-input-
feature weighted average; 1 is the exact regression), which keeps the solve well conditioned.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
    columns = weights[0].shape[-1]
    lhs = torch.zeros(columns, columns, dtype=torch.float64)
    rhs = torch.zeros(columns, weights[0].shape[0], dtype=torch.float64)
    for weight, gram, scale in zip(weights, grams, model_weight):
        if weight.ndim != 2 or gram.shape != (columns, columns):
            raise ValueError(f"regmean: weight {tuple(weight.shape)} and Gram {tuple(gram.shape)} do not match")
        term = scale * shrink_gram(gram.double(), alpha)
        lhs += term
        rhs += term @ weight.double().T
    return torch.linalg.solve(lhs, rhs).T.to(weights[0].dtype)
