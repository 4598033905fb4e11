"""`vadasm eval` with benchmarks on tiny real checkpoints: one table for harness tasks and benchmarks,
a sweep folder, GPU-style spreading over worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.tiny_vlm import make_text_lm
from vadasm.cli import _register_subcommands, app
from vadasm.eval.backends import Decoding
from vadasm.eval.benchmarks.multi import _on_gpu, evaluate_all, merge_reports, model_folders

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "benchmarks"


def test_one_command_scores_a_sweep_on_harness_tasks_and_benchmarks(tmp_path):
    sweep = tmp_path / "sweep"
    for k, alpha in enumerate(["alpha_10.0", "alpha_0.2"]):
        make_text_lm(sweep / alpha, seed=k)
    (sweep / "svd_logs").mkdir()  # not a model: skipped
    assert [p.name for p in model_folders(sweep)] == ["alpha_0.2", "alpha_10.0"]  # numeric order
    _register_subcommands()
    done = CliRunner().invoke(app, [
        "eval", "--models-from", str(sweep), "--tasks", "arith,gsm8k,mmlu", "--limit", "1",
        "--data", f"gsm8k={FIXTURES / 'gsm8k.jsonl'}", "--data", f"mmlu={FIXTURES / 'mmlu.parquet'}",
        "--max-new-tokens", "4", "--json", "--plot", str(tmp_path / "sweep.png"), "-q"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["models"] == ["alpha_0.2", "alpha_10.0"]
    assert report["tasks"] == ["arith", "gsm8k", "mmlu"]
    assert {(s["model"], s["task"]) for s in report["scores"]} == {
        (m, t) for m in report["models"] for t in ("arith", "gsm8k", "mmlu")}
    assert len(report["item_ids"]["gsm8k"]) == 1 and (tmp_path / "sweep.png").stat().st_size > 0


def test_missing_benchmark_data_is_one_clear_error(tmp_path):
    lm = make_text_lm(tmp_path / "lm")
    _register_subcommands()
    done = CliRunner().invoke(app, ["eval", "-m", str(lm), "--tasks", "gsm8k"])
    assert done.exit_code != 0 and "--data gsm8k=FILE.jsonl (or openai/gsm8k:main from the Hub)" in str(done.exception)


def _two_models(tmp_path):
    models = [(f"m{k}", make_text_lm(tmp_path / f"m{k}", seed=k)) for k in range(2)]
    args = dict(tasks=["gsm8k"], data={"gsm8k": str(FIXTURES / "gsm8k.jsonl")}, max_new_tokens=3,
                decoding=Decoding(batch_size=2), progress=False)
    return models, args


def test_per_gpu_parts_merge_into_the_single_process_table(tmp_path, monkeypatch):
    models, args = _two_models(tmp_path)
    single = evaluate_all(models, **args)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    kwargs = {k: v for k, v in args.items() if k != "progress"}
    kwargs |= dict(split="test", limit=None, seed=0, controls=True, samples=1, backend="transformers",
                   keep_predictions=False)
    parts = [_on_gpu(str(k), [model], "cpu", kwargs) for k, model in enumerate(models)]
    merged = merge_reports(parts, [name for name, _ in models])
    assert [(s.model, s.value) for s in merged.scores] == [(s.model, s.value) for s in single.scores]
    assert merged.item_ids == single.item_ids


@pytest.mark.slow
def test_spreading_models_over_worker_processes(tmp_path):
    """Real spawned workers, one per 'GPU' (here on CPU); ~30 s on two busy cores, hence slow."""
    models, args = _two_models(tmp_path)
    single = evaluate_all(models, **args)
    spread = evaluate_all(models, gpus=["0", "1"], device="cpu", **args)
    assert spread.models == single.models
    assert [(s.model, s.value) for s in spread.scores] == [(s.model, s.value) for s in single.scores]


def test_seed_eval_script_takes_space_separated_tasks(tmp_path):
    import runpy

    script = runpy.run_path(str(Path(__file__).resolve().parents[3] / "scripts" / "eval_vlm.py"))
    lm = make_text_lm(tmp_path / "lm")
    out = tmp_path / "results.json"
    try:  # the CLI returns, or exits like the `vadasm` command does; either way with status 0
        code = script["main"](["--model", str(lm), "--tasks", "gsm8k", "aime25", "--limit", "1", "--max-new-tokens",
                               "2", "--data", f"gsm8k={FIXTURES / 'gsm8k.jsonl'}", "--data",
                               f"aime25={FIXTURES / 'aime25.jsonl'}", "--json-out", str(out), "-q"])
    except SystemExit as done:
        code = done.code
    assert code == 0
    report = json.loads(out.read_text())
    assert report["tasks"] == ["gsm8k", "aime25"] and report["limit"] == 1
    aime = next(s for s in report["scores"] if s["task"] == "aime25")
    assert aime["metric"] == "pass@1" and aime["extra"]["samples"] == 1 and "boxed_rate" in aime["extra"]
