"""Projector surgery as pure tensor math: fold an embedding map, resize the hidden width, low rank.

A LLaVA projector is y = W2 act(W1 x + b1) + b2 with W1: [text, vision], W2: [text, text], and
stock transformers fixes its hidden width to the language model's hidden size. Moving it into
the recipient's space therefore has two parts:
1. fold the affine embedding map f(y) = c (y - mu_in) A + mu_out into W2, b2 (exact);
2. make the hidden width equal the recipient's hidden size: pad with dead units (exact, since
   act(0) = 0 for the activations we accept), or, when the recipient is narrower, keep the most
   important units (approximate; with calibration activations the dropped units are also
   regressed on the kept ones, in closed form). The error of step 2 is measured, not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Projector activations with act(0) == 0, so padded units contribute exactly nothing.
ZERO_PRESERVING_ACTS = frozenset({"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "relu", "silu",
                                  "swish", "gelu_accurate"})


def fold_affine_map(weight: torch.Tensor, bias: torch.Tensor | None, matrix: torch.Tensor, scale: float,
                    mu_in: torch.Tensor, mu_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W', b' with W' h + b' == f(W h + b) for f(y) = scale * (y - mu_in) @ matrix + mu_out."""
    w = weight.double()
    b = bias.double() if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    a = matrix.double()
    new_w = scale * a.T @ w
    new_b = scale * (b - mu_in.double()) @ a + mu_out.double()
    return new_w, new_b


@dataclass
class HiddenResize:
    """What resizing the projector's hidden width did."""

    old_width: int
    new_width: int
    exact: bool
    criterion: str  # "pad", "weights", "activations"
    dropped_weight_share: float  # share of ||W2||_F^2 on the dropped units (0 when padding)


def resize_hidden(w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor, b2: torch.Tensor, width: int,
                  hidden_acts: torch.Tensor | None = None, ridge: float = 1e-4,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, HiddenResize]:
    """Return w1 [width, in], b1 [width], w2 [out, width], b2 [out] for a projector of `width` units.

    Wider: dead units appended (exact). Narrower: units ranked by |W2 column| times their typical
    activation (RMS of `hidden_acts` [n, old_width] when given, else |W1 row| + |b1| as a
    data-free proxy); with activations, dropped units are replaced by their least-squares
    prediction from the kept ones, folded into W2 and b2.
    """
    old = w1.shape[0]
    b1 = b1 if b1 is not None else torch.zeros(old, dtype=w1.dtype)
    if width >= old:
        pad = width - old
        return (torch.cat([w1, w1.new_zeros(pad, w1.shape[1])]), torch.cat([b1, b1.new_zeros(pad)]),
                torch.cat([w2, w2.new_zeros(w2.shape[0], pad)], 1), b2,
                HiddenResize(old, width, True, "pad", 0.0))
    col_norm = w2.double().norm(dim=0)
    if hidden_acts is not None:
        typical = hidden_acts.double().pow(2).mean(0).sqrt()
        criterion = "activations"
    else:
        typical = w1.double().norm(dim=1) + b1.double().abs()
        criterion = "weights"
    order = (col_norm * typical).argsort(descending=True)
    keep, drop = order[:width].sort().values, order[width:].sort().values
    share = float(col_norm[drop].pow(2).sum() / col_norm.pow(2).sum())
    new_w2, new_b2 = w2.double()[:, keep], b2.double().clone()
    if hidden_acts is not None:
        h = hidden_acts.double()
        mean = h.mean(0)
        hk, hd = h[:, keep] - mean[keep], h[:, drop] - mean[drop]
        gram = hk.T @ hk
        lam = ridge * torch.trace(gram) / gram.shape[0] + 1e-12
        coef = torch.linalg.solve(gram + lam * torch.eye(len(keep), dtype=gram.dtype), hk.T @ hd)  # [keep, drop]
        w2_drop = w2.double()[:, drop]
        new_w2 = new_w2 + w2_drop @ coef.T
        new_b2 = new_b2 + w2_drop @ (mean[drop] - coef.T @ mean[keep])
    return w1[keep], b1[keep], new_w2, new_b2, HiddenResize(old, width, False, criterion, share)


@dataclass
class SubspaceReduction:
    """A weight replaced by its best rank-r approximation keeping `variance` of sum(sigma^2)."""

    weight: torch.Tensor  # dense rank-r reconstruction, same shape as the input
    rank: int
    full_rank: int
    variance_kept: float
    dense_parameters: int
    factored_parameters: int  # r * (rows + cols): what the factors U_r S_r, V_r^T would take


def svd_subspace_reduction(weight: torch.Tensor, variance: float = 0.95) -> SubspaceReduction:
    """The seed's `projector_svd_rank`: smallest rank whose singular values hold `variance` of the
    energy, returned as a dense matrix (stock LLaVA layers are dense) with the factored size."""
    if not 0 < variance <= 1:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    w = weight.double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    energy = s.pow(2).cumsum(0) / s.pow(2).sum()
    rank = int((energy < variance - 1e-12).sum().item()) + 1
    rank = min(rank, len(s))
    dense = (u[:, :rank] * s[:rank]) @ vh[:rank]
    rows, cols = weight.shape
    return SubspaceReduction(dense.to(weight.dtype), rank, len(s), float(energy[rank - 1]), rows * cols,
                             rank * (rows + cols))
