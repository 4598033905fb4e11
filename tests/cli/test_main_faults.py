"""Faults in the middle of a command (full disk, permission denied, SIGTERM) end as one line and
leave nothing behind: no output, no temp folder, no lock file, inputs unchanged."""

import errno
import os
import signal

import pytest

from fuzz_cases import run_cli, snapshot
from vadasm.io import writer


def merge_argv(models, out):
    base, ft1, ft2 = models
    return ["merge", str(out), "--method", "task_arithmetic", "--base", str(base), "--model", str(ft1),
            "--model", str(ft2), "--quiet"]


def beside(out):
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_a_full_disk_while_writing_is_one_line_naming_the_file(tmp_path, llama_trio, monkeypatch, code):
    def disk_full(shard):
        raise OSError(code, os.strerror(code))  # as a write on an open file raises it: no file name

    monkeypatch.setattr(writer, "_header", disk_full)
    out = tmp_path / "out"
    before = snapshot(list(llama_trio))
    outcome = run_cli(merge_argv(llama_trio, out))
    assert outcome.traceback is None and outcome.code == 2
    assert outcome.stderr.splitlines() == [f"error: {out / 'model.safetensors'}: {os.strerror(code)}; nothing written"]
    assert not out.exists() and beside(out) == [] and snapshot(list(llama_trio)) == before


def test_an_os_error_outside_the_writer_is_one_line(tmp_path, llama_trio, monkeypatch):
    from vadasm.io import Checkpoint

    def unreadable(ref, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(ref))

    monkeypatch.setattr(Checkpoint, "open", unreadable)
    out = tmp_path / "out"
    outcome = run_cli(merge_argv(llama_trio, out))
    assert outcome.traceback is None and outcome.code == 2
    assert outcome.stderr.splitlines() == [f"error: {llama_trio[0]}: Permission denied"]
    assert not out.exists() and beside(out) == []


def test_sigterm_removes_the_temp_folder_and_exits_143(tmp_path, llama_trio, monkeypatch):
    real_header = writer._header

    def terminated_while_writing(shard):
        os.kill(os.getpid(), signal.SIGTERM)  # handled in this (main) thread before the next line runs
        return real_header(shard)

    monkeypatch.setattr(writer, "_header", terminated_while_writing)
    handler_before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    before = snapshot(list(llama_trio))
    outcome = run_cli(merge_argv(llama_trio, out))
    assert outcome.traceback is None and outcome.code == 128 + signal.SIGTERM
    assert outcome.stderr.splitlines() == ["error: stopped by SIGTERM"]
    assert not out.exists() and beside(out) == [] and snapshot(list(llama_trio)) == before
    assert signal.getsignal(signal.SIGTERM) is handler_before  # main() put the old handler back


USAGE_ERRORS = [["merge", "--seed", "x", "out"], ["merge"], ["bogus"], ["merge", "out", "--bogus", "1"]]


@pytest.mark.parametrize("argv", USAGE_ERRORS)
def test_usage_errors_are_one_line_and_exit_2(argv):
    outcome = run_cli(argv)
    lines = outcome.stderr.strip().splitlines()
    assert outcome.code == 2 and outcome.traceback is None
    assert len(lines) == 1 and lines[0].startswith("error: vadasm") and "--help" in lines[0], outcome.stderr
