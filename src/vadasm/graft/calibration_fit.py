"""Least-squares maps from image features onto the recipient's embeddings of each image's text, in closed form.

Pure tensor math shared by `--projector closed-form` and `--map calibrated`. The data are `features`
[n_items, tokens, d_in] (one row per image token) and `targets` [n_items, d_out] (one vector per image: the
recipient's mean input embedding of its text). Two ways to weigh the tokens:
- pooled: one row per image (its mean token) -> its target; the "closed-form mmproj" recipe;
- per token: every token of an image -> that image's target, i.e. sum_i sum_p |f(h_ip) - t_i|^2. Writing
  h_ip = mean_i + delta_ip, this is the pooled fit plus a penalty on how much f moves with each token's
  deviation from its image's mean, so per-token outputs stay where the pooled ones are (the map is applied
  per token at run time).
Both reduce to one Gram matrix and one cross term (the cross term is the same), so the fit is a single
solve; a subset of inputs (projector units kept for a narrower recipient) is solved from the same matrices.
The result is an `EmbeddingMap` (centred, ridge, then one global rescale so mapped items have the targets'
mean centred norm: the norm calibration of the anchor maps), scored on held-out items beside a control
fitted on shuffled pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vadasm.graft.embedding_maps import EmbeddingMap


@dataclass
class FitStats:
    """The sufficient statistics of the fit: centred input scatter, cross term with the targets, means."""

    gram: torch.Tensor  # [d_in, d_in]
    cross: torch.Tensor  # [d_in, d_out]
    mu_x: torch.Tensor
    mu_y: torch.Tensor
    pooled: torch.Tensor  # [n, d_in] centred mean token of each item (for the norm calibration)
    targets: torch.Tensor  # [n, d_out] centred targets


def fit_stats(features: torch.Tensor, targets: torch.Tensor, per_token: bool, chunk: int = 64) -> FitStats:
    """Gram and cross term of the pooled or per-token fit (fp64; features read `chunk` items at a time)."""
    mu_x = features.double().mean((0, 1))
    mu_y = targets.double().mean(0)
    pooled = features.double().mean(1) - mu_x
    yc = targets.double() - mu_y
    gram = pooled.T @ pooled
    if per_token:
        tokens = features.shape[1]
        for start in range(0, len(features), chunk):
            block = features[start:start + chunk].double()
            delta = (block - block.mean(1, keepdim=True)).reshape(-1, block.shape[-1])
            gram += delta.T @ delta / tokens
    return FitStats(gram, pooled.T @ yc, mu_x, mu_y, pooled, yc)


def solve_map(stats: FitStats, ridge: float, keep: torch.Tensor | None = None, name: str = "calibrated"
              ) -> EmbeddingMap:
    """f(x) = scale (x - mu_x) A + mu_y on the inputs `keep` (all by default), with a relative ridge
    lam = ridge * mean eigenvalue of the Gram matrix (plus a tiny jitter for conditioning)."""
    keep = torch.arange(stats.gram.shape[0]) if keep is None else keep
    gram, cross = stats.gram[keep][:, keep], stats.cross[keep]
    lam = (ridge + 1e-10) * torch.trace(gram) / gram.shape[0] + 1e-30
    matrix = torch.linalg.solve(gram + lam * torch.eye(len(keep), dtype=gram.dtype), cross)
    mapped = (stats.pooled[:, keep] @ matrix).norm(dim=1).mean()
    scale = float(stats.targets.norm(dim=1).mean() / mapped) if mapped > 0 else 0.0
    return EmbeddingMap(name, matrix, stats.mu_x[keep], stats.mu_y, scale)


@dataclass
class FitQuality:
    """How well a map sends items' pooled features onto their targets."""

    relative_residual: float  # sum |f(x_i) - t_i|^2 / sum |t_i - mean t|^2 (1.0: no better than the mean)
    label_hit: float | None  # share of items whose nearest recipient token (cosine) is one of its text's tokens


def fit_quality(fmap: EmbeddingMap, pooled: torch.Tensor, targets: torch.Tensor,
                token_sets: list[set[int]] | None = None, vocab: torch.Tensor | None = None) -> FitQuality:
    """Score `fmap` on items: `pooled` [n, d_in] raw (uncentred) mean features, `targets` [n, d_out]."""
    out = fmap(pooled.double())
    t = targets.double()
    spread = (t - t.mean(0)).pow(2).sum()
    residual = float((out - t).pow(2).sum() / spread) if spread > 0 else float("nan")
    hit = None
    if token_sets is not None and vocab is not None:
        normalize = torch.nn.functional.normalize
        nearest = (normalize(out.float(), dim=1) @ normalize(vocab.float(), dim=1).T).argmax(1).tolist()
        hit = sum(i in s for i, s in zip(nearest, token_sets)) / len(token_sets)
    return FitQuality(round(residual, 5), None if hit is None else round(hit, 4))


@dataclass
class CalibrationFit:
    """What was fitted and how well: recorded in the graft result and vadasm_config.json."""

    mode: str  # "closed-form projector" or "calibrated map"
    source: str
    items: int
    input: str  # what the map reads
    input_width: int
    per_token: bool
    ridge: float
    scale: float
    fit: FitQuality  # the final map (all items) on the items it was fitted on
    heldout_items: int
    heldout: FitQuality  # a map fitted without the held-out items, scored on them
    heldout_control: FitQuality  # the same fit on shuffled (image, text) pairs: what no signal scores
    notes: list[str]


def fit_and_score(features: torch.Tensor, targets: torch.Tensor, ridge: float, per_token: bool, seed: int,
                  token_sets: list[set[int]] | None = None, vocab: torch.Tensor | None = None
                  ) -> tuple[EmbeddingMap, dict[str, FitQuality | int]]:
    """The map fitted on all items, scored on them ("fit"); and a map fitted without a seeded tenth of the
    items scored on that tenth ("heldout"), beside the same fit on shuffled pairs ("heldout_control")."""
    n = len(features)
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    held, fit = perm[: max(1, n // 10)].sort().values, perm[max(1, n // 10):].sort().values
    raw_pooled = features.double().mean(1)

    def score(fmap: EmbeddingMap, idx: torch.Tensor) -> FitQuality:
        sets = [token_sets[i] for i in idx.tolist()] if token_sets is not None else None
        return fit_quality(fmap, raw_pooled[idx], targets[idx], sets, vocab)

    part = solve_map(fit_stats(features[fit], targets[fit], per_token), ridge)
    shuffled = fit[torch.randperm(len(fit), generator=generator)]
    control = solve_map(fit_stats(features[fit], targets[shuffled], per_token), ridge, name="shuffled_pairs")
    final = solve_map(fit_stats(features, targets, per_token), ridge)
    return final, {"fit": score(final, torch.arange(n)), "heldout": score(part, held),
                   "heldout_control": score(control, held), "heldout_items": len(held)}
