"""Grafts of the realistic LLaVA donor (CLIP-style tower, LLaVA-1.5's two stages) on the real testbed
(slow; skipped until its opt-in artefacts are built: `vadasm testbed build --only llava-smollm2-real
--only smollm2-arith`)."""

from functools import partial

import pytest

from vadasm.eval.backends import load_backend
from vadasm.eval.harness import evaluate
from vadasm.graft import GraftOptions, graft
from vadasm.testbed.paths import artefact_dir, is_built

pytestmark = pytest.mark.slow
NEEDED = ("smollm2", "smollm2-arith", "llava-smollm2-real")


def test_class_a_graft_of_the_realistic_donor_beats_its_blind_and_shuffled_controls(tmp_path):
    """Default class A graft (task arithmetic) on 100 validation questions: the image must be worth more
    than the question alone (blind) and than another item's image (shuffled), by 10 points each."""
    missing = [name for name in NEEDED if not is_built(name)]
    if missing:
        pytest.skip(f"testbed artefacts not built: {', '.join(missing)} (vadasm testbed build --only NAME)")
    out = tmp_path / "graft"
    graft(artefact_dir("llava-smollm2-real"), artefact_dir("smollm2-arith"), out,
          GraftOptions.flat(base=str(artefact_dir("smollm2")), progress=False))
    report = evaluate([("graft", partial(load_backend, out))], ["easyvqa"], split="val", limit=100, seed=0,
                      progress=False)
    image, blind, shuffled = (report.get("graft", "easyvqa", c).value for c in ("image", "blind", "shuffled"))
    assert image > blind + 0.1 and image > shuffled + 0.1, (image, blind, shuffled)
