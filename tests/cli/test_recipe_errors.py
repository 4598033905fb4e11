"""`vadasm merge RECIPE OUT` with a bad recipe: one line naming the file and the key, exit 2, nothing written.

One case per cause of issue 18 item 5, run in this process through the real entry point with the
whole promise checked (`fuzz_cases.run_case`). The models named do not exist: every recipe here
must be refused before any model is opened.
"""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from fuzz_cases import Case, run_case


def recipe(method: str = "ties", weights: tuple[str, str] = ("0.5", "0.5"), model_params: str = "",
           global_params: str = "", models: tuple[str, str] = ("ft1", "ft2")) -> str:
    lines = [f"merge_method: {method}", "base_model: base", "models:"]
    for model, weight in zip(models, weights):
        lines += [f"  - model: {model}", f"    parameters: {{weight: {weight}{model_params}}}"]
    return "\n".join(lines + [f"parameters: {{{global_params}}}", ""])


BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]) + "\nmerge_method: *i\n"

CAUSES = {
    "alias_bomb": (BOMB, "more than 64 aliases"),
    "oversized": (recipe() + "#" * 1_100_000 + "\n", "a recipe may be at most 1 MB"),
    "non_utf8": (recipe().encode() + b"# \xff\xfe\n", "not UTF-8"),
    "duplicate_key": (recipe() + "merge_method: linear\n", "key 'merge_method' appears twice"),
    "not_a_mapping": ("- merge_method: linear\n", "a recipe is a YAML mapping"),
    "weight_string": (recipe(weights=('"abc"', "0.5")), "models[0].parameters.weight: 'weight' must be a number"),
    "weight_null": (recipe(weights=("null", "0.5")), "models[0].parameters.weight: 'weight' must be a number"),
    "weight_overflow": (recipe(weights=("1e400", "0.5")), "models[0].parameters.weight: 'weight' must be finite"),
    "weight_nan": (recipe(weights=("0.5", ".nan")), "models[1].parameters.weight: 'weight' must be finite"),
    "weight_inf": (recipe(weights=("-.inf", "0.5")), "models[0].parameters.weight: 'weight' must be finite"),
    "gradient_nan": (recipe(weights=("[0.5, .nan]", "0.5")), "models[0].parameters.weight[1]: 'weight' must be"),
    "lambda_nan": (recipe(global_params="lambda: .nan"), "parameters.lambda: 'lambda' must be finite"),
    "lambda_filter_string": (recipe(global_params='lambda: [{filter: mlp, value: "x"}]'),
                             "parameters.lambda[0].value: 'lambda' must be a number"),
    "normalize_word": (recipe(global_params="normalize: maybe"), "parameters.normalize: 'normalize' must be true"),
    "density_negative": (recipe(model_params=", density: -0.1"), "parameters.density: 'density' must be > 0"),
    "density_above_one": (recipe(model_params=", density: 1.5"), "parameters.density: 'density' must be <= 1"),
    "density_inf": (recipe(model_params=", density: .inf"), "parameters.density: 'density' must be finite"),
    "dare_density_zero": (recipe("dare_ties", model_params=", density: 0"), "'density' must be > 0"),
    "slerp_t_five": ("merge_method: slerp\nbase_model: base\nmodels: [{model: base}, {model: ft1}]\n"
                     "parameters: {t: 5}\n", "parameters.t: 't' must be <= 1"),
    "same_model_twice": (recipe(models=("ft1", "ft1")), "models[1]: model 'ft1' is listed twice"),
    "all_zero_linear": (recipe("linear", weights=("0", "0")), "the weights sum to 0"),
    "global_parameter_per_model": (recipe(model_params=", lambda: 2"), "'lambda' is a global parameter"),
    "unknown_key": (recipe(model_params=", densty: 0.5"), "unknown parameter(s) ['densty']"),
}


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_a_bad_recipe_is_one_line_naming_file_and_key(tmp_path, cause):
    text, message = CAUSES[cause]
    path = tmp_path / "recipe.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    outcome = run_case(Case(["merge", str(path), str(tmp_path / "out"), "--quiet"], [path], tmp_path / "out",
                            mention=message))
    assert outcome.problems == [], (outcome.problems, outcome.stderr, outcome.traceback)
    assert outcome.stderr.startswith(f"error: {path}: ") and len(outcome.stderr) < 320, outcome.stderr


@pytest.mark.parametrize("flags, message", [
    (["--method", "linear", "--weight", "nan"], "flags: models[0].parameters.weight: 'weight' must be finite"),
    (["--method", "dare_ties", "--density", "0"], "'density' must be > 0"),
    (["--method", "ties", "--param", "lambda=inf"], "flags: parameters.lambda: 'lambda' must be finite"),
    (["--method", "ties", "--param", "normalize=perhaps"], "'normalize' must be true or false"),
])
def test_bad_parameter_flags_are_one_line(tmp_path, flags, message):
    argv = ["merge", str(tmp_path / "out"), "--base", "base", "--model", "ft1", "--model", "ft2", *flags]
    outcome = run_case(Case(argv, [], tmp_path / "out", mention=message))
    assert outcome.problems == [], (outcome.problems, outcome.stderr, outcome.traceback)


def test_parameter_flags_are_typed_by_the_method():
    from vadasm.cli.merge_cmd import RecipeFlags
    from vadasm.merge import recipe_from_dict

    raw = RecipeFlags(method="linear", model=["a", "b"], param=["normalize=1"]).apply({})
    assert recipe_from_dict(raw, source="flags").parameters == {"normalize": True}
    raw = RecipeFlags(method="ties", base="b", model=["x", "y"], weight=[0.5],
                      param=["lambda=2", "normalize=off"]).apply({})
    assert recipe_from_dict(raw, source="flags").parameters == {"lambda": 2.0, "normalize": False}


def test_checked_values_reach_the_method_as_their_types(tmp_path, llama_trio):
    """normalize: "off" means False and quoted weights are numbers: the output is ft1 + ft2, not their mean."""
    _, ft1, ft2 = llama_trio
    path = tmp_path / "recipe.yaml"
    path.write_text(f"merge_method: linear\nmodels:\n  - {{model: {ft1}, parameters: {{weight: '1'}}}}\n"
                    f"  - {{model: {ft2}, parameters: {{weight: \"1.0\"}}}}\nparameters: {{normalize: 'off'}}\n")
    outcome = run_case(Case(["merge", str(path), str(tmp_path / "out"), "--quiet"], [path, ft1, ft2],
                            tmp_path / "out", expect="succeed"))
    assert outcome.problems == [], (outcome.problems, outcome.stderr, outcome.traceback)
    merged, a, b = (load_file(p / "model.safetensors") for p in (tmp_path / "out", ft1, ft2))
    name = "model.layers.1.mlp.up_proj.weight"
    assert (merged[name] - (a[name] + b[name])).abs().max() < 1e-6
