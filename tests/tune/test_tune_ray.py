"""`vadasm tune --ray` against a fake Ray: every slot used, relative recipe paths, timings, one-line errors."""

from __future__ import annotations

import json
import shutil
import sys

import yaml
from typer.testing import CliRunner

from eval.tiny_vlm import make_text_lm
from fake_ray import FakeRay
from pico_models import perturbed_copy
from vadasm.cli import _register_subcommands, app
from vadasm.tune.objective import HarnessObjective


def _relative_recipe(tmp_path, monkeypatch):
    """A recipe naming its models by paths relative to the working directory, as mergekit recipes do."""
    base = make_text_lm(tmp_path / "base")
    perturbed_copy(base, tmp_path / "ft", scale=0.05)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({
        "merge_method": "task_arithmetic", "base_model": "base",
        "models": [{"model": "ft", "parameters": {"weight": "${beta}"}}]}))
    return ["tune", "--recipe", "recipe.yaml", "--param", "beta=0:1@0.5", "--grid-points", "2", "--tasks", "arith",
            "--limit", "1", "--no-test", "--out", "run", "--json", "-q"]


def test_tune_on_ray_fills_every_slot_and_sends_absolute_paths(tmp_path, monkeypatch):
    ray = FakeRay(cpus=2)  # runs every task in another directory: a relative path there names nothing
    monkeypatch.setitem(sys.modules, "ray", ray)
    scored = []

    def score(self, folder, split, controls):  # candidates are really merged; scoring is stubbed (speed)
        assert (folder / "config.json").is_file()
        scored.append(folder)
        return {"arith/text": 0.5}

    monkeypatch.setattr(HarnessObjective, "score", score)
    args = _relative_recipe(tmp_path, monkeypatch)
    _register_subcommands()
    done = CliRunner().invoke(app, [*args, "--ray", "auto"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    searched = [t for t in result["trials"] if t["kind"] == "search"]
    assert len(searched) == 2 and ray.most_in_flight == 2  # one batch of 2: the cluster's 2 CPUs, not 1
    assert all(t["started"] <= t["finished"] for t in result["trials"])
    assert ray.task_options["num_cpus"] == 1 and "num_gpus" not in ray.task_options
    assert len(scored) == 4 and scored[0] == tmp_path / "base"  # the recipient, by its absolute path
    assert not ray.initialized  # closed after the run


def test_tune_without_a_tokenizer_is_one_line(tmp_path):
    recipient = make_text_lm(tmp_path / "recipient")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (recipient / name).unlink(missing_ok=True)
    donor = tmp_path / "donor"
    shutil.copytree(recipient, donor)
    _register_subcommands()
    done = CliRunner().invoke(app, ["tune", "--donor", str(donor), "--recipient", str(recipient),
                                    "--param", "beta=0:1", "--out", str(tmp_path / "run"), "-q"])
    assert done.exit_code != 0
    message = str(done.exception)
    assert message.startswith(f"{recipient}: the recipient has no usable tokenizer (") and "\n" not in message
    assert not (tmp_path / "run").exists()
