"""`vadasm graft` and `scripts/vmerge.py` as users run them; verdicts on a known report."""

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from pico_models import make_llava_donor, make_text_recipient
from vadasm.cli import _register_subcommands, app
from vadasm.eval.harness import EvalReport, Score
from vadasm.graft.measure import verdicts

WORDS = [f"w{i}" for i in range(91)]
FAST = ["--min-anchors", "10", "--heldout", "10", "--omp-k", "8"]
REPO = Path(__file__).resolve().parents[2]


def test_graft_command_json(tmp_path):
    _register_subcommands()
    donor = make_llava_donor(tmp_path / "donor", words=WORDS)
    recipient = make_text_recipient(tmp_path / "recipient", "qwen2", words=WORDS[10:] + ["x", "y"])
    result = CliRunner().invoke(app, ["graft", str(donor), str(recipient), str(tmp_path / "out"), *FAST, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["graft"]["pair"]["label"] == "C"
    assert payload["graft"]["chosen_map"] == "lstsq"


def test_graft_command_takes_testbed_names(tmp_path):
    _register_subcommands()
    result = CliRunner().invoke(app, ["graft", "testbed:nope", "testbed:smollm2", str(tmp_path / "out")])
    assert result.exit_code != 0 and "unknown testbed artefact 'nope'" in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_vmerge_wrapper_and_error_exit(tmp_path):
    donor = make_llava_donor(tmp_path / "donor", words=WORDS)
    recipient = make_text_recipient(tmp_path / "recipient", "llama", words=WORDS[10:] + ["x", "y"], hidden_size=48)
    run = [sys.executable, str(REPO / "scripts" / "vmerge.py"), "--small", str(recipient), "--large", str(donor)]
    ok = subprocess.run([*run, "--output", str(tmp_path / "out"), *FAST, "-q"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "out" / "config.json").read_text())["text_config"]["hidden_size"] == 48
    bad = subprocess.run([*run, "--output", str(tmp_path / "out2"), "--no-vision", *FAST], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "class A" in bad.stderr
    assert not (tmp_path / "out2").exists()


def _report(values):
    report = EvalReport(["graft", "donor"], ["easyvqa"], "test", 10, 0, {}, {})
    for (model, condition), value in values.items():
        report.scores.append(Score(model, "easyvqa", condition, "vqa_accuracy", value, 10))
    return report


def test_verdicts_compare_with_controls_and_donor_gain():
    seeing = verdicts(_report({("graft", "image"): 0.9, ("graft", "blind"): 0.6, ("graft", "shuffled"): 0.5,
                               ("donor", "image"): 0.95, ("donor", "blind"): 0.65}))[0]
    assert seeing.sees and abs(seeing.kept_gain - 1.0) < 1e-9
    blind = verdicts(_report({("graft", "image"): 0.6, ("graft", "blind"): 0.6, ("graft", "shuffled"): 0.62}))[0]
    assert not blind.sees and "does NOT beat its controls" in blind.lines[0]
