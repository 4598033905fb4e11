"""One `vadasm merge` recipe per method of methods part 2, on tiny models: the written tensors are the
pure function applied to the inputs' tensors (so base handling, model order and parameters are wired)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from pico_models import make_text_model, perturbed_copy
from vadasm.errors import VadasmError
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge
from vadasm.methods import arcee_fusion, karcher_mean, multislerp, nearswap, nuslerp_merge, ram_merge, ramplus_tl_merge

QUIET = MergeOptions(progress=False)


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    root = tmp_path_factory.mktemp("trio")
    base = make_text_model(root / "base", "llama")
    return base, perturbed_copy(base, root / "ft1", seed=1), perturbed_copy(base, root / "ft2", seed=2)


def _weights(folder):
    return load_file(folder / "model.safetensors")


def _merge(tmp_path, raw):
    out = tmp_path / "out"
    result = run_merge(recipe_from_dict(raw), out, QUIET)
    assert result.merged == result.tensors
    return _weights(out), result


def _check(merged, base, models, expected_fn):
    b, ms = (_weights(base) if base is not None else None), [_weights(m) for m in models]
    for name in merged:
        expected = expected_fn(b[name] if b is not None else None, [m[name] for m in ms])
        assert torch.allclose(merged[name], expected, atol=1e-6), name


CASES = {
    "nuslerp (base)": (
        {"merge_method": "nuslerp", "with_base": True, "params": [{"weight": 0.3}, {"weight": 0.7}],
         "parameters": {"nuslerp_flatten": False}},
        lambda b, ts: nuslerp_merge(b, ts, [0.3, 0.7], flatten=False)),
    "nuslerp (no base)": (
        {"merge_method": "nuslerp", "with_base": False, "params": [{"weight": 1.0}, {"weight": 3.0}],
         "parameters": {}},
        lambda b, ts: nuslerp_merge(None, ts, [1.0, 3.0])),
    "multislerp (base)": (
        {"merge_method": "multislerp", "with_base": True, "params": [{"weight": 0.4}, {"weight": 0.6}],
         "parameters": {}},
        lambda b, ts: multislerp(b, ts, [0.4, 0.6])),
    "multislerp (no base)": (
        {"merge_method": "multislerp", "with_base": False, "params": [{"weight": 2.0}, {"weight": 1.0}],
         "parameters": {"normalize_weights": True}},
        lambda b, ts: multislerp(None, ts, [2.0, 1.0])),
    "karcher": (
        {"merge_method": "karcher", "with_base": False, "params": [{}, {}], "parameters": {"max_iter": 5}},
        lambda b, ts: karcher_mean(ts, [0.5, 0.5], max_iter=5)),
    "nearswap": (
        {"merge_method": "nearswap", "with_base": True, "params": [{}], "parameters": {"t": 0.005}},
        lambda b, ts: nearswap(0.005, b, ts[0])),
    "arcee_fusion": (
        {"merge_method": "arcee_fusion", "with_base": True, "params": [{}], "parameters": {}},
        lambda b, ts: arcee_fusion(b, ts[0])),
    "ram": (
        {"merge_method": "ram", "with_base": True, "params": [{}, {}], "parameters": {"epsilon": 0.01}},
        lambda b, ts: ram_merge(b, ts, epsilon=0.01)),
    "ramplus_tl": (
        {"merge_method": "ramplus_tl", "with_base": True, "params": [{}, {}],
         "parameters": {"epsilon": 0.01, "r": 0.5, "alpha": 0.5}},
        lambda b, ts: ramplus_tl_merge(b, ts, r=0.5, alpha=0.5, epsilon=0.01)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_recipe_writes_the_method_applied_to_each_tensor(tmp_path, trio, case):
    spec, expected_fn = CASES[case]
    base, ft1, ft2 = trio
    models = [ft1, ft2][:len(spec["params"])]
    raw = {"merge_method": spec["merge_method"], "parameters": spec["parameters"],
           "models": [{"model": str(m), "parameters": p} for m, p in zip(models, spec["params"])]}
    if spec["with_base"]:
        raw["base_model"] = str(base)
    merged, _ = _merge(tmp_path, raw)
    _check(merged, base if spec["with_base"] else None, models, expected_fn)
    moved = max((merged[k] - _weights(base)[k]).abs().max().item() for k in merged)
    assert moved > 0  # the merge changed something


def test_karcher_merges_a_base_model_missing_from_models_as_one_more_input(tmp_path, trio):
    base, ft1, ft2 = trio
    raw = {"merge_method": "karcher", "base_model": str(base), "models": [{"model": str(ft1)}, {"model": str(ft2)}]}
    merged, _ = _merge(tmp_path, raw)
    _check(merged, base, [ft1, ft2], lambda b, ts: karcher_mean([*ts, b], [1 / 3] * 3))


def test_slerp_accepts_an_ignored_weight_and_notes_it(tmp_path, trio):
    base, ft1, _ = trio
    plain = {"merge_method": "slerp", "base_model": str(base), "parameters": {"t": 0.4},
             "models": [{"model": str(base)}, {"model": str(ft1)}]}
    weighted = {**plain, "models": [{"model": str(base), "parameters": {"weight": 0.2}},
                                    {"model": str(ft1), "parameters": {"weight": 0.8}}]}
    run_merge(recipe_from_dict(plain), tmp_path / "plain", QUIET)
    result = run_merge(recipe_from_dict(weighted), tmp_path / "weighted", QUIET)
    plain_w, weighted_w = _weights(tmp_path / "plain"), _weights(tmp_path / "weighted")
    assert plain_w.keys() == weighted_w.keys() and all(torch.equal(plain_w[k], weighted_w[k]) for k in plain_w)
    assert result.notes == ["'weight' is accepted for mergekit recipes but slerp ignores it"]
    assert json.loads((tmp_path / "weighted" / "vadasm_config.json").read_text())["notes"] == result.notes
    assert run_merge(recipe_from_dict(plain), tmp_path / "again", QUIET).notes == []


def test_nuslerp_without_weights_and_with_three_models_are_refused_by_the_recipe(trio):
    base, ft1, ft2 = trio
    raw = {"merge_method": "nuslerp", "models": [{"model": str(ft1), "parameters": {"weight": 1.0}},
                                                 {"model": str(ft2)}]}
    with pytest.raises(VadasmError, match="'weight' is required by 'nuslerp' for every model, missing for"):
        recipe_from_dict(raw)
    # the base needs none, and one global weight serves every model
    recipe_from_dict({**raw, "base_model": str(base), "models": [{"model": str(base)}, *raw["models"][:1],
                                                                 {"model": str(ft2), "parameters": {"weight": 2}}]})
    recipe_from_dict({"merge_method": "multislerp", "parameters": {"weight": 1.0},
                      "models": [{"model": str(ft1)}, {"model": str(ft2)}]})
    three = {"merge_method": "nuslerp", "models": [{"model": str(m), "parameters": {"weight": 1.0}}
                                                   for m in (base, ft1, ft2)]}
    with pytest.raises(VadasmError, match=r"nuslerp. merges exactly 2 model\(s\), got 3"):
        recipe_from_dict(three)


@pytest.mark.parametrize("case", ["nearswap", "ram"])
def test_row_chunked_methods_equal_the_whole_tensor_function(tmp_path, trio, monkeypatch, case):
    import vadasm.merge.tensors as tensors_module

    spec, expected_fn = CASES[case]
    base, ft1, ft2 = trio
    models = [ft1, ft2][:len(spec["params"])]
    monkeypatch.setattr(tensors_module, "CHUNK_ELEMENTS", 37)  # partial rows of vectors, single rows of matrices
    merged, _ = _merge(tmp_path, {"merge_method": case, "base_model": str(base), "parameters": spec["parameters"],
                                  "models": [{"model": str(m)} for m in models]})
    _check(merged, base, models, expected_fn)
