"""`vadasm tune` end to end on tiny real checkpoints: references, log, plot, winner, resume."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from eval.tiny_vlm import make_text_lm
from pico_models import perturbed_copy
from vadasm.cli import _register_subcommands, app


def test_tune_merge_recipe_end_to_end(tmp_path):
    base = make_text_lm(tmp_path / "base")
    ft = perturbed_copy(base, tmp_path / "ft", scale=0.05)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "task_arithmetic", "base_model": str(base),
                                      "models": [{"model": str(ft), "parameters": {"weight": "${beta}"}}]}))
    _register_subcommands()
    args = ["tune", "--recipe", str(recipe), "--param", "beta=0:1@0.5", "--grid-points", "3", "--tasks", "arith",
            "--limit", "3", "--out", str(tmp_path / "run"), "--output", str(tmp_path / "best"), "--json", "-q"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    kinds = [t["kind"] for t in result["trials"]]
    assert kinds[:2] == ["recipient", "default"] and kinds.count("search") == 3
    assert result["trials"][0]["params"] is None and set(result["test"]) >= {"recipient"}
    assert (tmp_path / "run" / "tune_search.png").stat().st_size > 0
    logged = (tmp_path / "run" / "trials.jsonl").read_text().splitlines()
    assert len(logged) == len([t for t in result["trials"] if not t["cached"]])
    best = result["best"]
    if best["kind"] == "recipient":  # random tiny models: changing nothing may well be best
        assert not (tmp_path / "best").exists()
    else:
        config = json.loads((tmp_path / "best" / "vadasm_config.json").read_text())
        assert config["tuning"]["winner"]["params"] == best["params"] and "gate" in config["validation"]
    again = CliRunner().invoke(app, args[:-4] + ["--json", "-q"])  # resume: everything comes from the log
    assert again.exit_code == 0, again.output
    assert all(t["cached"] for t in json.loads(again.stdout)["trials"])


def test_tune_refuses_a_placeholder_without_a_parameter(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: '${w}'}\n")
    _register_subcommands()
    done = CliRunner().invoke(app, ["tune", "--recipe", str(recipe), "--recipient", str(tmp_path),
                                    "--param", "beta=0:1"])
    assert done.exit_code != 0 and "placeholders ['w'] must match the tuned parameters ['beta']" in str(done.exception)
