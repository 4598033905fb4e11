"""`slices:` recipes: layer ranges, stacking (frankenmerges), passthrough's scale, multi-source slices."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from pico_models import make_text_model
from vadasm.errors import VadasmError
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge

QUIET = MergeOptions(progress=False)
Q = "model.layers.{}.self_attn.q_proj.weight"


def _weights(folder):
    return load_file(folder / "model.safetensors")


def _slices(*slices, method="passthrough", **extra):
    return recipe_from_dict({"merge_method": method, **extra, "slices": [
        {"sources": [{"model": str(m), "layer_range": list(r), **({"parameters": p} if p else {})}
                     for m, r, p in sources]} for sources in slices]})


@pytest.fixture
def four_layer_pair(tmp_path):
    a = make_text_model(tmp_path / "a", "llama", seed=0, num_hidden_layers=4)
    b = make_text_model(tmp_path / "b", "llama", seed=1, num_hidden_layers=4)
    return a, b


def test_a_single_partial_slice_keeps_only_its_layers(tmp_path, four_layer_pair):
    a, _ = four_layer_pair
    run_merge(_slices([(a, (0, 2), None)]), tmp_path / "out", QUIET)
    merged, original = _weights(tmp_path / "out"), _weights(a)
    assert {k for k in merged if k.startswith("model.layers.")} == {
        k for k in original if k.startswith(("model.layers.0.", "model.layers.1."))}
    assert all(torch.equal(merged[k], original[k]) for k in merged)
    assert json.loads((tmp_path / "out/config.json").read_text())["num_hidden_layers"] == 2
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


def test_stacked_slices_renumber_layers_and_scale(tmp_path, four_layer_pair):
    a, b = four_layer_pair
    recipe = _slices([(a, (0, 3), None)], [(b, (1, 4), {"scale": 0.5})])
    run_merge(recipe, tmp_path / "out", QUIET)
    merged, wa, wb = _weights(tmp_path / "out"), _weights(a), _weights(b)
    for out_layer in range(3):
        assert torch.equal(merged[Q.format(out_layer)], wa[Q.format(out_layer)])
    for out_layer, in_layer in ((3, 1), (4, 2), (5, 3)):
        assert torch.equal(merged[Q.format(out_layer)], 0.5 * wb[Q.format(in_layer)])
    # mergekit's planner: embeddings from the first slice's model, final norm and LM head from the last's
    assert torch.equal(merged["model.embed_tokens.weight"], wa["model.embed_tokens.weight"])
    assert torch.equal(merged["model.norm.weight"], 0.5 * wb["model.norm.weight"])
    assert torch.equal(merged["lm_head.weight"], 0.5 * wb["lm_head.weight"])
    assert len([k for k in merged if k.startswith("model.layers.")]) == 6 * 9
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.config.num_hidden_layers == 6
    assert model.generate(torch.tensor([[1, 5, 7]]), max_new_tokens=3, min_new_tokens=3,
                          do_sample=False).shape == (1, 6)


def test_a_slice_with_several_sources_merges_them_over_its_range(tmp_path, four_layer_pair):
    a, b = four_layer_pair
    recipe = recipe_from_dict({"merge_method": "linear", "parameters": {"weight": 1.0}, "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 2]}, {"model": str(b), "layer_range": [2, 4]}],
         "parameters": {"normalize": True}}]})
    run_merge(recipe, tmp_path / "out", QUIET)
    merged, wa, wb = _weights(tmp_path / "out"), _weights(a), _weights(b)
    for k in range(2):
        assert torch.allclose(merged[Q.format(k)], (wa[Q.format(k)] + wb[Q.format(k + 2)]) / 2, atol=1e-7)
    assert Q.format(2) not in merged


def test_slice_parameters_override_the_recipe_and_sources_override_the_slice(tmp_path, four_layer_pair):
    a, b = four_layer_pair
    recipe = recipe_from_dict({"merge_method": "slerp", "base_model": str(a), "parameters": {"t": 0.5}, "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 1]}, {"model": str(b), "layer_range": [0, 1]}],
         "parameters": {"t": 1.0}},
        {"sources": [{"model": str(a), "layer_range": [1, 2]}, {"model": str(b), "layer_range": [1, 2]}]}]})
    run_merge(recipe, tmp_path / "out", QUIET)
    merged, wa, wb = _weights(tmp_path / "out"), _weights(a), _weights(b)
    assert torch.allclose(merged[Q.format(0)], wb[Q.format(0)], atol=1e-6)  # slice's t = 1
    assert not torch.allclose(merged[Q.format(1)], wb[Q.format(1)], atol=1e-3)  # recipe's t = 0.5
    assert not torch.allclose(merged[Q.format(1)], wa[Q.format(1)], atol=1e-3)


def test_layer_indexed_config_lists_follow_the_slices(tmp_path):
    model = make_text_model(tmp_path / "m", "gpt_oss")
    run_merge(_slices([(model, (1, 2), None)], [(model, (0, 2), None)]), tmp_path / "out", QUIET)
    config = json.loads((tmp_path / "out/config.json").read_text())
    assert config["num_hidden_layers"] == 3
    assert config["layer_types"] == ["full_attention", "sliding_attention", "full_attention"]
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


@pytest.mark.parametrize("slices, message", [
    ([[("a", (0, 40), None)]], r"slices\[0\].sources\[0\]: layer_range \[0, 40\] is outside .*a \(layers 0 to 4"),
    ([[("a", (3, 2), None)]], r"layer_range \[3, 2\] is outside"),
    ([[("a", (0, 2), None)], [("b", (-1, 1), None)]], r"slices\[1\].sources\[0\]: layer_range \[-1, 1\]"),
])
def test_a_range_outside_the_model_is_refused_and_nothing_written(tmp_path, four_layer_pair, slices, message):
    models = dict(zip("ab", four_layer_pair))
    recipe = _slices(*[[(models[m], r, p) for m, r, p in piece] for piece in slices])
    with pytest.raises(VadasmError, match=message):
        run_merge(recipe, tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()


def test_sources_of_unequal_length_are_refused(tmp_path, four_layer_pair):
    a, b = four_layer_pair
    recipe = recipe_from_dict({"merge_method": "linear", "slices": [{"sources": [
        {"model": str(a), "layer_range": [0, 2]}, {"model": str(b), "layer_range": [0, 3]}]}]})
    with pytest.raises(VadasmError, match=r"slices\[0\]: every source must take the same number of layers"):
        run_merge(recipe, tmp_path / "out", QUIET)


@pytest.mark.parametrize("raw, message", [
    ({"merge_method": "passthrough", "slices": [{"sources": [{"model": "a", "layer_range": [0, 1]},
                                                             {"model": "b", "layer_range": [0, 1]}]}]},
     r"slices\[0\]: merge method 'passthrough' merges exactly 1 model\(s\), got 2"),
    ({"merge_method": "linear", "slices": [{"sources": [{"model": "a", "layer_range": [0, 1]},
                                                        {"model": "a", "layer_range": [1, 2]}]}]},
     r"slices\[0\]: 'a' is a source twice"),
    ({"merge_method": "ties", "base_model": "c", "slices": [{"sources": [{"model": "a", "layer_range": [0, 1]}]}]},
     r"slices\[0\]: the base model 'c' is not among the slice's sources"),
    ({"merge_method": "passthrough", "slices": [{"sources": [
        {"model": "a", "layer_range": [0, 1], "parameters": {"scael": 2}}]}]},
     r"slices\[0\].sources\[0\].parameters: unknown parameter"),
])
def test_bad_slice_recipes_are_refused_before_loading(raw, message):
    with pytest.raises(VadasmError, match=message):
        recipe_from_dict(raw)


def test_a_layer_moved_where_the_config_describes_another_kind_is_refused(tmp_path):
    model = make_text_model(tmp_path / "m", "deepseek_v3")  # layer 0 dense (first_k_dense_replace=1), layer 1 MoE
    with pytest.raises(VadasmError, match="other tensors at output layer 0 than .*config.json describes"):
        run_merge(_slices([(model, (1, 2), None)], [(model, (0, 1), None)]), tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()
    run_merge(_slices([(model, (0, 1), None)], [(model, (1, 2), None)]), tmp_path / "ok", QUIET)  # kinds in place
    AutoModelForCausalLM.from_pretrained(tmp_path / "ok")


@pytest.mark.parametrize("new_names", [False, True])
def test_vision_language_models_stack_their_text_layers(tmp_path, new_names):
    from transformers import LlavaForConditionalGeneration

    from pico_models import make_llava, relayout_llava_to_new_names

    model = make_llava(tmp_path / "m")
    if new_names:
        relayout_llava_to_new_names(model)
    run_merge(_slices([(model, (1, 2), None)], [(model, (0, 2), None)]), tmp_path / "out", QUIET)
    merged, original = _weights(tmp_path / "out"), _weights(model)
    q = next(n for n in original if "layers.1.self_attn.q_proj" in n and "vision" not in n)
    assert torch.equal(merged[q.replace("layers.1.", "layers.0.")], original[q])
    assert torch.equal(merged[q.replace("layers.1.", "layers.2.")], original[q])
    vision = [n for n in original if "vision_tower" in n]
    assert vision and all(torch.equal(merged[n], original[n]) for n in vision)
    assert LlavaForConditionalGeneration.from_pretrained(tmp_path / "out").config.text_config.num_hidden_layers == 3


@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16", "float32"])
def test_passthrough_at_scale_one_copies_the_stored_rows(tmp_path, out_dtype):
    """The fast path (rows written as read) gives what the fp32 round trip gives, in every output dtype."""
    a = make_text_model(tmp_path / "a", "llama", seed=0, dtype=torch.bfloat16, num_hidden_layers=2)
    run_merge(_slices([(a, (0, 2), None)], dtype=out_dtype), tmp_path / "out", QUIET)
    merged, original = _weights(tmp_path / "out"), _weights(a)
    assert merged.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(merged[name], tensor.float().to(merged[name].dtype)), name
        assert merged[name].dtype == getattr(torch, out_dtype)


def test_passthrough_refuses_a_nan_in_a_copied_tensor(tmp_path):
    a = make_text_model(tmp_path / "a", "llama", seed=0, dtype=torch.bfloat16, num_hidden_layers=2)
    weights = _weights(a)
    weights[Q.format(1)][3, 5] = float("nan")
    save_file(weights, a / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(VadasmError, match=r"model\.safetensors: tensor 'model\.layers\.1\.self_attn\.q_proj.*NaN"):
        run_merge(_slices([(a, (0, 2), None)]), tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()
