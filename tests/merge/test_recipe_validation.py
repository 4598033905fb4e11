"""Recipe loading and validation (issue 18, item 5): the bounded YAML reader and typed parameters."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from vadasm.errors import VadasmError
from vadasm.merge import read_recipe_yaml, recipe_from_dict, resolve_setting
from vadasm.merge.recipe_params import check_setting, sample_points
from vadasm.merge.recipe_yaml import MAX_BYTES, RecipeYamlError, check_expanded_size, load_yaml_text
from vadasm.methods.registry import DENSITY, WEIGHT, Param

NORMALIZE = Param("normalize", True, kind=bool)
T = Param("t", None, low=0.0, high=1.0)

# 551 bytes: nine levels of nine aliases, ~10^8 strings once expanded.
ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
) + "\n"


def write(tmp_path: Path, content: str | bytes, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def refused(path: Path, *fragments: str) -> str:
    """read_recipe_yaml's one-line error for this file, checked to name it and hold the fragments."""
    with pytest.raises(VadasmError) as caught:
        read_recipe_yaml(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 300, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- the YAML reader ----------------------------------------------------------------------------

def test_an_alias_bomb_fails_fast_with_a_short_line(tmp_path):
    assert len(ALIAS_BOMB) < 600
    started = time.perf_counter()
    refused(write(tmp_path, ALIAS_BOMB), "line 9: more than 64 aliases")
    assert time.perf_counter() - started < 1.0


def test_a_bomb_within_the_alias_budget_fails_on_its_expanded_size(tmp_path):
    levels = ["l0: &l0 [x, x]"] + [f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]" for i in range(1, 21)]  # 40 aliases, 2^21
    started = time.perf_counter()
    refused(write(tmp_path, "\n".join(levels) + "\n"), "aliases expand to more than 20,000 values")
    assert time.perf_counter() - started < 1.0


def test_an_alias_that_contains_itself_is_refused(tmp_path):
    refused(write(tmp_path, "merge_method: linear\nmodels: &m [{model: a}, *m]\n"), "line 2", "contains it")


def test_more_aliases_than_the_budget_are_refused_at_the_first_extra(tmp_path):
    uses = "\n".join(f"k{i}: *w" for i in range(70))
    refused(write(tmp_path, f"w: &w 1\n{uses}\n"), "line 66", "more than 64 aliases")


def test_aliases_and_merge_keys_within_the_limits_still_work(tmp_path):
    text = ("defaults: &d {weight: 0.5, density: 0.7}\n"
            "models:\n  - {model: a, parameters: *d}\n  - {model: b, parameters: {<<: *d, weight: 0.2}}\n")
    raw = read_recipe_yaml(write(tmp_path, text))
    assert raw["models"][0]["parameters"] == {"weight": 0.5, "density": 0.7}
    assert raw["models"][1]["parameters"] == {"weight": 0.2, "density": 0.7}


def test_a_duplicate_key_is_refused_with_its_lines(tmp_path):
    text = "merge_method: ties\nmodels:\n  - model: a\n    parameters: {weight: 1}\nmerge_method: linear\n"
    refused(write(tmp_path, text), "line 5", "'merge_method' appears twice", "first on line 1")


def test_a_duplicate_key_inside_a_flow_mapping_is_refused(tmp_path):
    refused(write(tmp_path, "models: [{model: a, parameters: {weight: 1, weight: 2}}]\n"), "'weight' appears twice")


def test_a_non_utf8_file_is_one_line(tmp_path):
    refused(write(tmp_path, b"merge_method: linear\n# caf\xe9\n"), "not UTF-8", "offset 26")


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    assert read_recipe_yaml(write(tmp_path, b"\xef\xbb\xbfmerge_method: linear\n")) == {"merge_method": "linear"}


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path):
    path = write(tmp_path, "merge_method: linear\n" + "#" * MAX_BYTES + "\n")
    started = time.perf_counter()
    refused(path, "1 MB")
    assert time.perf_counter() - started < 0.5


def test_deep_nesting_is_refused(tmp_path):
    refused(write(tmp_path, "a: " + "[" * 500 + "]" * 500 + "\n"), "nested deeper than 64")


@pytest.mark.parametrize("text", ["- merge_method: linear\n", "just words\n", "", "42\n"])
def test_anything_but_a_mapping_is_refused(tmp_path, text):
    refused(write(tmp_path, text), "a recipe is a YAML mapping")


def test_malformed_yaml_names_line_and_column(tmp_path):
    refused(write(tmp_path, "merge_method: linear\nmodels: [a, b\nparameters: {}\n"), "not valid YAML at line 3")


@pytest.mark.parametrize("value, problem", [
    ("!!int x", "line 2: cannot read a value: invalid literal for int()"),
    ("2024-13-45", "line 2: cannot read a value: month must be in 1..12"),
    ("1" * 5000, "line 2: cannot read a value: Exceeds the limit (4300 digits)"),
])
def test_a_value_its_tag_cannot_build_is_one_line(tmp_path, value, problem):
    refused(write(tmp_path, f"merge_method: linear\nseed: {value}\n"), problem)


def test_python_tags_are_not_constructed(tmp_path):
    refused(write(tmp_path, "merge_method: !!python/object/apply:os.system [echo hi]\n"), "could not determine")


def test_expanded_size_counts_every_value_once_per_use():
    # mapping + key 'a' + sequence + 2 items = 5; each alias use counts the anchored list again (3 each).
    assert check_expanded_size(load_yaml_node("a: [1, 2]\n")) == 5
    assert check_expanded_size(load_yaml_node("a: &x [1, 2]\nb: *x\nc: *x\n")) == 1 + 3 + 3 * 3
    with pytest.raises(RecipeYamlError, match="more than 10 values"):
        check_expanded_size(load_yaml_node("a: &x [1, 2, 3, 4]\nb: [*x, *x]\n"), limit=10)


def load_yaml_node(text: str):
    import yaml

    return yaml.compose(text, Loader=yaml.SafeLoader)


def test_text_loader_gives_plain_data():
    assert load_yaml_text("a: [1, 2.5, true, x]\n") == {"a": [1, 2.5, True, "x"]}


# --- one setting: scalar, gradient, filters --------------------------------------------------------

@pytest.mark.parametrize("param, setting, expected", [
    (WEIGHT, 0.5, 0.5),
    (WEIGHT, 2, 2.0),
    (WEIGHT, "0.25", 0.25),  # mergekit reads numeric strings as numbers
    (WEIGHT, "1e-3", 0.001),  # YAML 1.1 loads 1e-3 as a string
    (NORMALIZE, "false", False),
    (NORMALIZE, "True", True),
    (NORMALIZE, 0, False),
    (DENSITY, [0.2, 1], [0.2, 1.0]),
    (DENSITY, {"filter": "mlp", "value": 0.5}, [{"filter": "mlp", "value": 0.5}]),
    (T, [{"filter": "self_attn", "value": [0, "0.5", 1]}, {"value": 0.3}],
     [{"filter": "self_attn", "value": [0.0, 0.5, 1.0]}, {"value": 0.3}]),
])
def test_settings_are_converted_to_the_declared_type(param, setting, expected):
    checked = check_setting(param, setting, "parameters.x")
    assert checked == expected
    assert type(resolve_setting(checked, "model.layers.0.mlp.up_proj.weight", 0.0)) is param.kind


@pytest.mark.parametrize("param, setting, problem", [
    (WEIGHT, "abc", "must be a number"),
    (WEIGHT, None, "must be a number"),
    (WEIGHT, float("inf"), "must be finite"),
    (WEIGHT, "1e400", "must be finite"),
    (WEIGHT, float("nan"), "must be finite"),
    (WEIGHT, True, "must be a number"),
    (NORMALIZE, "maybe", "must be true or false"),
    (NORMALIZE, 2, "must be true or false"),
    (DENSITY, -0.1, "must be > 0"),
    (DENSITY, 0, "must be > 0"),
    (DENSITY, 1.5, "must be <= 1"),
    (DENSITY, [0.5, float("inf")], "[1]: 'density' must be finite"),
    (T, 5, "must be <= 1"),
    (T, [], "empty list"),
    (T, [[0.1, 0.2]], "[0]: a list holds either plain values"),
    (T, [{"filter": "mlp"}], "no 'value'"),
    (T, {"filter": "mlp", "value": 0.5, "weight": 1}, "unknown key(s)"),
    (T, {"filter": 3, "value": 0.5}, ".filter: must be a piece of a tensor name"),
    (T, {"value": {"value": 0.5}}, ".value: a condition's value is a value or a gradient"),
    (T, [{"value": 2}], "[0].value: 't' must be <= 1"),
])
def test_bad_leaves_are_refused_with_their_key_path(param, setting, problem):
    with pytest.raises(ValueError) as caught:
        check_setting(param, setting, "parameters.x")
    assert str(caught.value).startswith("parameters.x") and problem in str(caught.value), str(caught.value)


def test_an_integer_beyond_any_float_is_refused_without_overflow():
    for value, bits in ((10**400, 1329), (-(16**5000), 20001)):  # the second is too long even to print
        with pytest.raises(ValueError, match=rf"parameters.weight: 'weight' is too large \({bits}-bit integer\)"):
            check_setting(WEIGHT, value, "parameters.weight")


def test_an_echoed_value_is_capped():
    with pytest.raises(ValueError) as caught:
        check_setting(WEIGHT, "x" * 100_000, "parameters.weight")
    assert len(str(caught.value)) < 250


def test_sample_points_are_filters_and_gradient_breakpoints():
    names, ts = sample_points([[1, 2, 3], [{"filter": "mlp", "value": [0, 1]}, {"filter": "*", "value": 2}], 0.5])
    assert names == ["", "mlp"]
    assert ts == [0.0, 0.5, 1.0]


# --- whole recipes ---------------------------------------------------------------------------------

def linear(*weights, **global_params) -> dict:
    return {"merge_method": "linear", "parameters": global_params,
            "models": [{"model": f"m{i}", "parameters": {"weight": w}} for i, w in enumerate(weights)]}


def ties(model_params: dict | None = None, **global_params) -> dict:
    return {"merge_method": "ties", "base_model": "b", "parameters": global_params,
            "models": [{"model": "x", "parameters": dict(model_params or {})}, {"model": "y"}]}


def test_checked_values_are_what_the_recipe_holds():
    recipe = recipe_from_dict(ties({"weight": "0.5", "density": [0.3, "0.9"]}, normalize="false", **{"lambda": 2}))
    assert recipe.parameters == {"normalize": False, "lambda": 2.0}
    assert recipe.models[0].parameters == {"weight": 0.5, "density": [0.3, 0.9]}
    assert recipe.parameters["normalize"] is False


@pytest.mark.parametrize("raw, message", [
    (ties({"weight": "abc"}), "recipe: models[0].parameters.weight: 'weight' must be a number, got 'abc'"),
    (ties(**{"lambda": math.nan}), "recipe: parameters.lambda: 'lambda' must be finite"),
    (ties({"density": 0}), "models[0].parameters.density: 'density' must be > 0"),
    (ties({"lambda": 0.5}), "models[0].parameters.lambda: 'lambda' is a global parameter of 'ties'"),
    (linear(0, 0), "models: the weights sum to 0 for some tensors"),
    (linear(1, -1), "models: the weights sum to 0"),
    (linear([1, -1], 0), "the weights' sum changes sign between t=0 and t=1"),
    (linear(1, [{"filter": "mlp", "value": -1}, {"value": 1}]), "sum to 0 for tensors containing 'mlp'"),
    ({"merge_method": "slerp", "base_model": "b", "models": [{"model": "b"}, {"model": "x"}]},
     "parameters: 't' is required by 'slerp'"),
    ({"merge_method": "slerp", "base_model": "b", "models": [{"model": "b"}, {"model": "x"}],
      "parameters": {"t": 5}}, "parameters.t: 't' must be <= 1"),
    ({**ties(), "models": [{"model": "x"}, {"model": "x"}]}, "models[1]: model 'x' is listed twice"),
    ({**ties(), "dtype": "float8"}, "dtype: unknown dtype 'float8'"),
    ({**ties(), "seed": -1}, "seed: must be between 0 and 2**63 - 1"),
])
def test_bad_recipes_are_one_line_naming_the_key(raw, message):
    with pytest.raises(VadasmError) as caught:
        recipe_from_dict(raw)
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_zero_sum_weights_are_fine_without_normalize():
    recipe = recipe_from_dict(linear(1, -1, normalize=False))
    assert recipe.parameters == {"normalize": False}


def multislerp(*weights, **global_params) -> dict:
    """multislerp around a base that has no weight of its own (it is not one of the inputs)."""
    return {"merge_method": "multislerp", "base_model": "b", "parameters": global_params,
            "models": [{"model": "b"}] + [{"model": f"m{i}", "parameters": {"weight": w}}
                                          for i, w in enumerate(weights)]}


def test_multislerp_weights_summing_to_zero_are_refused_when_normalised():
    with pytest.raises(VadasmError, match="the weights sum to 0 .* with normalize_weights: true"):
        recipe_from_dict(multislerp(0.5, -0.5))
    assert recipe_from_dict(multislerp(0.5, -0.5, normalize_weights="no")).parameters == {"normalize_weights": False}
    assert recipe_from_dict(multislerp(0.5, 0.25)).models[2].parameters == {"weight": 0.25}


def test_one_folder_written_two_ways_is_one_model(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    raw = {"merge_method": "linear", "models": [{"model": "m"}, {"model": f"{tmp_path}/m/"}]}
    with pytest.raises(VadasmError, match=r"models\[1\]: model .* is listed twice \(also entry 0\)"):
        recipe_from_dict(raw)


def test_the_base_may_be_listed_among_the_models_once():
    recipe = recipe_from_dict({**ties(), "models": [{"model": "b"}, {"model": "x"}]})
    assert [m.model for m in recipe.input_models()] == ["x"]


def test_an_error_line_quoting_a_huge_key_is_capped():
    with pytest.raises(VadasmError) as caught:
        recipe_from_dict({**ties(), "parameters": {"k" * 100_000: 1}})
    assert len(str(caught.value)) <= 300
