"""DELLA and Model Breadcrumbs: the sparsifiers (hand-checked) and their task-vector merges."""

import pytest
import torch
from safetensors.torch import load_file

import vadasm.methods.sparsify as sparsify
from vadasm.errors import VadasmError
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge
from vadasm.methods import generalized_task_arithmetic, get_method
from vadasm.methods.sparsify import (
    della_keep_probabilities,
    della_prune,
    l1_rescaled,
    magnitude_outliers_prune,
    top_k_mask,
)

QUIET = MergeOptions(progress=False)


def mergekit_outliers(tensor, density, gamma):
    """mergekit 0.1.5's magnitude_outliers (sparsify.py), transcribed as the oracle."""
    n = tensor.numel()
    target, n_top = int(density * n), int(gamma * n)
    n_bot = max(0, n - target - n_top)
    order = torch.sort(tensor.abs().reshape(-1), descending=False).indices
    mask = torch.zeros(n)
    mask[order[n_bot:n_bot + target]] = 1
    return tensor * mask.reshape(tensor.shape)


def test_breadcrumbs_drops_outliers_and_small_entries_by_hand():
    delta = torch.tensor([0.1, -5.0, 0.3, 2.0, -0.2, 0.0, 1.0, -0.5, 4.0, 0.05])
    # n=10, keep 5, drop the top 1 (|-5|) and the 4 smallest (0, 0.05, 0.1, 0.2)
    kept = magnitude_outliers_prune(delta, density=0.5, gamma=0.1)
    assert torch.equal(kept, torch.tensor([0.0, 0.0, 0.3, 2.0, 0.0, 0.0, 1.0, -0.5, 4.0, 0.0]))


def test_breadcrumbs_drops_fewer_outliers_when_density_needs_them():
    delta = torch.arange(1.0, 11.0)
    # keep 9 with gamma 0.2: dropping 2 outliers would leave 8, so only the largest goes
    kept = magnitude_outliers_prune(delta, density=0.9, gamma=0.2)
    assert torch.equal(kept, torch.cat([torch.arange(1.0, 10.0), torch.zeros(1)]))
    assert torch.equal(magnitude_outliers_prune(delta, 1.0, 0.2), delta)


def test_breadcrumbs_matches_mergekits_sort_on_random_tensors():
    gen = torch.Generator().manual_seed(0)
    for density, gamma in [(0.5, 0.01), (0.3, 0.1), (0.9, 0.2), (0.05, 0.0), (0.7, 0.5)]:
        delta = torch.randn(37, 23, generator=gen)
        assert torch.equal(magnitude_outliers_prune(delta, density, gamma), mergekit_outliers(delta, density, gamma))


def test_l1_rescale_restores_the_norm_and_leaves_zero_alone():
    delta = torch.tensor([3.0, -1.0, 0.5, 0.5])
    kept = torch.tensor([3.0, 0.0, 0.0, 0.5])
    assert l1_rescaled(delta, kept).abs().sum().item() == pytest.approx(5.0)
    assert torch.equal(l1_rescaled(delta, torch.zeros(4)), torch.zeros(4))
    rescaled = magnitude_outliers_prune(delta, 0.5, 0.0, rescale=True)  # keeps 3 and -1 (L1 4) -> x 5/4
    assert torch.allclose(rescaled, torch.tensor([3.75, -1.25, 0.0, 0.0]))


def test_top_k_masks_sorting_small_tensors_equals_the_streamed_selection(monkeypatch):
    gen = torch.Generator().manual_seed(5)
    values = (torch.rand(3000, generator=gen) * 8).round()  # many ties
    ks = [0, 1, 17, 1500, 2999, 3000]
    sorted_masks = sparsify.top_k_masks(values, ks)
    monkeypatch.setattr(sparsify, "_SORT_ELEMENTS", 0)
    monkeypatch.setattr(sparsify, "_CHUNK_ELEMENTS", 700)
    for k, a, b in zip(ks, sorted_masks, sparsify.top_k_masks(values, ks)):
        assert torch.equal(a, b) and int(a.sum()) == k


def test_top_k_mask_breaks_ties_by_position():
    values = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.5])
    assert top_k_mask(values, 2).tolist() == [False, True, True, False, False]
    assert top_k_mask(values, 0).sum() == 0
    assert top_k_mask(values, 5).all()


@pytest.mark.parametrize("shape", [(1, 30), (12, 7), (4, 5, 6)])
def test_della_probabilities_equal_mergekits_ranks(shape):
    rows = torch.randn(shape, generator=torch.Generator().manual_seed(9))
    # mergekit 0.1.5 della_magprune: 1-based ranks along dim 1, min-max normalised
    ranks = torch.argsort(rows.abs(), dim=1).argsort(dim=1).float() + 1
    low, high = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
    expected = (0.4 - 0.25) + ((ranks - low) / (high - low)).clamp(0, 1) * 2 * 0.25
    assert torch.equal(della_keep_probabilities(rows, 0.4, 0.25), expected)


def test_della_keep_probability_follows_the_magnitude_rank():
    # 4000 rows, each the same 11 magnitudes: column j has rank j/10, kept with p = 0.5 - 0.3 + 0.6 * j/10
    row = torch.linspace(0.1, 1.1, 11) * torch.tensor([1, -1] * 5 + [1])
    delta = row.repeat(4000, 1)
    kept = della_prune(delta, density=0.5, epsilon=0.3, rescale=False, generator=torch.Generator().manual_seed(0))
    rate = (kept != 0).float().mean(dim=0)
    expected = 0.2 + 0.6 * torch.arange(11) / 10
    assert torch.allclose(rate, expected, atol=0.03)  # standard error <= 0.008
    assert torch.equal(kept[kept != 0], delta[kept != 0])  # no rescale: survivors unchanged


def test_della_rescale_keeps_the_l1_norm_and_is_seeded():
    delta = torch.randn(64, 48, generator=torch.Generator().manual_seed(1))
    first = della_prune(delta, 0.4, 0.1, rescale=True, generator=torch.Generator().manual_seed(5))
    again = della_prune(delta, 0.4, 0.1, rescale=True, generator=torch.Generator().manual_seed(5))
    other = della_prune(delta, 0.4, 0.1, rescale=True, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.abs().sum().item() == pytest.approx(delta.abs().sum().item(), rel=1e-5)
    assert 0.35 < (first != 0).float().mean().item() < 0.45


def test_della_draws_the_same_mask_in_row_chunks(monkeypatch):
    delta = torch.randn(50, 9, generator=torch.Generator().manual_seed(2))
    whole = della_prune(delta, 0.5, 0.2, rescale=False, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(sparsify, "_CHUNK_ELEMENTS", 20)  # 2 rows per chunk
    chunked = della_prune(delta, 0.5, 0.2, rescale=False, generator=torch.Generator().manual_seed(3))
    assert torch.equal(whole, chunked)


def test_della_edge_cases():
    delta = torch.tensor([1.0, -2.0, 3.0])
    assert torch.equal(della_prune(delta, 1.0, 0.5, rescale=True), delta)
    with pytest.raises(ValueError, match="epsilon"):
        della_prune(delta, 0.9, 0.15, rescale=True)
    column = torch.ones(5, 1)  # rows of one entry: probability = density (mergekit fails on 0/0 here)
    kept = della_prune(column, 0.5, 0.2, rescale=False, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(kept).all()


@pytest.mark.parametrize("name, reduces_to", [
    ("della", dict(consensus="sum", normalize=True)),
    ("della_linear", dict(consensus=None, normalize=False)),
    ("breadcrumbs", dict(consensus=None, normalize=False)),
    ("breadcrumbs_ties", dict(consensus="sum", normalize=False)),
])
def test_density_one_reduces_to_task_arithmetic_or_ties(name, reduces_to):
    gen = torch.Generator().manual_seed(4)
    base, models = torch.randn(6, 5, generator=gen), [torch.randn(6, 5, generator=gen) for _ in range(3)]
    method = get_method(name)
    params = {p.name: p.default for p in method.params}
    params.update(weight=[0.5, 0.3, 0.8], density=[1.0] * 3, **{"lambda": 0.7})
    for key in ("epsilon", "gamma"):
        if key in params:
            params[key] = [params[key]] * 3
    out = method.func(base, models, **params, generator=[torch.Generator() for _ in models])
    expected = generalized_task_arithmetic(base, models, weight=[0.5, 0.3, 0.8], lambda_=0.7, **reduces_to)
    assert torch.allclose(out, expected, atol=1e-6)


def test_equal_models_give_the_model_with_breadcrumbs_ties():
    base = torch.zeros(40)
    model = torch.randn(40, generator=torch.Generator().manual_seed(0))
    out = generalized_task_arithmetic(base, [model, model], weight=[0.5, 0.5], density=[0.5, 0.5],
                                      pruning="outliers", gamma=[0.0, 0.0], consensus="sum", normalize=True,
                                      rescale=False)
    assert torch.equal(out, magnitude_outliers_prune(model, 0.5, 0.0))


def test_registered_parameters_follow_mergekit():
    della, linear = get_method("della"), get_method("della_linear")
    assert della.global_params["normalize"] is True and della.global_params["rescale"] is True
    assert linear.global_params["normalize"] is False and linear.global_params["rescale"] is True
    assert della.model_params["epsilon"] == 0.15 and not della.rows_independent
    crumbs = get_method("breadcrumbs_ties")
    assert crumbs.model_params["gamma"] == 0.01 and crumbs.global_params["rescale"] is False
    assert get_method("dare_linear").rows_independent  # unchanged by the new variants


def _recipe(method, base, models, **params):
    return recipe_from_dict({
        "merge_method": method, "base_model": str(base), "dtype": "float32",
        "models": [{"model": str(m), "parameters": {"weight": w, "density": 0.6, **params}}
                   for m, w in zip(models, (0.7, 0.5))],
    })


@pytest.mark.parametrize("method", ["breadcrumbs", "breadcrumbs_ties"])
def test_breadcrumbs_recipe_merges_every_tensor_like_the_function(tmp_path, llama_trio, method):
    base, ft1, ft2 = llama_trio
    run_merge(_recipe(method, base, [ft1, ft2], gamma=0.05), tmp_path / "out", QUIET)
    merged, b, m1, m2 = (load_file(f / "model.safetensors") for f in (tmp_path / "out", base, ft1, ft2))
    consensus = "sum" if method.endswith("ties") else None
    for name in b:
        expected = generalized_task_arithmetic(b[name], [m1[name], m2[name]], weight=[0.7, 0.5], density=[0.6] * 2,
                                               pruning="outliers", gamma=[0.05] * 2, consensus=consensus, rescale=False)
        assert torch.equal(merged[name], expected), name


@pytest.mark.parametrize("method", ["della", "della_linear"])
def test_della_recipe_is_seeded_and_prunes(tmp_path, llama_trio, method):
    base, ft1, ft2 = llama_trio
    run_merge(_recipe(method, base, [ft1, ft2], epsilon=0.2), tmp_path / "a", QUIET)
    run_merge(_recipe(method, base, [ft1, ft2], epsilon=0.2), tmp_path / "b", QUIET)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    original = load_file(base / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    weight = "model.layers.0.mlp.down_proj.weight"
    unchanged = (a[weight] == original[weight]).float().mean().item()
    assert 0.08 < unchanged < 0.24  # both deltas dropped: about 0.4 * 0.4 = 0.16


def test_della_recipe_with_epsilon_too_large_is_one_line(tmp_path, llama_trio):
    base, ft1, ft2 = llama_trio
    with pytest.raises(VadasmError, match="della needs density .* epsilon 0.5"):
        run_merge(_recipe("della", base, [ft1, ft2], epsilon=0.5), tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()
