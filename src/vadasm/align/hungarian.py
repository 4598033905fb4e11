"""Weight matching with the Hungarian algorithm: pure tensor functions, no I/O.

Two same-shaped networks can compute the same function with their hidden units in a different
order. Before averaging them, match each unit of one model to a unit of the other
(`linear_sum_assignment` on a similarity matrix) and reorder consistently. In a transformer the
residual stream is shared by all layers, so each MLP's hidden neurons and each attention layer's
heads can be matched independently, layer by layer, without any coordinate descent.
"""

from __future__ import annotations

import torch


def similarity(reference: torch.Tensor, other: torch.Tensor, kind: str = "inner") -> torch.Tensor:
    """[n, n] similarity of unit features (one row per unit).

    `inner`: plain inner products; maximising their sum minimises ||reference - P other||_F, which
    is what a weight average cares about. `correlation`: centred cosine, for activations whose
    scales differ between units.
    """
    a, b = reference.double(), other.double()
    if kind == "correlation":
        a = a - a.mean(dim=1, keepdim=True)
        b = b - b.mean(dim=1, keepdim=True)
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
        b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    elif kind != "inner":
        raise ValueError(f"unknown similarity '{kind}' (inner, correlation)")
    return a @ b.T


def assignment(scores: torch.Tensor) -> tuple[torch.Tensor, float]:
    """perm with perm[i] = the other's unit matched to reference unit i (maximum total score)."""
    from scipy.optimize import linear_sum_assignment  # here: importing it costs every command 0.35 s

    rows, cols = linear_sum_assignment(scores.cpu().numpy(), maximize=True)
    perm = torch.as_tensor(cols[rows.argsort()], dtype=torch.long)
    return perm, float(scores[torch.arange(len(perm)), perm].sum())


def hungarian_neuron_alignment(reference: torch.Tensor, other: torch.Tensor, kind: str = "inner") -> torch.Tensor:
    """Permutation of `other`'s rows (units) that best matches `reference`'s rows.

    Rows are units: for an MLP, concatenate each neuron's gate row, up row and down column.
    `other[perm]` is the aligned matrix. Works on plain tensors (the seed's API name).
    """
    if reference.shape != other.shape:
        raise ValueError(f"shapes differ: {tuple(reference.shape)} vs {tuple(other.shape)}")
    return assignment(similarity(reference.flatten(1), other.flatten(1), kind))[0]


def grouped_head_alignment(ref_q: torch.Tensor, other_q: torch.Tensor, ref_kv: torch.Tensor,
                           other_kv: torch.Tensor, kind: str = "inner") -> tuple[torch.Tensor, torch.Tensor]:
    """Head permutations that respect grouped-query attention.

    `*_q` hold one feature row per query head, `*_kv` one per key/value head; query head h reads
    kv head h // group. A valid reordering permutes kv heads and, inside each group, the query
    heads that follow them. The kv pairing maximises kv similarity plus the best matching of the
    two groups' query heads. Returns (q_perm over query heads, kv_perm over kv heads).
    """
    n_q, n_kv = ref_q.shape[0], ref_kv.shape[0]
    if n_q % n_kv:
        raise ValueError(f"{n_q} query heads do not split into {n_kv} kv groups")
    group = n_q // n_kv
    q_scores = similarity(ref_q.flatten(1), other_q.flatten(1), kind)
    kv_scores = similarity(ref_kv.flatten(1), other_kv.flatten(1), kind)
    inner: dict[tuple[int, int], torch.Tensor] = {}
    pair_scores = kv_scores.clone()
    for a in range(n_kv):
        for b in range(n_kv):
            block = q_scores[a * group:(a + 1) * group, b * group:(b + 1) * group]
            inner[a, b], total = assignment(block)
            pair_scores[a, b] += total
    kv_perm, _ = assignment(pair_scores)
    q_perm = torch.cat([int(b) * group + inner[a, int(b)] for a, b in enumerate(kv_perm)])
    return q_perm, kv_perm


def unit_index(perm: torch.Tensor, unit: int = 1, copies: int = 1, offset: int = 0) -> torch.Tensor:
    """Positions along a tensor axis for a unit permutation.

    Each unit spans `unit` consecutive entries (head_dim for heads); fused tensors repeat the unit
    range `copies` times (GPT-2's c_attn holds q, k, v; Phi-3's gate_up holds gate, up); the range
    starts at `offset`.
    """
    n = len(perm)
    within = (perm[:, None] * unit + torch.arange(unit)).flatten()
    return torch.cat([offset + c * n * unit + within for c in range(copies)])


def unit_features(tensor: torch.Tensor, axis: int, n: int, unit: int = 1, copies: int = 1,
                  offset: int = 0) -> torch.Tensor:
    """[n, features]: everything a tensor holds about each of the n units along `axis`."""
    moved = tensor.movedim(axis, 0)[offset:offset + copies * n * unit]
    return moved.reshape(copies, n, unit, -1).transpose(0, 1).reshape(n, -1)
