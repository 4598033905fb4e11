"""`merge_method: regmean` from a recipe: each model run on its own calibration data, linear layers
solved from the Grams, every other tensor averaged by weight; bad calibration refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from fuzz_cases import Case, run_case
from pico_models import make_text_recipient, perturbed_copy
from vadasm.errors import VadasmError
from vadasm.graft.grams import calibration_items, linear_input_grams
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge
from vadasm.methods.regmean import regmean

QUIET = MergeOptions(progress=False)
WORDS = [f"w{i}" for i in range(91)]
LINEAR = "model.layers.1.mlp.down_proj.weight"
NORM = "model.layers.0.input_layernorm.weight"


def write_items(path, first_word: int, count: int = 4):
    path.write_text("".join(json.dumps({"text": f"w{first_word + i} w{first_word + 2 * i} w{first_word + 1}",
                                        "answer": f"w{first_word + 3}"}) + "\n" for i in range(count)))
    return path


@pytest.fixture
def pair(tmp_path):
    """Two tiny Llama 'fine-tunes' with tokenizers, and a calibration file for each (different words)."""
    a = make_text_recipient(tmp_path / "a", words=WORDS)
    b = perturbed_copy(a, tmp_path / "b", scale=0.05, seed=1)
    for tokenizer_file in a.glob("tok*"):
        shutil.copy(tokenizer_file, b / tokenizer_file.name)
    return a, b, write_items(tmp_path / "a.jsonl", 10), write_items(tmp_path / "b.jsonl", 50)


def regmean_recipe(entries, **params) -> dict:
    return {"merge_method": "regmean", "models": [
        {"model": str(model), "parameters": {"calibration": str(data), **extra}} for model, data, extra in entries],
        "parameters": {"calibration_samples": 4, **params}}


def test_regmean_of_a_model_with_its_copy_is_the_model(pair, tmp_path):
    a, _, data_a, data_b = pair
    copy = shutil.copytree(a, tmp_path / "a_copy")
    recipe = recipe_from_dict(regmean_recipe([(a, data_a, {}), (copy, data_b, {"weight": 2.0})], alpha=1.0))
    result = run_merge(recipe, tmp_path / "out", QUIET)
    merged, original = load_file(tmp_path / "out" / "model.safetensors"), load_file(a / "model.safetensors")
    assert merged.keys() == original.keys() and result.merged == len(original)
    for name, tensor in original.items():
        assert torch.allclose(merged[name], tensor, atol=1e-5), name
    assert "regmean: 14 linear weight(s) solved from the Grams" in result.notes[-1]


def test_linear_layers_are_solved_from_each_models_grams_and_the_rest_averaged(pair, tmp_path):
    a, b, data_a, data_b = pair
    recipe = recipe_from_dict(regmean_recipe([(a, data_a, {}), (b, data_b, {"weight": 3.0})], alpha=0.5))
    run_merge(recipe, tmp_path / "out", QUIET)
    out, wa, wb = (load_file(m / "model.safetensors") for m in (tmp_path / "out", a, b))
    gram_a = linear_input_grams(a, calibration_items(str(data_a), 4), progress=False)
    gram_b = linear_input_grams(b, calibration_items(str(data_b), 4), progress=False)
    key = LINEAR.removeprefix("model.")
    expected = regmean([wa[LINEAR], wb[LINEAR]], [gram_a[key], gram_b[key]], model_weight=[1.0, 3.0], alpha=0.5)
    assert torch.allclose(out[LINEAR], expected, atol=1e-5)
    assert not torch.allclose(out[LINEAR], (wa[LINEAR] + 3 * wb[LINEAR]) / 4, atol=1e-4)  # not the average
    for name in (NORM, "model.embed_tokens.weight", "lm_head.weight"):
        assert torch.allclose(out[name], (wa[name] + 3 * wb[name]) / 4, atol=1e-6), name


def test_a_frankenmerge_slice_uses_each_sources_own_layer_grams(pair, tmp_path):
    a, b, data_a, data_b = pair
    recipe = recipe_from_dict({
        "merge_method": "regmean",
        "slices": [{"sources": [{"model": str(a), "layer_range": [0, 1], "parameters": {"calibration": str(data_a)}},
                                {"model": str(b), "layer_range": [1, 2], "parameters": {"calibration": str(data_b)}}]}],
        "parameters": {"calibration_samples": 4},
    })
    run_merge(recipe, tmp_path / "out", QUIET)
    out, wa, wb = (load_file(m / "model.safetensors") for m in (tmp_path / "out", a, b))
    gram_a = linear_input_grams(a, calibration_items(str(data_a), 4), progress=False)
    gram_b = linear_input_grams(b, calibration_items(str(data_b), 4), progress=False)
    name_a, name_b = "layers.0.self_attn.q_proj.weight", "layers.1.self_attn.q_proj.weight"
    expected = regmean([wa["model." + name_a], wb["model." + name_b]], [gram_a[name_a], gram_b[name_b]], alpha=0.9)
    assert torch.allclose(out["model." + name_a], expected, atol=1e-5)
    assert "model.layers.1.self_attn.q_proj.weight" not in out  # one output layer


def test_a_recipe_file_runs_through_the_cli_with_the_calibration_flag(pair, tmp_path):
    a, b, data_a, data_b = pair
    recipe = tmp_path / "regmean.yaml"
    recipe.write_text(f"merge_method: regmean\nmodels:\n  - model: {a}\n  - model: {b}\n"
                      "parameters: {alpha: 0.8, calibration_samples: 4}\n")
    case = Case(["merge", str(recipe), str(tmp_path / "out"), "--calibration", str(data_a),
                 "--calibration", str(data_b), "--quiet"], [a, b, data_a, data_b], tmp_path / "out", expect="succeed")
    outcome = run_case(case)
    assert outcome.problems == []
    provenance = json.loads((tmp_path / "out" / "vadasm_config.json").read_text())
    assert [m["parameters"]["calibration"] for m in provenance["recipe"]["models"]] == [str(data_a), str(data_b)]
    assert any("Grams of 14 linear layer(s) from 4 item(s)" in note for note in provenance["notes"])


def test_calibration_for_every_model_from_the_top_level_parameters(pair, tmp_path):
    a, b, data_a, _ = pair
    recipe = recipe_from_dict({"merge_method": "regmean", "models": [{"model": str(a)}, {"model": str(b)}],
                               "parameters": {"calibration": str(data_a), "calibration_samples": 4}})
    result = run_merge(recipe, tmp_path / "out", QUIET)
    assert sum(f"from 4 item(s) of {data_a}" in note for note in result.notes) == 2


def refused(argv, inputs, output, mention):
    outcome = run_case(Case(argv, inputs, output, mention=mention))
    assert outcome.problems == [], outcome.stderr


def test_missing_calibration_is_one_line_exit_2(pair, tmp_path):
    a, b, data_a, data_b = pair
    out = tmp_path / "out"
    flags = ["merge", str(out), "--method", "regmean", "--model", str(a), "--model", str(b), "--quiet"]
    refused(flags, [a, b], out, "'regmean' needs calibration data for")
    refused(flags + ["--calibration", str(tmp_path / "nowhere.jsonl")], [a, b], out, "nowhere.jsonl")
    refused(flags + ["--calibration", str(data_a), "--calibration", str(data_b), "--calibration", str(data_a)],
            [a, b], out, "--calibration: give one value or one per --model")


def test_too_few_calibration_items_is_one_line_exit_2(pair, tmp_path):
    a, b, data_a, data_b = pair
    out, short = tmp_path / "out", write_items(tmp_path / "short.jsonl", 20, count=2)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    for data, mention in ((short, "short.jsonl: 2 calibration item(s), but calibration_samples is 4"),
                          (empty, "empty.jsonl: no calibration records")):
        argv = ["merge", str(out), "--method", "regmean", "--model", str(a), "--model", str(b), "--calibration",
                str(data_a), "--calibration", str(data), "--param", "calibration_samples=4", "--quiet"]
        refused(argv, [a, b, data], out, mention)


def test_calibration_settings_that_cannot_mean_one_data_set_are_refused_at_load(pair):
    a, b, data_a, data_b = pair
    gradient = regmean_recipe([(a, data_a, {}), (b, data_b, {})])
    gradient["models"][0]["parameters"]["calibration"] = [str(data_a), str(data_b)]
    with pytest.raises(VadasmError, match=r"models\[0\].parameters.calibration: one JSONL file or built-in task"):
        recipe_from_dict(gradient)
    per_model_samples = regmean_recipe([(a, data_a, {"calibration_samples": 2}), (b, data_b, {})])
    with pytest.raises(VadasmError, match="'calibration_samples' is a global parameter"):
        recipe_from_dict(per_model_samples)
    with pytest.raises(VadasmError, match="'weight' must be > 0"):
        recipe_from_dict(regmean_recipe([(a, data_a, {"weight": 0}), (b, data_b, {})]))


def test_align_and_lora_references_are_refused_before_anything_is_written(pair, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    a, b, data_a, data_b = pair
    recipe = recipe_from_dict(regmean_recipe([(a, data_a, {}), (b, data_b, {})]))
    with pytest.raises(VadasmError, match="--align cannot be combined with 'regmean'"):
        run_merge(recipe, tmp_path / "out", MergeOptions(progress=False, align="weights"))
    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(a), LoraConfig(r=2, target_modules=["q_proj"])
                   ).save_pretrained(adapter)
    recipe = recipe_from_dict(regmean_recipe([(a, data_a, {}), (f"{b}+{adapter}", data_b, {})]))
    with pytest.raises(VadasmError, match=r"/adapter: 'regmean' .* cannot yet run a MODEL\+LORA reference"):
        run_merge(recipe, tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()


def test_a_second_merge_of_the_same_models_reuses_their_grams(pair, tmp_path, monkeypatch):
    import vadasm.graft.grams as grams_module

    a, b, data_a, data_b = pair
    runs = []
    measure = grams_module.linear_input_grams
    monkeypatch.setattr(grams_module, "linear_input_grams", lambda *args, **kw: runs.append(args[0]) or measure(
        *args, **kw))
    for alpha in (0.9, 0.5):
        run_merge(recipe_from_dict(regmean_recipe([(a, data_a, {}), (b, data_b, {})], alpha=alpha)),
                  tmp_path / f"out{alpha}", QUIET)
    assert runs == [str(a), str(b)]
    first, second = (load_file(tmp_path / f"out{alpha}" / "model.safetensors")[LINEAR] for alpha in (0.9, 0.5))
    assert not torch.allclose(first, second, atol=1e-5)  # alpha still changes the solve
