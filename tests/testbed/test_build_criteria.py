"""`vadasm testbed build` with validation criteria, on a tiny tower and four synthetic images:
a met criterion is recorded with the steps used, an unmet one exits 2 with one line and writes nothing."""

import re
import sys
from dataclasses import dataclass

import pytest
from tiny_vlm import fake_vqa_items, write_images

from vadasm.cli import main
from vadasm.testbed import build as build_module
from vadasm.testbed import vision
from vadasm.testbed.build import BuildOptions, build, quick
from vadasm.testbed.paths import artefact_dir, is_built
from vadasm.testbed.record import read_record
from vadasm.testbed.rounds import CriterionNotMet


@pytest.fixture
def tiny_tower_build(tmp_path, monkeypatch):
    """Point the tower stage at a 16-pixel tower and fake easy-vqa items; returns a setter for its floor."""
    from vadasm.eval import easyvqa

    monkeypatch.setenv("VADASM_HOME", str(tmp_path / "home"))
    items = fake_vqa_items(write_images(tmp_path / "images"))
    pixels = vision.load_pixels(items, vision.image_processor(16))
    monkeypatch.setattr(easyvqa, "load_split", lambda split: items)
    monkeypatch.setattr(build_module, "_pixels", lambda splits: pixels)

    def with_floor(floor: float) -> None:
        @dataclass
        class TinyRecipe(vision.TowerRecipe):
            image_size: int = 16
            patch_size: int = 8
            hidden_size: int = 16
            layers: int = 1
            heads: int = 2
            batch_size: int = 8
            eval_every: int = 5
            min_patch_accuracy: float = floor

        monkeypatch.setattr(vision, "TowerRecipe", TinyRecipe)

    return with_floor


def test_a_met_criterion_is_recorded_with_the_steps_used(tiny_tower_build, capsys, monkeypatch):
    tiny_tower_build(1e-6)  # colour patches start at 0%, so a few checks fail before one passes
    records = build(BuildOptions(only=("vision-tower",), tower_steps=60, progress=False))
    training = read_record(artefact_dir("vision-tower"))["training"]
    assert records["vision-tower"]["training"] == training
    assert training["met"] and training["steps_used"] < 60 and training["budget_steps"] == 60
    assert training["val_curve"][-1]["step"] == training["steps_used"]
    assert training["criterion"] == "val patch accuracy >= 0% on colour and on shape patches"
    assert f"{training['steps_used']} of 60 steps" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["vadasm", "testbed", "status"])
    main()
    assert f"trained {training['steps_used']} of 60 steps (criterion: val patch accuracy" in capsys.readouterr().out


def test_a_spent_budget_stops_the_build_with_one_line_and_writes_nothing(tiny_tower_build, capsys, monkeypatch):
    tiny_tower_build(1.01)  # never met
    with pytest.raises(CriterionNotMet):
        build(BuildOptions(only=("vision-tower",), tower_steps=6, progress=False))
    assert not is_built("vision-tower") and not artefact_dir("vision-tower").exists()
    assert not artefact_dir("vision-tower").with_name("vision-tower.partial").exists()
    monkeypatch.setattr(sys, "argv", ["vadasm", "testbed", "build", "--only", "vision-tower", "--tower-steps", "6",
                                      "--quiet"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("error: testbed stage vision-tower did not meet its criterion")
    assert "budget of 6 steps (--tower-steps)" in line and re.search(r"color \d+\.\d%, shape \d+\.\d%", line)
    assert not artefact_dir("vision-tower").exists()


def test_smoke_builds_disable_every_criterion():
    options = quick(BuildOptions())
    assert not options.criteria and options.tower_steps < 100
    assert build_module._floor(options, 0.95) == 0.0 and build_module._floor(BuildOptions(), 0.95) == 0.95
