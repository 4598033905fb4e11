"""What a tuning trial does: candidate params -> build the model in a temp folder -> score it.

A `Builder` turns parameters into a checkpoint (a merge recipe with `${name}` placeholders, or a
graft with `GraftOptions` fields); `HarnessObjective` builds, evaluates with the eval harness and
the benchmarks, and folds the scores into one number. `params=None` is the "change nothing"
candidate: the recipient itself, never built. Objects here are picklable dataclasses so trials can
run in worker processes or on Ray.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from vadasm.errors import VadasmError

PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


@dataclass
class Evaluation:
    """One candidate on one split: the objective and every score it was computed from."""

    objective: float
    scores: dict[str, float]
    seconds: float = 0.0
    started: float | None = None  # wall clock (time.time()), filled in by the tuning loop
    finished: float | None = None


class Builder(Protocol):
    recipient: str

    def build(self, params: dict[str, Any], folder: Path, force: bool = False) -> None: ...

    def zero_params(self) -> dict[str, Any] | None:
        """Parameters that build the zero-delta candidate, if this builder has one."""
        ...


def placeholders(template: Any) -> set[str]:
    if isinstance(template, dict):
        return set().union(*(placeholders(v) for v in template.values())) if template else set()
    if isinstance(template, list):
        return set().union(*(placeholders(v) for v in template)) if template else set()
    return set(PLACEHOLDER.findall(template)) if isinstance(template, str) else set()


def substitute(template: Any, params: dict[str, Any]) -> Any:
    """Replace `${name}` in a recipe: a whole-string placeholder becomes the value itself (a number)."""
    if isinstance(template, dict):
        return {k: substitute(v, params) for k, v in template.items()}
    if isinstance(template, list):
        return [substitute(v, params) for v in template]
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template)
        if whole:
            return params[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: str(params[m.group(1)]), template)
    return template


@dataclass
class MergeBuilder:
    """A mergekit-style recipe whose coefficients are `${name}` placeholders."""

    template: dict
    recipient: str
    zero: dict[str, Any] | None = None

    def check(self, names: list[str]) -> None:
        used = placeholders(self.template)
        if set(names) != used:
            raise VadasmError(f"recipe placeholders {sorted(used)} must match the tuned parameters {sorted(names)} "
                              "(write e.g. weight: \"${beta}\")")

    def build(self, params: dict[str, Any], folder: Path, force: bool = False) -> None:
        from vadasm.merge import MergeOptions, recipe_from_dict, run_merge

        recipe = recipe_from_dict(substitute(self.template, params), source="tuning recipe")
        run_merge(recipe, folder, MergeOptions(progress=False, force=force))

    def zero_params(self) -> dict[str, Any] | None:
        return self.zero


@dataclass
class GraftBuilder:
    """`vadasm graft` with fixed options plus the tuned ones (GraftOptions field names)."""

    donor: str
    recipient: str
    fixed: dict[str, Any] = field(default_factory=dict)

    def check(self, names: list[str]) -> None:
        from vadasm.graft.options import RUN_ONLY, GraftOptions

        known = GraftOptions.flat_names()
        unknown = sorted((set(names) | set(self.fixed)) - set(known))
        if unknown:
            options = ", ".join(name for name in known if name not in RUN_ONLY)
            raise VadasmError(f"graft has no option(s) {unknown}; graft options: {options}")

    def build(self, params: dict[str, Any], folder: Path, force: bool = False) -> None:
        from vadasm.graft import GraftOptions, graft

        options = {**self.fixed, **params, "progress": False, "force": force}
        graft(self.donor, self.recipient, folder, GraftOptions.flat(**options))

    def zero_params(self) -> dict[str, Any] | None:
        return {"beta": 0.0}  # donor vision, recipient language model unchanged


VISION_FIRST = ("image", "blind", "text")  # the condition a task's objective term is read from


def objective_value(scores: dict[str, float], weights: dict[str, float]) -> float:
    """Weighted mean of each task's main score (with image if the model sees, else blind / text)."""
    total = 0.0
    for task, weight in weights.items():
        value = next((scores[f"{task}/{c}"] for c in VISION_FIRST if f"{task}/{c}" in scores), None)
        if value is None:
            raise VadasmError(f"task {task!r} produced no score")
        total += weight * value
    return total / sum(weights.values())


@dataclass
class HarnessObjective:
    """Score a candidate with the eval harness (+ benchmarks) on one split."""

    builder: Any  # a Builder; Any keeps the dataclass picklable without a Protocol check
    weights: dict[str, float]
    limit: int | None = None
    seed: int = 0
    data: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    batch_size: int = 16
    workdir: str | None = None

    def __post_init__(self) -> None:
        if "perplexity" in self.weights:
            raise VadasmError("perplexity cannot be an objective term (lower is better); tune on accuracy tasks")
        if not self.weights or min(self.weights.values()) < 0 or sum(self.weights.values()) <= 0:
            raise VadasmError("objective weights must be non-negative and not all zero")

    def __call__(self, params: dict[str, Any] | None, split: str, controls: bool = False) -> Evaluation:
        started = time.perf_counter()
        scratch = Path(tempfile.mkdtemp(prefix="vadasm-trial-", dir=self.workdir)) if params is not None else None
        try:
            folder = Path(self.builder.recipient)
            if scratch is not None:
                folder = scratch / "model"
                self.builder.build(params, folder)
            scores = self.score(folder, split, controls)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        return Evaluation(objective_value(scores, self.weights), scores, round(time.perf_counter() - started, 2))

    def score(self, folder: Path, split: str, controls: bool) -> dict[str, float]:
        from vadasm.eval.backends import Decoding, load_backend
        from vadasm.eval.benchmarks.multi import evaluate_parts
        from vadasm.eval.gate import scores_of

        decoding = Decoding(seed=self.seed, batch_size=self.batch_size)
        load = [("candidate", partial(load_backend, folder, "transformers", self.device))]
        reports = evaluate_parts(load, list(self.weights), self.data, split=split, limit=self.limit, seed=self.seed,
                                 controls=controls, decoding=decoding, progress=False)
        return {key: value for report in reports for key, value in scores_of(report, "candidate").items()}
