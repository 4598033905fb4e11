import json
import subprocess
import sys

import pytest

from vadasm.cli import _register_subcommands, app

_register_subcommands()


def vadasm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vadasm", *args], capture_output=True, text=True)


def test_help_lists_the_commands():
    result = vadasm("--help")
    assert result.returncode == 0
    for command in ("merge", "inspect"):
        assert command in result.stdout


@pytest.mark.parametrize("command", [c.name for c in app.registered_commands])
def test_every_command_has_help(command):
    result = vadasm(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_merge_from_flags_prints_json_summary(tmp_path, llama_trio):
    base, ft1, ft2 = llama_trio
    out = tmp_path / "merged"
    result = vadasm("merge", str(out), "--method", "ties", "--base", str(base), "--model", str(ft1),
                    "--model", str(ft2), "--weight", "0.5", "--density", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["merged"] == summary["tensors"] == 21
    recipe = json.loads((out / "vadasm_config.json").read_text())["recipe"]
    assert recipe["models"][1]["parameters"] == {"weight": 0.5, "density": 0.5}


def test_user_errors_are_one_line_and_exit_2(tmp_path, llama_trio):
    base, ft1, _ = llama_trio
    result = vadasm("merge", str(tmp_path / "out"), "--method", "ties", "--base", str(base),
                    "--model", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: model folder not found"]
    assert not (tmp_path / "out").exists()


def test_inspect_json(llama_trio):
    base, _, _ = llama_trio
    result = vadasm("inspect", str(base), "--json")
    info = json.loads(result.stdout)
    assert info["model_type"] == "llama" and info["num_layers"] == 2 and info["moe"] is False
