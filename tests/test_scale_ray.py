"""`vadasm tune --ray local` and `vadasm eval --ray local` on a real Ray with two workers (slow: Ray starts
twice, ~1 min on two busy cores). Each task records when it ran; two of them must overlap in time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from eval.tiny_vlm import make_text_lm
from pico_models import perturbed_copy
from vadasm.cli import _register_subcommands, app
from vadasm.errors import VadasmError
from vadasm.scale import RayPool

try:
    import ray  # noqa: F401
except ImportError:
    ray = None

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(ray is None, reason="Ray is not installed (pip install 'vadasm[ray]')")]


def overlap(spans: list[tuple[float, float]]) -> float:
    """Longest time two of the spans ran together (0 when none did)."""
    return max((min(a[1], b[1]) - max(a[0], b[0]) for i, a in enumerate(spans) for b in spans[i + 1:]), default=0.0)


def test_overlap_of_spans():
    assert overlap([(0.0, 2.0), (1.5, 3.0), (5.0, 6.0)]) == 0.5
    assert overlap([(0.0, 1.0), (2.0, 3.0)]) < 0


def test_tune_and_eval_run_two_tasks_at_once_on_a_local_ray(tmp_path, monkeypatch):
    base = make_text_lm(tmp_path / "base")
    perturbed_copy(base, tmp_path / "ft", scale=0.05)
    monkeypatch.chdir(tmp_path)  # relative paths below: Ray workers run in their own directory
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({
        "merge_method": "task_arithmetic", "base_model": "base",
        "models": [{"model": "ft", "parameters": {"weight": "${beta}"}}]}))
    _register_subcommands()
    runner = CliRunner()
    tuned = runner.invoke(app, ["tune", "--recipe", "recipe.yaml", "--param", "beta=0:1@0.5", "--grid-points", "2",
                                "--tasks", "arith", "--limit", "8", "--no-test", "--out", "run", "--ray", "local",
                                "--workers", "2", "--json", "-q"])
    assert tuned.exit_code == 0, tuned.output
    trials = json.loads(tuned.stdout)["trials"]  # references in one batch of two, then two search candidates
    assert [t["kind"] for t in trials] == ["recipient", "default", "search", "search"]
    assert overlap([(t["started"], t["finished"]) for t in trials]) > 0, trials

    for k in range(2):
        make_text_lm(tmp_path / "sweep" / f"alpha_{k}.0", seed=k)
    evaluated = runner.invoke(app, ["eval", "--models-from", "sweep", "--tasks", "arith", "--limit", "8",
                                    "--ray", "local", "--workers", "2", "--json", "-q"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    tasks = report["ray"]["tasks"]
    assert len(tasks) == 2 and report["ray"]["slots"] == 2
    assert overlap([(t["started"], t["finished"]) for t in tasks]) > 0, tasks
    assert {s["model"] for s in report["scores"]} == {"alpha_0.0", "alpha_1.0"}


def test_a_failed_task_is_retried_once_then_named(tmp_path):
    def flaky(marker: str) -> str:  # nested: Ray pickles it by value (workers cannot import test modules)
        if not Path(marker).exists():
            Path(marker).write_text("failed once")
            raise RuntimeError("first attempt fails")
        return "second attempt"

    def broken(k: int) -> int:
        raise RuntimeError(f"broken model {k}")

    pool = RayPool("local", workers=1)
    try:
        assert pool.map(flaky, [("flaky", (str(tmp_path / "marker"),))]) == ["second attempt"]
        with pytest.raises(VadasmError) as err:
            pool.map(broken, [("model m3", (3,))])
        assert str(err.value) == "model m3: Ray task failed, also on its retry: RuntimeError: broken model 3"
    finally:
        pool.close()


def test_ray_auto_without_a_cluster_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    (tmp_path / "config.json").write_text("{}")
    done = subprocess.run([sys.executable, "-m", "vadasm", "eval", "-m", str(tmp_path), "--ray", "auto"],
                          capture_output=True, text=True, env=env)
    if "no Ray cluster found" not in done.stderr and Path("/tmp/ray/ray_current_cluster").exists():
        pytest.skip("a Ray cluster is running on this machine (`ray start`), so 'auto' found one")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors and errors[0].startswith("error: --ray auto: no Ray cluster found (")
    assert "Traceback" not in done.stderr
