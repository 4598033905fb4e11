"""SCE: select by variance, weight by delta energy, erase minority signs (hand-checked + mergekit oracle)."""

import pytest
import torch
from safetensors.torch import load_file

from vadasm.merge import MergeOptions, recipe_from_dict, run_merge
from vadasm.methods import get_method
from vadasm.methods.registry import ignored_settings
from vadasm.methods.sce import sce_merge, sce_select_mask, sce_weights

QUIET = MergeOptions(progress=False)


def mergekit_sce(base, tensors, select_topk):
    """mergekit 0.1.5's sce_merge (merge_methods/sce.py), transcribed as the oracle."""
    tvs = torch.stack([t - base for t in tensors])
    if select_topk < 1:
        var = torch.var(tvs, dim=0, unbiased=False)
        k = int(torch.count_nonzero(var) * select_topk)
        mask = torch.zeros_like(var)
        if k:
            mask.view(-1)[torch.topk(var.abs().view(-1), k=k).indices] = 1
        tvs = tvs * mask.unsqueeze(0)
    sign = tvs.sign()
    majority = (tvs.sum(dim=0) >= 0).float() * 2 - 1
    erase = sign == majority
    weights = tvs.square().reshape(tvs.shape[0], -1).mean(dim=1)
    total = weights.sum().item()
    weights = torch.ones_like(weights) / len(weights) if abs(total) < 1e-6 else weights / total
    weights = weights.reshape(-1, *([1] * (tvs.dim() - 1))) * erase
    return base + (tvs * weights).sum(dim=0) / weights.sum(dim=0).clamp(min=1e-6)


def test_weights_and_agreeing_average_by_hand():
    base = torch.zeros(2)
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0])
    # mean squares 2.5 and 4.5 -> weights 5/14, 9/14; entry 1: b's 0 disagrees with the elected +
    assert torch.allclose(sce_weights(torch.stack([a, b])), torch.tensor([5 / 14, 9 / 14]))
    assert torch.allclose(sce_merge(base, [a, b]), torch.tensor([32 / 14, 2.0]))


def test_minority_sign_is_erased():
    # weights 0.1 and 0.9; sum of deltas -2 elects '-': only b counts
    assert torch.allclose(sce_merge(torch.zeros(1), [torch.tensor([1.0]), torch.tensor([-3.0])]), torch.tensor([-3.0]))


def test_select_keeps_the_highest_variance_among_varying_entries():
    base = torch.zeros(4)
    a, b = torch.tensor([1.0, 1.0, 0.0, 5.0]), torch.tensor([1.0, -1.0, 0.0, -5.0])
    # variances [0, 1, 0, 25]: two non-zero, select_topk 0.5 keeps one, entry 3; its sum is 0 -> '+' wins
    assert sce_select_mask(torch.stack([a, b]), 0.5).tolist() == [False, False, False, True]
    assert torch.allclose(sce_merge(base, [a, b], select_topk=0.5), torch.tensor([0.0, 0.0, 0.0, 5.0]))


def test_equal_models_give_that_model():
    base = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    model = base + torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(sce_merge(base, [model, model, model]), model, atol=1e-6)
    assert torch.equal(sce_merge(base, [base, base]), base)  # no deltas: uniform weights, nothing added


@pytest.mark.parametrize("select_topk", [1.0, 0.5, 0.1, 0.0])
def test_matches_mergekits_code(select_topk):
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(11, 17, generator=gen)
    models = [base + 0.1 * torch.randn(11, 17, generator=gen) for _ in range(3)]
    assert torch.allclose(sce_merge(base, models, select_topk), mergekit_sce(base, models, select_topk), atol=1e-6)


def test_recipe_merges_every_tensor_like_the_function(tmp_path, llama_trio):
    base, ft1, ft2 = llama_trio
    recipe = recipe_from_dict({"merge_method": "sce", "base_model": str(base), "dtype": "float32",
                               "models": [{"model": str(ft1)}, {"model": str(ft2)}],
                               "parameters": {"select_topk": 0.3, "int8_mask": True}})
    run_merge(recipe, tmp_path / "out", QUIET)
    merged, b, m1, m2 = (load_file(f / "model.safetensors") for f in (tmp_path / "out", base, ft1, ft2))
    for name in b:
        assert torch.equal(merged[name], sce_merge(b[name], [m1[name], m2[name]], 0.3)), name
    assert any(not torch.equal(merged[k], b[k]) for k in b)


def test_a_per_model_weight_is_accepted_and_noted_as_ignored(tmp_path, llama_trio):
    base, ft1, ft2 = llama_trio
    recipe = recipe_from_dict({"merge_method": "sce", "base_model": str(base),
                               "models": [{"model": str(ft1), "parameters": {"weight": 0.3}},
                                          {"model": str(ft2), "parameters": {"weight": 0.7}}]})
    assert ignored_settings(get_method("sce"), recipe.model_dump(exclude_none=True)) == [
        "'weight' is accepted for mergekit recipes but sce ignores it"]
    run_merge(recipe, tmp_path / "out", QUIET)
    plain = recipe_from_dict({"merge_method": "sce", "base_model": str(base),
                              "models": [{"model": str(ft1)}, {"model": str(ft2)}]})
    run_merge(plain, tmp_path / "plain", QUIET)
    a, b = load_file(tmp_path / "out" / "model.safetensors"), load_file(tmp_path / "plain" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
