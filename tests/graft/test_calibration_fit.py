"""The closed-form fits behind --projector closed-form and --map calibrated, on small hand-built tensors."""

from __future__ import annotations

import torch

from vadasm.graft.calibration_fit import fit_and_score, fit_quality, fit_stats, solve_map


def linear_data(n=60, tokens=5, d_in=6, d_out=4, noise=0.0, seed=0):
    """Items whose mean token maps exactly (up to `noise`) onto the target by a known affine map."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, tokens, d_in, generator=gen, dtype=torch.float64)
    matrix = torch.randn(d_in, d_out, generator=gen, dtype=torch.float64)
    bias = torch.randn(d_out, generator=gen, dtype=torch.float64)
    targets = features.mean(1) @ matrix + bias + noise * torch.randn(n, d_out, generator=gen, dtype=torch.float64)
    return features, targets, matrix, bias


def test_exact_affine_data_is_recovered_with_unit_scale():
    features, targets, matrix, bias = linear_data()
    fmap = solve_map(fit_stats(features, targets, per_token=False), ridge=0.0)
    assert abs(fmap.scale - 1) < 1e-8
    assert torch.allclose(fmap.scale * fmap.matrix, matrix, atol=1e-7)
    assert torch.allclose(fmap(features.mean(1)), targets, atol=1e-7)
    assert fit_quality(fmap, features.mean(1), targets).relative_residual < 1e-10


def test_per_token_fit_shares_the_cross_term_and_adds_the_within_item_scatter():
    features, targets, _, _ = linear_data()
    pooled, per_token = fit_stats(features, targets, False), fit_stats(features, targets, True)
    assert torch.allclose(pooled.cross, per_token.cross)
    delta = (features - features.mean(1, keepdim=True)).reshape(-1, features.shape[-1])
    assert torch.allclose(per_token.gram - pooled.gram, delta.T @ delta / features.shape[1])


def test_per_token_fit_keeps_single_tokens_near_their_image_target():
    """Some inputs vary token by token and say nothing about the image: the pooled fit uses their chance
    correlation with the targets, the per-token fit does not, so its single-token outputs stay near the target."""
    gen = torch.Generator().manual_seed(1)
    signal = torch.randn(20, 1, 3, generator=gen, dtype=torch.float64).expand(20, 6, 3)
    nuisance = torch.randn(20, 6, 5, generator=gen, dtype=torch.float64)
    features = torch.cat([signal, nuisance], dim=2)
    targets = signal[:, 0] @ torch.randn(3, 4, generator=gen, dtype=torch.float64)
    targets += 0.3 * torch.randn(targets.shape, generator=gen, dtype=torch.float64)
    errors = {}
    for per_token in (False, True):
        fmap = solve_map(fit_stats(features, targets, per_token), ridge=0.0)
        tokens = fmap(features.reshape(-1, 8)).reshape(20, 6, 4)
        errors[per_token] = (tokens - targets[:, None]).pow(2).mean().item()
    assert errors[True] < errors[False] / 2


def test_a_subset_of_inputs_solves_like_fitting_the_sliced_features():
    features, targets, _, _ = linear_data(noise=0.3)
    keep = torch.tensor([0, 2, 5])
    subset = solve_map(fit_stats(features, targets, True), 0.01, keep=keep)
    sliced = solve_map(fit_stats(features[..., keep], targets, True), 0.01)
    assert torch.allclose(subset.matrix, sliced.matrix) and abs(subset.scale - sliced.scale) < 1e-12


def test_heldout_scores_beat_the_shuffled_pairs_control_and_find_label_tokens():
    features, targets, _, _ = linear_data(n=100, noise=0.05)
    token_sets = [{i} for i in range(100)]  # the "vocabulary" is the targets; item i's label token is row i
    fmap, scores = fit_and_score(features, targets, 0.0, False, seed=0, token_sets=token_sets, vocab=targets)
    assert scores["heldout_items"] == 10
    assert scores["heldout"].relative_residual < 0.05 < 0.5 < scores["heldout_control"].relative_residual
    assert scores["heldout"].label_hit >= 0.9 and scores["fit"].label_hit >= 0.95  # nearest by cosine
    assert scores["heldout_control"].label_hit < 0.5
    assert fmap.method == "calibrated"
