"""The benchmarks page is rendered from results files only."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

from synthetic_objectives import Quadratic
from vadasm.tune import make_optimizer, space_from_specs, tune

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "benchmarks_page.py"
EVAL = {"models": ["graft", "recipient"], "tasks": ["easyvqa", "math500"], "split": "test", "limit": 200, "seed": 0,
        "decoding": {}, "item_ids": {}, "seconds": 3.0, "scores": [
            {"model": "graft", "task": "easyvqa", "condition": "image", "metric": "vqa_accuracy", "value": 0.8125,
             "n": 200, "groups": {}, "predictions": None},
            {"model": "graft", "task": "easyvqa", "condition": "blind", "metric": "vqa_accuracy", "value": 0.6712,
             "n": 200, "groups": {}, "predictions": None},
            {"model": "recipient", "task": "math500", "condition": "text", "metric": "pass@1", "value": 0.25,
             "n": 4, "groups": {}, "predictions": None, "extra": {"pass@4": 0.5, "samples": 4}}]}


def test_page_renders_eval_and_tune_results_and_lists_the_rest(tmp_path):
    space = space_from_specs(["beta=0:1@0.5", "density=0:1@0.5"])
    result = tune(Quadratic(), space, make_optimizer("grid", space, grid_points=11), progress=False)
    (tmp_path / "a_eval.json").write_text(json.dumps(EVAL))
    (tmp_path / "b_tune.json").write_text(json.dumps(result.to_dict(), default=str))
    (tmp_path / "c_other.json").write_text(json.dumps({"something": 1}))
    out = tmp_path / "benchmarks.md"
    runpy.run_path(str(SCRIPT))["main"]([str(p) for p in sorted(tmp_path.glob("*.json"))] + ["--out", str(out)])
    page = out.read_text()
    assert "| graft | image | 200 | 81.2 |" in page and "| graft | blind | 200 | 67.1 |" in page
    assert "pass@4 0.5000" in page
    assert "| recipient | val | None | 50.0 | arith/text 50.0" in page  # change nothing, always there
    assert "winner (search) | val | {'beta': 0.3, 'density': 0.7} | 100.0" in page
    assert "Other results files (not evaluation reports): c_other.json." in page
