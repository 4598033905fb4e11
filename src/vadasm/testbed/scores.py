"""Held-out scores of a freshly built testbed artefact, in their own module so that the default build
(build.py) and the opt-in builders (opt_in.py) share them without importing each other."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vadasm.testbed.build import BuildOptions


def held_out_scores(folder: Path, task: str, options: BuildOptions, limit: int, baseline: Path | None = None) -> dict:
    """Held-out (test split) scores of a fresh artefact, with controls or beside its base model."""
    from functools import partial

    from vadasm.eval.backends import load_backend
    from vadasm.eval.harness import evaluate

    models = [(folder.name.removesuffix(".partial"), partial(load_backend, folder))]
    if baseline is not None:
        models.append((baseline.name, partial(load_backend, baseline)))
    report = evaluate(models, [task], split="test", limit=limit, seed=options.seed, progress=options.progress)
    return {
        f"test_{task}": [
            {"model": s.model, "condition": s.condition, "metric": s.metric, "value": round(s.value, 4),
             "n": s.n, "groups": {g: round(v["value"], 4) for g, v in s.groups.items()}}
            for s in report.scores
        ],
        "eval_seconds": report.seconds,
    }
