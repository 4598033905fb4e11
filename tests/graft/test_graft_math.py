"""Pure math of the graft: pair classes, embedding maps, projector folding and resizing."""

import torch
import torch.nn.functional as F

from vadasm.graft.embedding_maps import (
    control_map,
    embed_scale,
    fit_map,
    retrieval_quality,
    shared_anchors,
)
from vadasm.graft.pairs import classify_pair
from vadasm.graft.projector import fold_affine_map, resize_hidden, svd_subspace_reduction


def test_classify_pairs():
    a = {"w": (4, 4), "v": (4, 8)}
    assert classify_pair("llama", "llama", a, dict(a), True).label == "A"
    wider = {"w": (6, 6), "v": (6, 8)}
    pair = classify_pair("llama", "llama", a, wider, True)
    assert pair.label == "B" and not pair.same_shapes and "shapes differ" in pair.describe()
    assert classify_pair("gemma3_text", "llama", a, dict(a), True).label == "B"
    assert classify_pair("llama", "llama", a, dict(a), False).label == "C"
    assert classify_pair("gemma3_text", "llama", a, wider, False).label == "C"


def test_shared_anchors_skip_ambiguous_strings():
    donor = ["a", "b", "b", "", "c", "\ufffd", "d"]
    recipient = ["d", "c", "x", "a", "b"]
    d, r = shared_anchors(donor, recipient)
    # "b" is ambiguous in the donor; "" and replacement chars are never anchors.
    assert [(donor[i], recipient[j]) for i, j in zip(d.tolist(), r.tolist())] == [("d", "d"), ("c", "c"), ("a", "a")]


def test_procrustes_recovers_a_rotation():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(500, 16, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    fmap = fit_map(emb, emb @ rotation + 3.0, "procrustes")
    assert torch.allclose(fmap.matrix.float(), rotation, atol=1e-5)
    assert abs(fmap.scale - 1) < 1e-6
    assert torch.allclose(fmap(emb).float(), emb @ rotation + 3.0, atol=1e-4)


def _paired_spaces(n=2000, d_in=24, d_out=16, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g) * 2 + 1
    true = torch.randn(d_in, d_out, generator=g) / d_in**0.5
    y = x @ true + noise * torch.randn(n, d_out, generator=g) - 0.5
    return x, y


def test_maps_beat_controls_on_held_out_anchors():
    x, y = _paired_spaces()
    fit, held = torch.arange(1500), torch.arange(1500, 2000)
    g = torch.Generator().manual_seed(1)
    scores = {}
    for method in ("lstsq", "procrustes", "omp"):
        scores[method] = retrieval_quality(fit_map(x[fit], y[fit], method, omp_k=24), x[held], held, y)
    for control in ("random_map", "shuffled_anchors", "mean_vector"):
        scores[control] = retrieval_quality(control_map(x[fit], y[fit], control, g), x[held], held, y)
    assert scores["lstsq"].top1 > 0.9 and scores["omp"].top1 > 0.9  # omp with k = d_in is least squares
    for control in ("random_map", "shuffled_anchors", "mean_vector"):
        assert scores[control].top1 < 0.05
        assert scores["lstsq"].cosine > scores[control].cosine + 0.5


def test_omp_is_sparse_and_reduces_error():
    x, y = _paired_spaces()
    sparse = fit_map(x, y, "omp", omp_k=4)
    assert ((sparse.matrix != 0).sum(0) <= 4).all()
    err = lambda m: (m(x) - y.double()).pow(2).mean().item()  # noqa: E731
    assert err(sparse) < err(control_map(x, y, "mean_vector", torch.Generator()))


def test_folded_projector_equals_map_of_projector():
    g = torch.Generator().manual_seed(0)
    w1, b1 = torch.randn(12, 8, generator=g), torch.randn(12, generator=g)
    w2, b2 = torch.randn(12, 12, generator=g), torch.randn(12, generator=g)
    x_anchor, y_anchor = _paired_spaces(d_in=12, d_out=10)
    fmap = fit_map(x_anchor, y_anchor, "lstsq")
    new_w2, new_b2 = fold_affine_map(w2, b2, fmap.matrix, fmap.scale, fmap.mu_in, fmap.mu_out)
    x = torch.randn(50, 8, generator=g).double()
    hidden = F.gelu(x @ w1.double().T + b1.double())
    expected = fmap(hidden @ w2.double().T + b2.double())
    assert torch.allclose(hidden @ new_w2.T + new_b2, expected, atol=1e-9)


def test_resize_hidden_pads_exactly_and_shrinks_with_measured_error():
    g = torch.Generator().manual_seed(0)
    w1, b1 = torch.randn(10, 6, generator=g).double(), torch.randn(10, generator=g).double()
    w2, b2 = torch.randn(5, 10, generator=g).double(), torch.randn(5, generator=g).double()
    x = torch.randn(400, 6, generator=g).double()

    def run(a, c, w, b):
        return F.gelu(x @ a.T + c) @ w.T + b

    ref = run(w1, b1, w2, b2)
    pw1, pb1, pw2, pb2, info = resize_hidden(w1, b1, w2, b2, 14)
    assert info.exact and pw1.shape == (14, 6) and torch.allclose(run(pw1, pb1, pw2, pb2), ref)
    acts = F.gelu(x @ w1.T + b1)
    err = {}
    for name, h in (("weights", None), ("activations", acts)):
        sw1, sb1, sw2, sb2, info = resize_hidden(w1, b1, w2, b2, 8, hidden_acts=h)
        assert sw1.shape == (8, 6) and sw2.shape == (5, 8) and info.criterion == name and not info.exact
        err[name] = (run(sw1, sb1, sw2, sb2) - ref).pow(2).mean().item()
    assert err["activations"] < err["weights"]  # least-squares compensation helps on the fitted data


def test_svd_subspace_reduction_keeps_variance():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(30, 3, generator=g) @ torch.randn(3, 20, generator=g)
    red = svd_subspace_reduction(low + 1e-4 * torch.randn(30, 20, generator=g), 0.95)
    assert red.rank <= 3 and red.variance_kept >= 0.95 and red.factored_parameters == red.rank * 50
    assert torch.allclose(red.weight, low, atol=1e-2)
    assert svd_subspace_reduction(low, 1.0).rank == 20 or svd_subspace_reduction(low, 1.0).variance_kept >= 1 - 1e-9


def test_embed_scale_for_gemma_only():
    assert embed_scale("gemma3_text", 640) == 640**0.5
    assert embed_scale("llama", 576) == 1.0
