"""Measure a graft beside its controls with the evaluation harness, and say plainly what it shows.

The graft is scored with the image, without it (blind) and with another item's image (shuffled);
the donor the same way; the recipient alone (it cannot see, so blind only, and on text tasks).
A graft whose image accuracy is not above its own controls does not see, and the verdict says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from vadasm.eval.backends import load_backend
from vadasm.eval.harness import EvalReport, evaluate


@dataclass
class GraftVerdict:
    task: str
    graft_image: float
    graft_blind: float
    graft_shuffled: float
    donor_image: float | None = None
    donor_blind: float | None = None
    kept_gain: float | None = None  # (graft image - graft blind) / (donor image - donor blind)
    sees: bool = False
    lines: list[str] = field(default_factory=list)


def measure_graft(models: dict[str, str | Path], tasks: list[str], split: str = "test", limit: int | None = 200,
                  seed: int = 0, device: str = "cpu", keep_predictions: bool = False) -> EvalReport:
    """Evaluate named model folders (e.g. graft, donor, recipient) on identical items."""
    backends = [(name, lambda p=path: load_backend(p, device=device)) for name, path in models.items()]
    return evaluate(backends, tasks, split=split, limit=limit, seed=seed, keep_predictions=keep_predictions)


def verdicts(report: EvalReport, graft: str = "graft", donor: str | None = "donor") -> list[GraftVerdict]:
    """For every vision task: does `graft` beat its blind and shuffled controls, and how much of
    the donor's gain over its own blind control does it keep."""
    out = []
    for task in report.tasks:
        image = report.get(graft, task, "image")
        if image is None:
            continue
        blind, shuffled = report.get(graft, task, "blind"), report.get(graft, task, "shuffled")
        verdict = GraftVerdict(task, image.value, blind.value, shuffled.value)
        verdict.sees = image.value > max(blind.value, shuffled.value)
        d_image = report.get(donor, task, "image") if donor else None
        d_blind = report.get(donor, task, "blind") if donor else None
        if d_image and d_blind:
            verdict.donor_image, verdict.donor_blind = d_image.value, d_blind.value
            gain = d_image.value - d_blind.value
            verdict.kept_gain = (image.value - blind.value) / gain if gain > 0 else None
        if verdict.sees:
            verdict.lines.append(f"{task}: {graft} sees: image {100 * image.value:.1f}% > blind "
                                 f"{100 * blind.value:.1f}% and shuffled {100 * shuffled.value:.1f}%")
        else:
            verdict.lines.append(f"{task}: {graft} does NOT beat its controls: image {100 * image.value:.1f}% vs blind "
                                 f"{100 * blind.value:.1f}%, shuffled {100 * shuffled.value:.1f}%")
        if verdict.kept_gain is not None:
            verdict.lines.append(f"{task}: {graft} keeps {100 * verdict.kept_gain:.0f}% of the donor's gain over "
                                 f"blind (donor {100 * d_image.value:.1f}% vs {100 * d_blind.value:.1f}%)")
        out.append(verdict)
    return out


def scores_record(report: EvalReport, found: list[GraftVerdict]) -> dict:
    """What goes into vadasm_config.json: every score with its controls, and the verdicts."""
    return {"split": report.split, "limit": report.limit, "seed": report.seed,
            "scores": [{k: v for k, v in asdict(s).items() if k != "predictions"} for s in report.scores],
            "verdicts": [asdict(v) for v in found]}
