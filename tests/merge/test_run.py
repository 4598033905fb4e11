import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from pico_models import TEXT_CONFIGS, make_llava, make_text_model, perturbed_copy
from vadasm.errors import VadasmError
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge

QUIET = MergeOptions(progress=False)


def _weights(folder):
    return load_file(folder / "model.safetensors")


def _ties(base, *models, **params):
    return recipe_from_dict({
        "merge_method": "ties", "base_model": str(base),
        "models": [{"model": str(m), "parameters": {"weight": 0.5, "density": 0.5}} for m in models],
        "parameters": params,
    })


@pytest.mark.parametrize("model_type", sorted(TEXT_CONFIGS))
def test_merge_of_each_architecture_loads_and_generates(tmp_path, model_type):
    base = make_text_model(tmp_path / "base", model_type)
    ft1 = perturbed_copy(base, tmp_path / "ft1", seed=1)
    ft2 = perturbed_copy(base, tmp_path / "ft2", seed=2)
    out = tmp_path / "merged"
    result = run_merge(_ties(base, ft1, ft2), out, QUIET)
    buffers = [t for t in result.not_merged if t.reason == "buffer, not a weight"]  # Apertus' xIELU constants
    assert result.merged + len(buffers) == result.tensors
    model = AutoModelForCausalLM.from_pretrained(out)
    generated = model.generate(torch.tensor([[1, 5, 7]]), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 7)
    merged, original = _weights(out), _weights(base)
    assert merged.keys() == original.keys()
    assert any(not torch.equal(merged[k], original[k]) for k in merged)


def test_linear_merge_of_a_model_with_itself_is_that_model(tmp_path, llama_trio):
    base, _, _ = llama_trio
    twin = shutil.copytree(base, tmp_path / "twin")  # one folder listed twice is refused as a likely mistake
    recipe = recipe_from_dict({"merge_method": "linear", "models": [
        {"model": str(base), "parameters": {"weight": 0.3}}, {"model": str(twin), "parameters": {"weight": 0.7}}]})
    run_merge(recipe, tmp_path / "out", QUIET)
    merged, original = _weights(tmp_path / "out"), _weights(base)
    for name in original:
        assert torch.allclose(merged[name], original[name], atol=1e-6), name


def test_task_arithmetic_with_weight_zero_is_the_base(tmp_path, llama_trio):
    base, ft1, ft2 = llama_trio
    recipe = recipe_from_dict({"merge_method": "task_arithmetic", "base_model": str(base), "models": [
        {"model": str(ft1), "parameters": {"weight": 0.0}}, {"model": str(ft2), "parameters": {"weight": 0.0}}]})
    run_merge(recipe, tmp_path / "out", QUIET)
    merged, original = _weights(tmp_path / "out"), _weights(base)
    assert all(torch.equal(merged[k], original[k]) for k in original)


def test_same_inputs_and_seed_give_byte_identical_files(tmp_path, llama_trio):
    base, ft1, ft2 = llama_trio
    raw = {"merge_method": "dare_ties", "base_model": str(base), "seed": 3,
           "models": [{"model": str(m), "parameters": {"weight": 0.5, "density": 0.3}} for m in (ft1, ft2)]}
    run_merge(recipe_from_dict(raw), tmp_path / "a", QUIET)
    run_merge(recipe_from_dict(raw), tmp_path / "b", QUIET)
    run_merge(recipe_from_dict({**raw, "seed": 4}), tmp_path / "c", QUIET)
    for name in ("model.safetensors", "config.json", "vadasm_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/model.safetensors").read_bytes() != (tmp_path / "c/model.safetensors").read_bytes()


def test_gradient_parameters_follow_the_layers(tmp_path, llama_trio):
    base, ft1, _ = llama_trio
    # t goes 0 -> 1 across the 2 layers: layer 0 is the base, layer 1 the other model; non-layer tensors t=0
    recipe = recipe_from_dict({"merge_method": "slerp", "base_model": str(base),
                               "models": [{"model": str(base)}, {"model": str(ft1)}],
                               "parameters": {"t": [0.0, 1.0]}})
    run_merge(recipe, tmp_path / "out", QUIET)
    merged, b, f = _weights(tmp_path / "out"), _weights(base), _weights(ft1)
    q = "model.layers.{}.self_attn.q_proj.weight"
    assert torch.allclose(merged[q.format(0)], b[q.format(0)], atol=1e-6)
    assert torch.allclose(merged[q.format(1)], f[q.format(1)], atol=1e-6)
    assert torch.allclose(merged["model.embed_tokens.weight"], b["model.embed_tokens.weight"], atol=1e-6)


def test_filtered_parameters_and_excluded_norms_are_reported(tmp_path, llama_trio):
    base, ft1, _ = llama_trio
    recipe = recipe_from_dict({"merge_method": "slerp", "base_model": str(base), "exclude_norms": True,
                               "models": [{"model": str(ft1)}],
                               "parameters": {"t": [{"filter": "mlp", "value": 1.0}, {"value": 0.0}]}})
    result = run_merge(recipe, tmp_path / "out", QUIET)
    merged, b, f = _weights(tmp_path / "out"), _weights(base), _weights(ft1)
    up = "model.layers.0.mlp.up_proj.weight"
    assert torch.allclose(merged[up], f[up], atol=1e-6)
    assert torch.allclose(merged["model.layers.0.self_attn.q_proj.weight"],
                          b["model.layers.0.self_attn.q_proj.weight"], atol=1e-6)
    norms = [a for a in result.not_merged if "norm" in a.name]
    assert len(norms) == 5 and all(a.action == "copy_base" and "exclude_norms" in a.reason for a in norms)
    provenance = json.loads((tmp_path / "out/vadasm_config.json").read_text())
    assert len(provenance["not_merged"]) == 5 and len(provenance["inputs"]) == 2


def test_larger_vocabulary_is_truncated_and_reported(tmp_path):
    base = make_text_model(tmp_path / "base", "llama")
    big = make_text_model(tmp_path / "big", "llama", seed=1, vocab_size=100)
    result = run_merge(_ties(base, big), tmp_path / "out", QUIET)
    truncated = {a.name for a in result.not_merged if a.action == "truncate_then_merge"}
    assert truncated == {"model.embed_tokens.weight", "lm_head.weight"}
    assert _weights(tmp_path / "out")["lm_head.weight"].shape == (96, 32)


def test_output_dtype_and_sharding(tmp_path, llama_trio):
    base, ft1, _ = llama_trio
    recipe = recipe_from_dict({"merge_method": "linear", "dtype": "bfloat16",
                               "models": [{"model": str(base)}, {"model": str(ft1)}]})
    run_merge(recipe, tmp_path / "out", MergeOptions(shard_size="20KB", progress=False))
    index = json.loads((tmp_path / "out/model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_vision_language_models_of_one_architecture_merge(tmp_path):
    a = make_llava(tmp_path / "a", seed=0)
    b = make_llava(tmp_path / "b", seed=1)
    recipe = recipe_from_dict({"merge_method": "linear", "models": [{"model": str(a)}, {"model": str(b)}]})
    result = run_merge(recipe, tmp_path / "out", QUIET)
    assert result.architecture == "llava" and result.merged == result.tensors
    from transformers import LlavaForConditionalGeneration
    LlavaForConditionalGeneration.from_pretrained(tmp_path / "out")


@pytest.mark.parametrize("defect, message", [
    ("shape", r"ft1/config.json: tensor 'model.layers.0.mlp.up_proj.weight' has shape \[40, 32\], but this config "
              r"makes transformers expect \[48, 32\]"),
    ("missing_tensor", r"ft1: tensor 'model.norm.weight' is missing"),
    ("nan", r"ft1/model.safetensors: tensor 'model.norm.weight' contains NaN or Inf"),
    ("architecture", r"model_type 'mistral' differs from 'llama'"),
    ("output_exists", r"output already exists; pass --force"),
    ("missing_model", r"model folder not found"),
])
def test_bad_inputs_fail_clearly_and_write_nothing(tmp_path, llama_trio, defect, message):
    base, ft1, ft2 = llama_trio
    out = tmp_path / "out"
    weights = load_file(ft1 / "model.safetensors")
    if defect == "shape":
        weights["model.layers.0.mlp.up_proj.weight"] = torch.zeros(40, 32)
        save_file(weights, ft1 / "model.safetensors")
    elif defect == "missing_tensor":
        del weights["model.norm.weight"]
        save_file(weights, ft1 / "model.safetensors")
    elif defect == "nan":
        weights["model.norm.weight"][0] = float("nan")
        save_file(weights, ft1 / "model.safetensors")
    elif defect == "architecture":
        config = json.loads((ft1 / "config.json").read_text())
        config["model_type"] = "mistral"
        (ft1 / "config.json").write_text(json.dumps(config))
    elif defect == "output_exists":
        out.mkdir()
        (out / "precious").write_text("keep")
    elif defect == "missing_model":
        ft2 = tmp_path / "does-not-exist"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(VadasmError, match=message):
        run_merge(_ties(base, ft1, ft2), out, QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if defect == "output_exists":
        assert (out / "precious").read_text() == "keep"


@pytest.mark.parametrize("raw, message", [
    ({"merge_method": "magic", "models": [{"model": "x"}]}, "unknown merge method 'magic'"),
    ({"merge_method": "ties", "models": [{"model": "x"}]}, "needs a base_model"),
    ({"merge_method": "ties", "base_model": "b", "models": [{"model": "x", "parameters": {"densty": 0.5}}]},
     r"unknown parameter\(s\) \['densty'\]"),
    ({"merge_method": "slerp", "base_model": "b", "models": [{"model": "x"}, {"model": "y"}]}, "exactly 1 other"),
    ({"merge_method": "linear", "models": [{"model": "x"}], "tokenizer": {"source": "union", "sorce": 1}},
     "Extra inputs"),
])
def test_bad_recipes_are_refused_before_loading(raw, message):
    with pytest.raises(VadasmError, match=message):
        recipe_from_dict(raw)
