"""The class A graft on the real testbed (slow; skipped until `vadasm testbed build` has run)."""

from functools import partial

import pytest

from vadasm.eval.backends import load_backend
from vadasm.eval.harness import evaluate
from vadasm.graft import GraftOptions, graft
from vadasm.testbed.paths import artefact_dir, is_built

pytestmark = pytest.mark.slow


def test_regmean_graft_sees_better_than_task_arithmetic_and_keeps_arithmetic(tmp_path):
    """On validation: RegMean (donor weight 20, the tuned value) beats the task-arithmetic default on
    vision by a clear margin, beats its own blind run, and keeps the arithmetic within a few points."""
    if not all(is_built(a) for a in ("smollm2", "smollm2-arith", "llava-smollm2")):
        pytest.skip("testbed not built (run: vadasm testbed build)")
    donor, recipient = artefact_dir("llava-smollm2"), artefact_dir("smollm2-arith")
    common = dict(base=str(artefact_dir("smollm2")), progress=False)
    graft(donor, recipient, tmp_path / "ta", GraftOptions.flat(**common))
    graft(donor, recipient, tmp_path / "rm", GraftOptions.flat(**common, merge_method="regmean", donor_data="easyvqa",
                                                          recipient_data="arith", regmean_donor_weight=20.0))
    models = [(name, partial(load_backend, tmp_path / name)) for name in ("ta", "rm")]
    report = evaluate(models, ["easyvqa", "arith"], split="val", limit=100, seed=0, progress=False)

    def score(model, task, condition):
        return report.get(model, task, condition).value

    assert score("rm", "easyvqa", "image") > score("ta", "easyvqa", "image") + 0.1
    assert score("rm", "easyvqa", "image") > score("rm", "easyvqa", "blind") + 0.2
    assert score("rm", "arith", "text") > score("ta", "arith", "text") - 0.05
