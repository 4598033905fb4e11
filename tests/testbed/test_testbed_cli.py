"""The testbed and eval commands on an empty VADASM_HOME: clear states and one-line errors."""

from typer.testing import CliRunner

from vadasm.cli import _register_subcommands, app
from vadasm.errors import VadasmError


def _run(args):
    _register_subcommands()
    return CliRunner().invoke(app, args)


def test_status_lists_every_artefact_as_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("VADASM_HOME", str(tmp_path))
    result = _run(["testbed", "status"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == [
        "smollm2", "gemma3-270m", "vision-tower", "llava-smollm2", "smollm2-arith", "llava-gemma3",
        "clip-tower", "llava-smollm2-real", "llava-gemma3-real", "smollm2-reader",
    ]
    assert all(line.split()[1] == "missing" for line in lines)
    assert [("(opt-in" in line) for line in lines] == [False] * 6 + [True] * 4
    assert lines[-1].endswith("(opt-in: vadasm testbed build --only smollm2-reader)")


def test_build_help_says_which_artefacts_are_opt_in_and_why():
    _register_subcommands()
    result = CliRunner().invoke(app, ["testbed", "build", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())  # rich's panel borders and line wraps
    for name in ("clip-tower", "llava-smollm2-real", "llava-gemma3-real", "smollm2-reader"):
        assert name in text
    assert "built only when named" in text and "over 75 minutes" in text and "misses its criterion" in text


def test_eval_on_an_unbuilt_testbed_artefact_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("VADASM_HOME", str(tmp_path))
    result = _run(["eval", "--model", "testbed:llava-smollm2", "--tasks", "easyvqa"])
    assert isinstance(result.exception, VadasmError)
    assert "vadasm testbed build" in str(result.exception)


def test_unknown_artefact_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VADASM_HOME", str(tmp_path))
    result = _run(["testbed", "build", "--only", "llava-70b"])
    assert isinstance(result.exception, VadasmError)
    assert "unknown testbed artefact" in str(result.exception)
