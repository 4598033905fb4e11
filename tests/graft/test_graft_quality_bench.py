"""benchmarks/graft_quality.py --donors real on tiny stand-ins for the testbed artefacts: both tables with every
control (blind, shuffled, donor, recipient, text oracle, the closed-form baseline) and issue 15's targets, and a
missing artefact as one line with the command that builds it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from pico_models import make_llava_donor, make_text_recipient, perturbed_copy
from vadasm.eval.easyvqa import COLORS, SHAPES

pytest.importorskip("easy_vqa")
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "graft_quality.py"
LABELS = list(COLORS + SHAPES)
WORDS = LABELS + [f"w{i}" for i in range(80)]  # 91 words: the tiny vocabulary's size


def load_bench():
    spec = importlib.util.spec_from_file_location("graft_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_testbed(root: Path) -> dict[str, Path]:
    """Stand-ins for the real scenario's artefacts: a class A trio over one base, a class C pair."""
    base = make_text_recipient(root / "smollm2", "llama", words=WORDS + ["<image>"], num_hidden_layers=5)
    arith = perturbed_copy(base, root / "smollm2-arith", seed=3)
    for f in base.glob("tok*"):
        (arith / f.name).write_bytes(f.read_bytes())
    donor_a = make_llava_donor(root / "llava-smollm2-real", "llama", words=WORDS, text_folder=base, lm_noise=0.01)
    donor_c = make_llava_donor(root / "llava-gemma3-real", "llama", words=WORDS, seed=1)
    reader_words = LABELS + WORDS[30:] + [f"v{i}" for i in range(10)]  # 82 words, 72 shared with the donor
    reader = make_text_recipient(root / "smollm2-reader", "llama", words=reader_words, hidden_size=48)
    return {p.name: p for p in (base, arith, donor_a, donor_c, reader)}


def test_real_donor_tables_hold_every_control_and_the_targets(tmp_path, monkeypatch):
    bench = load_bench()
    folders = tiny_testbed(tmp_path / "testbed")
    monkeypatch.setattr(bench, "artefact_dir", folders.__getitem__)
    monkeypatch.setattr(bench, "is_built", folders.__contains__)
    out = tmp_path / "results"
    bench.main(["--donors", "real", "--limit", "6", "--arith-limit", "3", "--min-anchors", "10",
                "--calibration-samples", "40", "--work", str(tmp_path / "work"), "--out", str(out)])
    table = (out / "graft_quality_real.md").read_text()
    assert "### Class A: llava-smollm2-real -> smollm2-arith (base smollm2)" in table
    assert "### Class C: llava-gemma3-real -> smollm2-reader" in table
    record = json.loads((out / "graft_quality_real.json").read_text())
    scores = {(s["model"], s["condition"]) for s in record["evals"]["A"]["easyvqa"]["scores"]}
    for model in ("graft", "graft-ties", "graft-regmean", "baseline-closed-form"):
        assert {(model, c) for c in ("image", "blind", "shuffled")} <= scores
        assert f"target A (>= 90% of the donor's vision gain and of the recipient's arithmetic gain): {model} " in table
    assert {("donor", "image"), ("recipient", "blind")} <= scores
    scores_c = {(s["model"], s["condition"]) for s in record["evals"]["C"]["easyvqa"]["scores"]}
    for model in ("graft-lstsq", "graft-procrustes", "graft-omp", "graft-calibrated", "baseline-closed-form"):
        assert {(model, c) for c in ("image", "blind", "shuffled")} <= scores_c
    assert table.count("target C (>= 10 points over blind and shuffled") == 5
    oracle = record["evals"]["C"]["text_oracle"]
    assert oracle["n"] > 0 and 0 <= oracle["vqa_accuracy"] <= 1 and "blind" in oracle
    assert "calibrated map: 40 items from easyvqa" in table and "closed-form projector: 40 items" in table
    assert record["grafts"]["classC-calibrated"]["chosen_map"] == "calibrated"
    assert "--donors real" in table.splitlines()[0]
    assert "baseline-closed-form MISSED: vision n/a, arithmetic 100%" in table  # the recipient's own LM


def test_a_missing_artefact_is_one_line_with_its_build_command(tmp_path, monkeypatch, capsys):
    bench = load_bench()
    monkeypatch.setattr(bench, "is_built", lambda name: name != "llava-gemma3-real")
    with pytest.raises(SystemExit) as stop:
        bench.main(["--donors", "real", "--only", "C", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: testbed artefact(s) not built: llava-gemma3-real")
    assert "vadasm testbed build --only llava-gemma3-real" in err and not (tmp_path / "out").exists()


def test_first_donors_class_c_keeps_its_patch_word_oracle_and_takes_the_baseline(tmp_path, monkeypatch):
    bench = load_bench()
    made = tiny_testbed(tmp_path / "testbed")
    folders = {"llava-gemma3": made["llava-gemma3-real"], "smollm2": made["smollm2-reader"]}
    monkeypatch.setattr(bench, "artefact_dir", folders.__getitem__)
    monkeypatch.setattr(bench, "is_built", folders.__contains__)
    out = tmp_path / "results"
    bench.main(["--only", "C", "--maps", "lstsq", "--baseline", "--limit", "4", "--min-anchors", "10",
                "--calibration-samples", "30", "--work", str(tmp_path / "work"), "--out", str(out)])
    table = (out / "graft_quality_C.md").read_text()
    assert "### Class C: llava-gemma3 -> smollm2 (one graft per map)" in table
    assert "| baseline-closed-form | shuffled |" in table and "one-answer match" in table
    assert "target C" not in table  # the first donors' oracle has no blind run on its items: no target line
