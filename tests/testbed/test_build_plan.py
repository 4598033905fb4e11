import pytest

from vadasm.errors import VadasmError
from vadasm.testbed import paths
from vadasm.testbed.build import plan
from vadasm.testbed.record import BuildRecord, read_record, staged_dir, write_record


def test_plan_adds_dependencies_in_build_order():
    assert plan(("llava-gemma3",)) == ["gemma3-270m", "vision-tower", "llava-gemma3"]
    assert plan(("smollm2-arith",)) == ["smollm2", "smollm2-arith"]
    assert plan(()) == ["smollm2", "gemma3-270m", "vision-tower", "llava-smollm2", "smollm2-arith", "llava-gemma3"]


def test_plan_rejects_unknown_names():
    with pytest.raises(VadasmError, match="unknown testbed artefact"):
        plan(("llava-13b",))


def test_home_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VADASM_HOME", str(tmp_path / "home"))
    assert paths.testbed_home() == tmp_path / "home" / "testbed"
    assert paths.artefact_dir("smollm2") == tmp_path / "home" / "testbed" / "smollm2"
    assert not paths.is_built("smollm2")


def test_staged_dir_publishes_only_complete_artefacts(tmp_path):
    final = tmp_path / "art"
    with pytest.raises(RuntimeError), staged_dir(final) as tmp:
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("killed mid-build")
    assert not final.exists() and not (tmp_path / "art.partial").exists()
    with staged_dir(final) as tmp:
        (tmp / "weights").write_text("w")
        write_record(tmp, BuildRecord(artefact="art", recipe={"steps": 3}))
    assert (final / "weights").read_text() == "w"
    assert read_record(final)["recipe"] == {"steps": 3}


def test_tower_warnings_name_the_word_the_tower_did_not_learn():
    from vadasm.testbed.build import tower_warnings

    def tower(shape: float) -> BuildRecord:
        return BuildRecord("vision-tower", {}, scores={"val_patch_accuracy": {"color": 1.0, "shape": shape}})

    learnt, half_blind = tower(0.977), tower(0.562)
    assert tower_warnings(learnt) == []
    (message,) = tower_warnings(half_blind)
    assert "shape on only 56.2%" in message and "--tower-steps" in message
