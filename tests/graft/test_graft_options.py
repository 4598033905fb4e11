"""GraftOptions: nested parts built from flat names, the recipe's keys and order, and the flags derived from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import vadasm.cli.eval_cmd
import vadasm.graft
from vadasm.cli import _register_subcommands, app
from vadasm.errors import VadasmError
from vadasm.graft.options import CALIBRATION_FIT, RUN_ONLY, GraftOptions, check_options

# The recipe recorded in vadasm_config.json before the options were nested (issue 16): same keys, same order.
RECIPE_KEYS = [
    "base", "beta", "merge_method", "density", "donor_data", "recipient_data", "regmean_samples", "regmean_alpha",
    "regmean_donor_weight", "protect_ratio", "map_method", "ridge", "omp_k", "heldout", "min_anchors",
    "projector_variance", "vision_from", "image_token", "calibration_images", "calibration_limit", "text_only",
    "seed", "dtype",
]


def test_flat_names_fill_the_nested_parts():
    opts = GraftOptions.flat(base="b", merge_method="ties", donor_data="d", map_method="omp", seed=3, force=True)
    assert opts.language.base == "b" and opts.language.merge_method == "ties"
    assert opts.language.regmean.donor_data == "d" and opts.projector.map_method == "omp"
    assert opts.seed == 3 and opts.output.force is True
    assert GraftOptions.flat() == GraftOptions()
    with pytest.raises(TypeError, match="bogus"):
        GraftOptions.flat(bogus=1)


def test_recipe_keeps_its_keys_and_order_and_leaves_out_how_to_run():
    assert list(GraftOptions().recipe()) == RECIPE_KEYS
    # issue 15's calibration-fit options are recorded only when used (test_calibrated_projectors checks that)
    assert [n for n in GraftOptions.flat_names() if n not in CALIBRATION_FIT] == RECIPE_KEYS + list(RUN_ONLY)


@pytest.mark.parametrize(("method", "protect"), [("task_arithmetic", 0.2), ("ties", 0.2), ("regmean", 0.0)])
def test_protect_ratio_defaults_by_method_and_replaced_keeps_resolved_values(method, protect):
    opts = GraftOptions.flat(merge_method=method)
    assert opts.language.protect_ratio == protect
    assert GraftOptions.flat(merge_method=method, protect_ratio=0.5).language.protect_ratio == 0.5
    changed = opts.replaced(beta=0.25)
    assert changed.language.beta == 0.25 and changed.language.protect_ratio == protect and opts.language.beta == 1.0
    assert changed.output is not opts.output  # parts are copied, not shared


@pytest.mark.parametrize(("values", "flag"), [
    ({"vision_from": "both"}, "--vision-from"), ({"merge_method": "slerp"}, "--merge-method"),
    ({"map_method": "svd"}, "--map"), ({"protect_ratio": 1.5}, "--protect"),
    ({"merge_method": "regmean"}, "--donor-data"), ({"projector_variance": 0.0}, "--projector-variance"),
])
def test_bad_options_are_one_line_naming_the_flag(values, flag):
    with pytest.raises(VadasmError, match=flag) as err:
        check_options(GraftOptions.flat(**values))
    assert "\n" not in str(err.value)


def test_cli_flags_build_the_options_graft_receives(monkeypatch, tmp_path):
    """Flags land in their parts; an omitted --protect is decided by the method, as before the refactor."""
    _register_subcommands()
    seen = []
    monkeypatch.setattr(vadasm.cli.eval_cmd, "resolve_model", Path)
    monkeypatch.setattr(vadasm.graft, "graft", lambda d, r, o, options: seen.append(options) or _stop())
    args = ["graft", "d", "r", str(tmp_path / "o"), "--merge-method", "regmean", "--map", "omp", "--beta", "0.5",
            "--regmean-alpha", "0.5", "--shard-size", "1GB", "--text-only", "--force", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, _Stop), result.output
    (opts,) = seen
    assert opts.language.protect_ratio == 0.0 and opts.language.beta == 0.5
    assert opts.language.regmean.regmean_alpha == 0.5 and opts.projector.map_method == "omp"
    assert opts.text_only and opts.output.force and opts.output.shard_size == "1GB" and not opts.output.progress
    CliRunner().invoke(app, ["graft", "d", "r", str(tmp_path / "o2"), "--protect", "0.4"])
    assert seen[1].language.protect_ratio == 0.4 and seen[1].output.progress


class _Stop(Exception):
    """Raised by the stand-in graft: the options were captured, nothing is run."""


def _stop() -> None:
    raise _Stop
