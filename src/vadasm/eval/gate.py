"""The validation gate: a merge must not lose to the model it changes, an image must beat no image.

Text tasks: the candidate's validation score must not be below the recipient's (change nothing).
Vision tasks: the candidate's score with images must not be below its own blind run (the question's
wording alone). The gate is a pure function of score dicts keyed `task/condition`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vadasm.eval.harness import EvalReport


@dataclass
class GateCheck:
    task: str
    kind: str  # "text" (vs recipient) or "vision" (vs blind control)
    candidate: float
    reference: float
    reference_name: str
    passed: bool


@dataclass
class GateResult:
    passed: bool
    split: str
    checks: list[GateCheck] = field(default_factory=list)

    def failures(self) -> list[str]:
        return [f"{c.task}: {c.candidate:.4f} < {c.reference_name} {c.reference:.4f}" for c in self.checks
                if not c.passed]

    def line(self) -> str:
        if not self.checks:
            return "validation gate: nothing to compare (no text task with a recipient score, no vision task)"
        if self.passed:
            return f"validation gate: passed ({len(self.checks)} checks on the {self.split} split)"
        return f"validation gate: FAILED on the {self.split} split: " + "; ".join(self.failures())

    def to_dict(self) -> dict:
        return asdict(self)


def scores_of(report: EvalReport, model: str) -> dict[str, float]:
    """A model's scores from a harness/benchmark report as `task/condition -> value`."""
    return {f"{s.task}/{s.condition}": s.value for s in report.scores if s.model == model}


def validation_gate(candidate: dict[str, float], recipient: dict[str, float] | None, split: str = "val",
                    higher_is_better: dict[str, bool] | None = None) -> GateResult:
    """Compare a candidate's scores with the recipient's (text) and with its own blind run (vision)."""
    higher_is_better = higher_is_better or {}
    checks = []
    for key, value in sorted(candidate.items()):
        task, _, condition = key.partition("/")
        better = higher_is_better.get(task, True)
        if condition == "image" and f"{task}/blind" in candidate:
            blind = candidate[f"{task}/blind"]
            checks.append(GateCheck(task, "vision", value, blind, "blind control",
                                    value >= blind if better else value <= blind))
        elif condition == "text" and recipient and key in recipient:
            ref = recipient[key]
            checks.append(GateCheck(task, "text", value, ref, "recipient", value >= ref if better else value <= ref))
    return GateResult(all(c.passed for c in checks), split, checks)


def record_in_config(model_dir: str | Path, key: str, payload: dict) -> None:
    """Add one section to a model's vadasm_config.json, keeping everything else as it is."""
    path = Path(model_dir) / "vadasm_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {"tool": "vadasm"}
    config[key] = payload
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2, default=str) + "\n")
    tmp.replace(path)
