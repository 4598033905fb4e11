"""Tuning a class A graft end to end on tiny real checkpoints with the real harness (easyvqa + arith)."""

from __future__ import annotations

import json

from eval.tiny_vlm import fake_vqa_items, make_text_lm, make_tiny_llava, write_images
from pico_models import perturbed_copy
from vadasm.eval import easyvqa
from vadasm.tune import GraftBuilder, HarnessObjective, make_optimizer, space_from_specs, tune


def finetune(base, folder, seed):
    """A seeded 'fine-tune' of `base` with its tokenizer."""
    out = perturbed_copy(base, folder, scale=0.02, seed=seed)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).write_bytes((base / name).read_bytes())
    return out


def test_graft_tuning_with_the_harness(tmp_path, monkeypatch):
    items = fake_vqa_items(write_images(tmp_path / "images"))
    monkeypatch.setattr(easyvqa, "load_split", lambda split: items)
    base = make_text_lm(tmp_path / "base")
    donor, _, _ = make_tiny_llava(tmp_path / "donor", finetune(base, tmp_path / "donor-lm", seed=3))
    recipient = finetune(base, tmp_path / "recipient", seed=7)
    builder = GraftBuilder(str(donor), str(recipient), {"base": str(base)})
    builder.build({"beta": 0.5, "protect_ratio": 0.5}, tmp_path / "one")
    config = json.loads((tmp_path / "one" / "vadasm_config.json").read_text())
    assert config["recipe"]["beta"] == 0.5 and config["recipe"]["protect_ratio"] == 0.5
    assert config["result"]["pair"]["label"] == "A"

    space = space_from_specs(["beta=0:1@1"])
    objective = HarnessObjective(builder, {"easyvqa": 1.0, "arith": 1.0}, limit=8, workdir=str(tmp_path))
    result = tune(objective, space, make_optimizer("grid", space, grid_points=3), zero_params=builder.zero_params(),
                  progress=False)
    recipient_trial, default, zero = (result.reference(k) for k in ("recipient", "default", "zero_delta"))
    assert set(recipient_trial.scores) == {"easyvqa/blind", "arith/text"}  # it cannot see: blind only
    assert {"easyvqa/image", "easyvqa/blind", "easyvqa/shuffled", "arith/text"} <= set(default.scores)
    assert zero.params == {"beta": 0.0}
    assert len([t for t in result.trials if t.kind == "search" and not t.cached]) == 1  # 0 and 1 were references
    assert result.gate is not None and "recipient" in result.test
    assert not list(tmp_path.glob("vadasm-trial-*"))  # candidate folders are removed after scoring


def test_tune_cli_records_the_fixed_graft_options(tmp_path):
    """tune_result.json holds the --set / --base options, so the winner can be rebuilt from the file alone."""
    from typer.testing import CliRunner

    from vadasm.cli import _register_subcommands, app

    base = make_text_lm(tmp_path / "base")
    donor, _, _ = make_tiny_llava(tmp_path / "donor", finetune(base, tmp_path / "donor-lm", seed=3))
    recipient = finetune(base, tmp_path / "recipient", seed=7)
    _register_subcommands()
    done = CliRunner().invoke(app, [
        "tune", "--donor", str(donor), "--recipient", str(recipient), "--base", str(base),
        "--set", "merge_method=ties", "--set", "density=0.5", "--param", "beta=0:1@1", "--grid-points", "2",
        "--tasks", "arith", "--limit", "2", "--no-test", "--out", str(tmp_path / "run"), "--json", "-q"])
    assert done.exit_code == 0, done.output
    saved = json.loads((tmp_path / "run" / "tune_result.json").read_text())
    assert saved["fixed_options"] == {"merge_method": "ties", "density": 0.5, "base": str(base)}
