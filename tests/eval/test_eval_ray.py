"""`vadasm eval --ray` against a fake Ray, and the eval flags that must fail as one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tiny_vlm import make_text_lm
from typer.testing import CliRunner

from fake_ray import FakeRay
from vadasm.cli import _register_subcommands, app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"


def test_eval_on_ray_spreads_a_relative_sweep_folder_one_task_per_model(tmp_path, monkeypatch):
    ray = FakeRay(cpus=2)  # runs every task in another directory
    monkeypatch.setitem(sys.modules, "ray", ray)
    for k, alpha in enumerate(["alpha_0.0", "alpha_0.5", "alpha_1.0"]):
        make_text_lm(tmp_path / "sweep" / alpha, seed=k)
    (tmp_path / "gsm8k.jsonl").write_text((FIXTURES / "gsm8k.jsonl").read_text())
    monkeypatch.chdir(tmp_path)
    _register_subcommands()
    done = CliRunner().invoke(app, ["eval", "--models-from", "sweep", "--tasks", "gsm8k", "--data", "gsm8k=gsm8k.jsonl",
                                    "--limit", "1", "--max-new-tokens", "2", "--ray", "auto", "--json-out", "out.json",
                                    "--json", "-q"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report == json.loads((tmp_path / "out.json").read_text())  # --json prints what --json-out writes
    assert report["models"] == ["alpha_0.0", "alpha_0.5", "alpha_1.0"]
    assert [s["model"] for s in report["scores"]] == report["models"]  # merged back in the models' order
    tasks = report["ray"]["tasks"]
    assert report["ray"]["slots"] == 2 and ray.most_in_flight == 2
    assert sorted(t["label"] for t in tasks) == [f"model {m} ({tmp_path / 'sweep' / m})" for m in report["models"]]


def _eval(*args: str):
    _register_subcommands()
    return CliRunner().invoke(app, ["eval", *args])


def test_gpus_on_a_torch_without_cuda_is_one_line(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    done = _eval("-m", str(make_text_lm(tmp_path / "lm")), "--gpus", "0,1", "--tasks", "arith")
    assert done.exit_code != 0
    assert str(done.exception) == (f"--gpus 0,1: torch {torch.__version__} built without CUDA; evaluate on CPU "
                                   "without --gpus, or install a CUDA torch")


def test_lm_eval_backend_refuses_local_data(tmp_path):
    done = _eval("-m", str(make_text_lm(tmp_path / "lm")), "--tasks", "gsm8k", "--backend", "lm-eval",
                 "--data", f"gsm8k={FIXTURES / 'gsm8k.jsonl'}")
    assert done.exit_code != 0
    assert str(done.exception).startswith("--backend lm-eval reads its own task data from the Hub and cannot use "
                                          "--data (gsm8k)")


def test_ray_and_gpus_together_are_refused(tmp_path):
    done = _eval("-m", str(tmp_path), "--ray", "auto", "--gpus", "0")
    assert done.exit_code != 0 and str(done.exception).startswith("--ray places each model on a GPU")
