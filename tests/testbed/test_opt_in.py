"""The opt-in artefacts in `vadasm testbed build`: out of the default plan, recipes fitted to the build's
options, a quick clip-tower build on fake easy-vqa items, and the real donor's builder (monkeypatched)."""

import json
from dataclasses import dataclass
from pathlib import Path

from tiny_vlm import fake_vqa_items, write_images

from vadasm.testbed import opt_in, real_donor
from vadasm.testbed import scores as scores_module
from vadasm.testbed.build import BUILDERS, DEPENDS, BuildOptions, build, plan, quick
from vadasm.testbed.paths import ARTEFACTS, OPT_IN, artefact_dir, is_built
from vadasm.testbed.record import read_record


def test_opt_in_artefacts_are_wired_but_left_out_of_the_default_plan():
    assert set(OPT_IN) <= set(ARTEFACTS) and set(DEPENDS) == set(BUILDERS) == set(ARTEFACTS)
    assert not set(plan(())) & set(OPT_IN)
    assert plan(("llava-smollm2-real",)) == ["smollm2", "clip-tower", "llava-smollm2-real"]
    assert plan(("llava-gemma3-real",)) == ["gemma3-270m", "clip-tower", "llava-gemma3-real"]
    assert plan(("smollm2-reader", "llava-smollm2")) == ["smollm2", "vision-tower", "llava-smollm2", "smollm2-reader"]


@dataclass
class Toy:
    steps: int = 600
    eval_every: int = 50
    min_val: float = 0.9
    seed: int = 0


def test_fitted_takes_the_seed_caps_budgets_and_drops_floors_only_when_asked():
    recipe = opt_in.fitted(Toy(), BuildOptions(seed=3), ("steps", "eval_every"), ("min_val",))
    assert recipe == Toy(seed=3)  # a full build keeps the recipe's own budgets and criterion
    smoke = opt_in.fitted(Toy(), quick(BuildOptions()), ("steps", "eval_every"), ("min_val",))
    assert smoke == Toy(steps=2, eval_every=2, min_val=0.0, seed=0)
    assert opt_in.fitted(Toy(steps=1), BuildOptions(opt_in_steps=5), ("steps",), ()).steps == 1  # a cap, not a set


def fake_built(name: str) -> Path:
    folder = artefact_dir(name)
    folder.mkdir(parents=True)
    (folder / "vadasm_testbed.json").write_text(json.dumps({"artefact": name}))
    return folder


def test_a_quick_clip_tower_build_writes_its_record(tmp_path, monkeypatch):
    monkeypatch.setenv("VADASM_HOME", str(tmp_path / "home"))
    items = fake_vqa_items(write_images(tmp_path / "images"))
    monkeypatch.setattr(real_donor, "load_split", lambda split: items)
    records = build(quick(BuildOptions(only=("clip-tower",), progress=False)), log=lambda _: None)
    assert list(records) == ["clip-tower"] and is_built("clip-tower")
    record = read_record(artefact_dir("clip-tower"))
    assert (artefact_dir("clip-tower") / "config.json").is_file()
    assert record["recipe"]["max_steps"] == 2 and record["recipe"]["min_val_shape"] == 0.0
    assert record["training"]["criterion"].startswith("none (val zero-shot colour >= 0%")
    assert record["training"]["steps_used"] == record["scores"]["steps"] == 2


def test_the_real_donor_builder_passes_the_built_inputs_and_records_both_stages(tmp_path, monkeypatch):
    monkeypatch.setenv("VADASM_HOME", str(tmp_path / "home"))
    lm, tower = fake_built("smollm2"), fake_built("clip-tower")
    calls = []

    def fake_donor(out, lm_folder, tower_folder, base, recipe):
        calls.append((lm_folder, tower_folder, base, recipe))
        (out / "config.json").write_text("{}")
        return {"recipe": {"base": base}, "inputs": {"language_model": str(lm_folder)},
                "scores": {"training": {"align_steps": 100, "tune_steps": 300}}}

    monkeypatch.setattr(real_donor, "build_real_donor", fake_donor)
    monkeypatch.setattr(scores_module, "held_out_scores", lambda *args, **kwargs: {"test_easyvqa": []})
    logged = []
    build(BuildOptions(only=("llava-smollm2-real",), seed=7, progress=False), log=logged.append)
    assert [line.split()[0] for line in logged[:3]] == ["[cached]", "[cached]", "[build]"]
    ((lm_folder, tower_folder, base, recipe),) = calls
    assert (lm_folder, tower_folder, base) == (lm, tower, "smollm2")
    assert recipe.seed == 7 and recipe.tune_min_val == 0.92 and recipe.tune_max_steps == 600  # recipe defaults
    record = read_record(artefact_dir("llava-smollm2-real"))
    assert record["training"]["steps_used"] == 400 and record["training"]["budget_steps"] == 1200
    assert record["training"]["criterion"].startswith("feature alignment: val caption words >= 90%")
    assert "test_easyvqa" in record["scores"] and "400 of 1200 steps" in logged[3]

