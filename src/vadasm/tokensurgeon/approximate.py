"""Rows for tokens MODEL never had, predicted from the donor's rows of those tokens.

Two families, both fitted on the anchor tokens both vocabularies share (pure tensor math):

- `omp` (mergekit-tokensurgeon's default, `-a omp -k 64`): each new token's donor row is written
  as a sparse combination of k shared-token donor rows chosen by orthogonal matching pursuit;
  the same coefficients applied to those tokens' MODEL rows give the new MODEL row. No map
  between the spaces is fitted: every token gets its own k coefficients.
- `lstsq` / `procrustes` (ours, the graft's anchor-token maps in `graft/embedding_maps.py`): one
  affine map donor space -> MODEL space, fitted on all shared rows (least squares, or a rotation),
  with the graft's norm calibration, applied to each new token's donor row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vadasm.graft.embedding_maps import fit_map

SURGERY_METHODS = ("omp", "lstsq", "procrustes")


def omp_combination(targets: torch.Tensor, atoms: torch.Tensor, k: int,
                    eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthogonal matching pursuit of each row of `targets` [B, D] over the rows of `atoms` [N, D].

    As mergekit's `batch_omp`: at each of k steps pick the atom with the largest |inner product|
    with the residual (atoms are not normalised), then refit all chosen coefficients by least
    squares (incremental Gram-Schmidt). Returns (indices [B, k], coefficients [B, k]) with
    targets ~= sum_j coefficients[:, j] * atoms[indices[:, j]]. k is capped at D: D atoms already
    span the space, and more would only divide rounding noise by a vanishing norm.
    """
    batch, dim = targets.shape
    if not 1 <= k <= atoms.shape[0]:
        raise ValueError(f"cannot choose {k} of {atoms.shape[0]} atoms")
    k = min(k, dim)
    y = targets.double()
    atoms32, atoms64 = atoms.float(), atoms.double()
    rows = torch.arange(batch)
    q = torch.zeros(batch, dim, k, dtype=torch.float64)
    r = torch.zeros(batch, k, k, dtype=torch.float64)
    chosen = torch.zeros(batch, k, dtype=torch.long)
    taken = torch.zeros(batch, atoms.shape[0], dtype=torch.bool)
    residual = y.clone()
    for step in range(k):
        score = (residual.float() @ atoms32.T).abs().masked_fill_(taken, -1.0)
        best = score.argmax(1)
        chosen[:, step] = best
        taken[rows, best] = True
        atom = atoms64[best]  # [B, D]
        proj = torch.einsum("bdt,bd->bt", q[:, :, :step], atom)
        orth = atom - torch.einsum("bdt,bt->bd", q[:, :, :step], proj)
        norm = orth.norm(dim=1).clamp_min(eps)
        r[:, :step, step] = proj
        r[:, step, step] = norm
        q[:, :, step] = orth / norm[:, None]
        basis = q[:, :, :step + 1]
        residual = y - torch.einsum("bdt,bt->bd", basis, torch.einsum("bdt,bd->bt", basis, y))
    coef = torch.linalg.solve_triangular(r, torch.einsum("bdt,bd->bt", q, y)[:, :, None], upper=True)[:, :, 0]
    return chosen, coef


def predict_rows(method: str, donor_new: torch.Tensor, donor_shared: torch.Tensor, model_shared: torch.Tensor,
                 *, k: int = 64, batch_size: int = 512,
                 progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """MODEL-space rows [B, D_model] (fp32) for the new tokens' donor rows `donor_new` [B, D_donor].

    `donor_shared[i]` and `model_shared[i]` are the same shared token's rows in each space.
    `progress(n)` is told each time n more rows are done.
    """
    if method not in SURGERY_METHODS:
        raise ValueError(f"unknown token surgery method {method!r} (choose from {', '.join(SURGERY_METHODS)})")
    out = torch.empty(len(donor_new), model_shared.shape[1], dtype=torch.float32)
    fmap = None if method == "omp" else fit_map(donor_shared, model_shared, method)
    model64 = model_shared.double()
    for start in range(0, len(donor_new), batch_size):
        block = donor_new[start:start + batch_size]
        if fmap is None:
            idx, coef = omp_combination(block, donor_shared, k)
            out[start:start + len(block)] = torch.einsum("bk,bkd->bd", coef, model64[idx]).float()
        else:
            out[start:start + len(block)] = fmap(block).float()
        if progress is not None:
            progress(len(block))
    return out


def retrieval_top1(predicted: torch.Tensor, vocab: torch.Tensor, truth: torch.Tensor, chunk: int = 1024) -> float:
    """Share of predicted rows whose nearest row of `vocab` (cosine) is their own token `truth`."""
    normalize = torch.nn.functional.normalize
    vocab_n = normalize(vocab.float(), dim=1)
    hits = 0
    for start in range(0, len(predicted), chunk):
        nearest = (normalize(predicted[start:start + chunk].float(), dim=1) @ vocab_n.T).argmax(1)
        hits += int((nearest == truth[start:start + chunk]).sum())
    return hits / max(1, len(predicted))
