"""tune's pre-flight: searched choices are validated as the operation validates them, before any trial."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pico_models import make_text_model, perturbed_copy
from vadasm.cli import _register_subcommands, app
from vadasm.errors import VadasmError
from vadasm.tune import GraftBuilder, MergeBuilder, space_from_specs
from vadasm.tune.preflight import check_choices, choice_points


def _template(base: str = "base", model: str = "ft") -> dict:
    return {"merge_method": "${m}", "base_model": base, "models": [{"model": model, "parameters": {"weight": "${w}"}}]}


def test_choice_points_are_the_defaults_then_each_other_choice() -> None:
    space = space_from_specs(["m=ties,dare_ties,della@dare_ties", "w=0:1@0.25"])
    assert choice_points(space) == [("the defaults", {"m": "dare_ties", "w": 0.25}),
                                    ("m=ties", {"m": "ties", "w": 0.25}), ("m=della", {"m": "della", "w": 0.25})]


def test_merge_search_accepts_registered_methods_and_names_a_bad_one() -> None:
    builder = MergeBuilder(_template(), "base")
    check_choices(builder, space_from_specs(["m=ties,dare_linear,della", "w=0:1"]))
    with pytest.raises(VadasmError, match=r"^--param m=tiez: .*unknown merge method 'tiez'"):
        check_choices(builder, space_from_specs(["m=ties,tiez", "w=0:1"]))
    with pytest.raises(VadasmError, match=r"^--param the defaults: .*'weight'"):  # w's default breaks a range
        check_choices(MergeBuilder(_template(), "base"), space_from_specs(["m=ties,della", "w=x,y"]))


def test_graft_search_accepts_what_graft_accepts() -> None:
    builder = GraftBuilder("donor", "recipient", {"base": "base"})
    check_choices(builder, space_from_specs(["merge_method=ties,della", "map_method=lstsq,omp"]))
    with pytest.raises(VadasmError, match=r"^--param merge_method=regmean: --merge-method regmean needs"):
        check_choices(builder, space_from_specs(["merge_method=ties,regmean"]))
    with pytest.raises(VadasmError, match=r"^--param merge_method=tiez: --merge-method: 'tiez' unknown"):
        check_choices(builder, space_from_specs(["merge_method=ties,tiez"]))


def test_tune_command_refuses_before_any_trial(tmp_path) -> None:
    base = make_text_model(tmp_path / "base")
    ft = perturbed_copy(base, tmp_path / "ft")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"merge_method: ${{m}}\nbase_model: {base}\nmodels:\n  - model: {ft}\n")
    _register_subcommands()
    done = CliRunner().invoke(app, ["tune", "--recipe", str(recipe), "--param", "m=ties,tiez",
                                    "--out", str(tmp_path / "run")])
    assert done.exit_code != 0 and "--param m=tiez:" in str(done.exception)
    assert not (tmp_path / "run").exists()
