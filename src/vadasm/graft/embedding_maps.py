"""Closed-form maps between two models' token-embedding spaces, fitted on shared anchor tokens.

A projector trained for the donor emits vectors in the donor's *input* embedding space. To feed
the recipient we need f: donor space -> recipient space. Tokens whose decoded strings are
identical in both vocabularies are pairs (x_i, y_i) of the same meaning in both spaces; we fit
f(x) = c * (x - mu_x) @ A + mu_y on them (centring, then one global rescale `c` so mapped vectors
have the recipient's mean centred norm: norm calibration) with three solvers:

- lstsq: least squares (ridge with a relative penalty when asked; SPEC §8: penalties shrink
  outputs and cost retrieval, so the default is 0 plus a tiny jitter for conditioning);
- procrustes: the (semi-)orthogonal A closest to the cross-covariance, i.e. a pure rotation;
- omp: a sparse A, each recipient dimension regressed on k donor dimensions chosen greedily by
  orthogonal matching pursuit. Linear, so it folds into the projector like the others.

Embeddings are compared as the language model sees them: Gemma multiplies token embeddings by
sqrt(hidden) in its forward pass (SPEC §8), so "effective" embeddings include that scale.
Everything here is pure tensor math; quality is measured on held-out anchors against controls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MAP_METHODS = ("lstsq", "procrustes", "omp")
CONTROLS = ("random_map", "shuffled_anchors", "mean_vector")

# Families whose embedding layer multiplies by sqrt(hidden_size) before the first layer.
_SQRT_HIDDEN_SCALED = frozenset({"gemma", "gemma2", "gemma3_text", "gemma3", "gemma3n_text"})


def embed_scale(model_type: str, hidden_size: int) -> float:
    """Factor between stored token embeddings and what the first layer receives."""
    return math.sqrt(hidden_size) if model_type in _SQRT_HIDDEN_SCALED else 1.0


def shared_anchors(donor_strings: list[str], recipient_strings: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (donor_id, recipient_id) of tokens with identical, unambiguous decoded strings.

    Strings that decode from several ids in either vocabulary (byte fallbacks, '\\ufffd') and
    empty strings carry no single meaning and are left out. Pairs are ordered by recipient id.
    """

    def unique(strings: list[str]) -> dict[str, int]:
        seen: dict[str, int] = {}
        dup = set()
        for i, s in enumerate(strings):
            if not s or "\ufffd" in s:
                continue
            if s in seen:
                dup.add(s)
            seen[s] = i
        return {s: i for s, i in seen.items() if s not in dup}

    donor, recipient = unique(donor_strings), unique(recipient_strings)
    pairs = sorted((recipient[s], donor[s]) for s in donor.keys() & recipient.keys())
    return (torch.tensor([d for _, d in pairs], dtype=torch.long),
            torch.tensor([r for r, _ in pairs], dtype=torch.long))


@dataclass
class EmbeddingMap:
    """f(x) = scale * (x - mu_in) @ matrix + mu_out, from donor space (d_in) to recipient (d_out)."""

    method: str
    matrix: torch.Tensor  # [d_in, d_out]
    mu_in: torch.Tensor
    mu_out: torch.Tensor
    scale: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x.to(self.matrix.dtype) - self.mu_in) @ self.matrix + self.mu_out

    def as_linear(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [d_out, d_in], bias [d_out]) of a linear layer computing f, for a projector to store."""
        return self.scale * self.matrix.T, self.mu_out - self.scale * self.mu_in @ self.matrix


def fit_map(x: torch.Tensor, y: torch.Tensor, method: str, *, ridge: float = 0.0, omp_k: int = 64) -> EmbeddingMap:
    """Fit f with `method` on paired rows of x [n, d_in] and y [n, d_out] (fp64 internally)."""
    x64, y64 = x.double(), y.double()
    mu_x, mu_y = x64.mean(0), y64.mean(0)
    xc, yc = x64 - mu_x, y64 - mu_y
    if method == "lstsq":
        matrix = _ridge(xc, yc, ridge)
    elif method == "procrustes":
        u, _, vh = torch.linalg.svd(xc.T @ yc, full_matrices=False)
        matrix = u @ vh
    elif method == "omp":
        matrix = _omp(xc, yc, omp_k)
    else:
        raise ValueError(f"unknown map method {method!r} (choose from {', '.join(MAP_METHODS)})")
    return _calibrated(method, matrix, xc, yc, mu_x, mu_y)


def control_map(x: torch.Tensor, y: torch.Tensor, control: str, generator: torch.Generator) -> EmbeddingMap:
    """Maps that should carry no meaning, scored beside the real ones:
    `random_map` (Gaussian A, calibrated like the others), `shuffled_anchors` (least squares on
    randomly re-paired anchors) and `mean_vector` (every input goes to the recipient's mean)."""
    x64, y64 = x.double(), y.double()
    mu_x, mu_y = x64.mean(0), y64.mean(0)
    xc, yc = x64 - mu_x, y64 - mu_y
    if control == "random_map":
        matrix = torch.randn(x.shape[1], y.shape[1], generator=generator, dtype=torch.float64)
    elif control == "shuffled_anchors":
        perm = torch.randperm(len(y), generator=generator)
        matrix = _ridge(xc, yc[perm], 0.0)
    elif control == "mean_vector":
        return EmbeddingMap(control, torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64), mu_x, mu_y, 0.0)
    else:
        raise ValueError(f"unknown control {control!r} (choose from {', '.join(CONTROLS)})")
    return _calibrated(control, matrix, xc, yc, mu_x, mu_y)


def _calibrated(method: str, matrix: torch.Tensor, xc: torch.Tensor, yc: torch.Tensor,
                mu_x: torch.Tensor, mu_y: torch.Tensor) -> EmbeddingMap:
    """One global rescale so mapped anchors have the recipient anchors' mean centred norm."""
    mapped = (xc @ matrix).norm(dim=1).mean()
    scale = float(yc.norm(dim=1).mean() / mapped) if mapped > 0 else 0.0
    return EmbeddingMap(method, matrix, mu_x, mu_y, scale)


def _ridge(xc: torch.Tensor, yc: torch.Tensor, ridge: float) -> torch.Tensor:
    """argmin |xc A - yc|^2 + lam |A|^2 with lam = (ridge + 1e-8) * mean eigenvalue of xc^T xc."""
    gram = xc.T @ xc
    lam = (ridge + 1e-8) * torch.trace(gram) / gram.shape[0]
    return torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), xc.T @ yc)


def _omp(xc: torch.Tensor, yc: torch.Tensor, k: int) -> torch.Tensor:
    """Orthogonal matching pursuit for every output column at once, in Gram form."""
    gram = xc.T @ xc  # [d_in, d_in]
    cross = (xc.T @ yc).T  # [d_out, d_in]: correlation of each output column with each input
    d_out, d_in = cross.shape
    k = min(k, d_in)
    rows = torch.arange(d_out)
    chosen = torch.empty(d_out, 0, dtype=torch.long)
    taken = torch.zeros(d_out, d_in, dtype=torch.bool)
    residual = cross.clone()
    jitter = 1e-10 * torch.trace(gram) / d_in
    coef = torch.empty(d_out, 0, dtype=gram.dtype)
    for step in range(k):
        best = residual.abs().masked_fill(taken, -1).argmax(1)
        chosen = torch.cat([chosen, best[:, None]], 1)
        taken[rows, best] = True
        g_ss = gram[chosen[:, :, None], chosen[:, None, :]] + jitter * torch.eye(step + 1, dtype=gram.dtype)
        coef = torch.linalg.solve(g_ss, cross.gather(1, chosen))
        residual = cross - torch.einsum("ot,otd->od", coef, gram[chosen])
    matrix = torch.zeros(d_in, d_out, dtype=gram.dtype)
    matrix[chosen, rows[:, None].expand_as(chosen)] = coef
    return matrix


@dataclass
class MapQuality:
    """How well a map sends held-out donor anchors onto their own recipient tokens."""

    method: str
    top1: float  # nearest recipient token (cosine, whole vocabulary) is the anchor's own token
    top10: float
    cosine: float  # mean cosine between mapped vector and true embedding, both centred on the recipient mean
    heldout: int


def retrieval_quality(fmap: EmbeddingMap, x_held: torch.Tensor, target_ids: torch.Tensor,
                      vocab: torch.Tensor, chunk: int = 256) -> MapQuality:
    """Top-1/top-10 retrieval of `target_ids` among all rows of `vocab` (recipient effective
    embeddings), by cosine similarity, plus the mean centred cosine to the true target (raw cosines
    are dominated by the shared mean: the mean-vector control alone scores ~0.5 on them)."""
    normalize = torch.nn.functional.normalize
    vocab_n = normalize(vocab.float(), dim=1)
    mu = fmap.mu_out.float()
    hits1 = hits10 = 0
    cosines = []
    for start in range(0, len(x_held), chunk):
        raw = fmap(x_held[start:start + chunk]).float()
        ids = target_ids[start:start + chunk]
        top = (normalize(raw, dim=1) @ vocab_n.T).topk(10, dim=1).indices
        hits1 += (top[:, 0] == ids).sum().item()
        hits10 += (top == ids[:, None]).any(1).sum().item()
        cosines.append((normalize(raw - mu, dim=1) * normalize(vocab[ids].float() - mu, dim=1)).sum(1))
    n = len(x_held)
    return MapQuality(fmap.method, hits1 / n, hits10 / n, torch.cat(cosines).mean().item(), n)


def split_anchors(n: int, heldout: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of anchor positions into (fit, held-out)."""
    perm = torch.randperm(n, generator=generator)
    heldout = min(heldout, n // 5)
    return perm[heldout:].sort().values, perm[:heldout].sort().values
