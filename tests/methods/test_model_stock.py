"""Model Stock: hand-checked angles, mergekit's formula as an oracle, and a recipe end to end."""

import importlib
import math

import pytest
import torch
from safetensors.torch import load_file

from vadasm.errors import VadasmError
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge
from vadasm.methods import get_method
from vadasm.methods.model_stock import model_stock, model_stock_ratio
from vadasm.methods.registry import ignored_settings

QUIET = MergeOptions(progress=False)
model_stock_module = importlib.import_module("vadasm.methods.model_stock")  # not the function of that name


def mergekit_model_stock(w_0, ws, filter_wise=False):
    """mergekit 0.1.5's model_stock_merge_method (merge_methods/model_stock.py), transcribed as the oracle."""
    out_shape = w_0.shape
    if filter_wise:
        if w_0.dim() == 1:
            w_0, ws = w_0.unsqueeze(0), [w.unsqueeze(0) for w in ws]
    else:
        w_0, ws = w_0.reshape(-1), [w.reshape(-1) for w in ws]
    offsets = [w - w_0 for w in ws]
    cos_thetas = []
    for idx, a in enumerate(offsets):
        for b in offsets[idx + 1:]:
            norm_product = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
            cos_thetas.append(((a * b).sum(dim=-1) / norm_product.clamp(min=1e-6)).clamp(-1, 1))
    cos_theta = torch.stack(cos_thetas).mean(dim=0).unsqueeze(-1)
    count = len(ws)
    denominator = 1 + (count - 1) * cos_theta
    singular = denominator.abs() < 1e-6
    safe = torch.where(singular, torch.ones_like(denominator), denominator)
    t = torch.where(singular, torch.zeros_like(cos_theta), (count * cos_theta) / safe)
    return (t * (sum(ws) / count) + (1 - t) * w_0).reshape(out_shape)


def test_ratio_by_hand():
    assert model_stock_ratio(torch.tensor(0.5), 2).item() == pytest.approx(2 / 3)  # 2 * .5 / 1.5
    assert model_stock_ratio(torch.tensor(0.5), 3).item() == pytest.approx(0.75)  # 3 * .5 / 2
    assert model_stock_ratio(torch.tensor(1.0), 4).item() == pytest.approx(1.0)
    assert model_stock_ratio(torch.tensor(-1.0), 2).item() == 0.0  # singular: keep the base


def test_angles_by_hand():
    base = torch.tensor([1.0, 1.0])
    same = model_stock(base, [base + torch.tensor([1.0, 0.0]), base + torch.tensor([1.0, 0.0])])
    assert torch.allclose(same, torch.tensor([2.0, 1.0]))  # cos 1: t = 1, the average
    orthogonal = model_stock(base, [base + torch.tensor([1.0, 0.0]), base + torch.tensor([0.0, 1.0])])
    assert torch.allclose(orthogonal, base)  # cos 0: t = 0, the base
    sixty = model_stock(base, [base + torch.tensor([1.0, 0.0]), base + torch.tensor([0.5, math.sqrt(3) / 2])])
    assert torch.allclose(sixty, base + 2 / 3 * torch.tensor([0.75, math.sqrt(3) / 4]), atol=1e-6)


def test_filter_wise_uses_one_angle_per_row():
    base = torch.zeros(2, 2)
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # row 0 parallel (cos 1), row 1 orthogonal (cos 0)
    out = model_stock(base, [a, b], filter_wise=True)
    assert torch.allclose(out, torch.tensor([[1.5, 0.0], [0.0, 0.0]]))
    flat = model_stock(base, [a, b])  # one angle for the whole tensor: cos = 2 / (sqrt(2) sqrt(5))
    cos = 2 / math.sqrt(10)
    assert torch.allclose(flat, 2 * cos / (1 + cos) * (a + b) / 2, atol=1e-6)


@pytest.mark.parametrize("filter_wise", [False, True])
@pytest.mark.parametrize("shape", [(7,), (9, 13), (3, 4, 5)])
def test_matches_mergekits_formula_in_blocks(monkeypatch, filter_wise, shape):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(shape, generator=gen)
    models = [base + 0.1 * torch.randn(shape, generator=gen) + 0.05 * (i + 1) for i in range(3)]
    expected = mergekit_model_stock(base, models, filter_wise)
    assert torch.allclose(model_stock(base, models, filter_wise), expected, atol=1e-6)
    monkeypatch.setattr(model_stock_module, "CHUNK_ELEMENTS", 4)  # rows and columns split into blocks
    assert torch.allclose(model_stock(base, models, filter_wise), expected, atol=1e-6)


def test_equal_models_give_that_model_and_one_model_is_refused():
    base, model = torch.zeros(5), torch.arange(5.0)
    assert torch.allclose(model_stock(base, [model, model, model]), model)
    with pytest.raises(ValueError, match="at least two"):
        model_stock(base, [model])


def test_recipe_merges_every_tensor_like_the_function(tmp_path, llama_trio):
    base, ft1, ft2 = llama_trio
    recipe = recipe_from_dict({"merge_method": "model_stock", "base_model": str(base), "dtype": "float32",
                               "models": [{"model": str(ft1)}, {"model": str(ft2)}, {"model": str(base)}],
                               "parameters": {"filter_wise": False}})
    run_merge(recipe, tmp_path / "out", QUIET)
    merged, b, m1, m2 = (load_file(f / "model.safetensors") for f in (tmp_path / "out", base, ft1, ft2))
    for name in b:
        assert torch.equal(merged[name], model_stock(b[name], [m1[name], m2[name]])), name
    assert any(not torch.equal(merged[k], b[k]) for k in b)


def test_recipe_with_one_model_is_refused_when_loaded(llama_trio):
    base, ft1, _ = llama_trio
    with pytest.raises(VadasmError, match="needs at least 2 models besides the base, got 1"):
        recipe_from_dict({"merge_method": "model_stock", "base_model": str(base),
                          "models": [{"model": str(ft1)}, {"model": str(base)}]})


def test_a_per_model_weight_is_accepted_and_noted_as_ignored(tmp_path, llama_trio):
    base, ft1, ft2 = llama_trio
    recipe = recipe_from_dict({"merge_method": "model_stock", "base_model": str(base),
                               "models": [{"model": str(ft1), "parameters": {"weight": 0.3}},
                                          {"model": str(ft2), "parameters": {"weight": 0.7}}]})
    assert ignored_settings(get_method("model_stock"), recipe.model_dump(exclude_none=True)) == [
        "'weight' is accepted for mergekit recipes but model_stock ignores it"]
    run_merge(recipe, tmp_path / "out", QUIET)
    plain = recipe_from_dict({"merge_method": "model_stock", "base_model": str(base),
                              "models": [{"model": str(ft1)}, {"model": str(ft2)}]})
    run_merge(plain, tmp_path / "plain", QUIET)
    a, b = load_file(tmp_path / "out" / "model.safetensors"), load_file(tmp_path / "plain" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
