"""The output writer never loses anything: inputs, a finished output, or an old output under --force.

Plain folders stand in for models here (the writer only sees paths); tests/fuzz/ runs the same
promises through the commands on tiny models.
"""

import errno
import fcntl
import hashlib
import os
import subprocess
import sys

import pytest

from vadasm.errors import VadasmError
from vadasm.io import atomic_output_dir, check_output_free
from vadasm.io.output import locks_held_for_the_run


def digest(folder):
    """sha256 of every file under `folder`, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def model(tmp_path):
    """An input folder with a file in it."""
    folder = tmp_path / "models" / "ft1"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    return folder


def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("where", ["input", "symlink", "holds", "inside", "symlinked_file"])
def test_an_output_touching_an_input_is_refused_even_with_force(tmp_path, model, where):
    before = digest(tmp_path / "models")
    link = tmp_path / "link"
    link.symlink_to(model)
    if where == "symlinked_file":  # a Hub cache snapshot: the input's files link into another folder
        blobs = tmp_path / "blobs"
        blobs.mkdir()
        (blobs / "abc").write_bytes(b"blob")
        (model / "tokenizer.json").symlink_to(blobs / "abc")
        before = digest(tmp_path / "models")
    out = {"input": model, "symlink": link, "holds": tmp_path / "models", "inside": model / "merged",
           "symlinked_file": tmp_path / "blobs"}[where]
    for force in (False, True):
        with pytest.raises(VadasmError, match="the output folder (is|holds|lies inside) the input") as err:
            check_output_free(out, force, [str(model)])
        assert "\n" not in str(err.value)
        with pytest.raises(VadasmError, match="the output folder"), atomic_output_dir(out, force, [model]):
            pytest.fail("the body must not run")
    assert digest(tmp_path / "models") == before
    assert not (model / "merged").exists() and hidden(tmp_path) == [] and hidden(model.parent) == []


def test_a_second_run_on_the_same_output_fails_with_one_line(tmp_path):
    out = tmp_path / "out"
    # Another process holding the lock: an flock on its own open file (conflicts even within one process).
    lock = os.open(tmp_path / ".out.vadasm-lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with pytest.raises(VadasmError, match=f"^another vadasm run is writing {out}$"):
            check_output_free(out, False)
        with pytest.raises(VadasmError, match="another vadasm run"), atomic_output_dir(out):
            pytest.fail("the body must not run")
    finally:
        os.close(lock)
    assert not out.exists()


def test_the_cli_keeps_the_lock_from_the_first_check_to_the_rename(tmp_path):
    out = tmp_path / "out"
    with locks_held_for_the_run():
        check_output_free(out, False)
        probe = os.open(tmp_path / ".out.vadasm-lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):  # held by the run, before any writing started
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(probe)
        with atomic_output_dir(out) as tmp:
            (tmp / "vadasm_config.json").write_text("{}")
        assert hidden(tmp_path) == []  # released (and removed) once the output is in place
    assert (out / "vadasm_config.json").is_file()


def test_a_library_check_leaves_no_lock_file_or_folder(tmp_path):
    out = tmp_path / "new" / "out"
    check_output_free(out, False)  # passes; outside the CLI it only probes the lock
    assert not (tmp_path / "new").exists()


def test_an_output_that_appeared_during_the_run_is_kept(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(VadasmError, match="appeared while this run was writing it"), atomic_output_dir(out) as tmp:
        (tmp / "model.safetensors").write_bytes(b"mine")
        out.mkdir()  # something else finished the same output meanwhile
        (out / "model.safetensors").write_bytes(b"theirs")
    assert (out / "model.safetensors").read_bytes() == b"theirs"
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("old, allowed", [
    ({"vadasm_config.json": "{}", "model.safetensors": "old"}, True),
    ({"blend_summary.json": "{}"}, True),
    ({}, True),
    ({"thesis.tex": "years of work"}, False),
    ("a file", False),
])
def test_force_replaces_only_an_earlier_vadasm_output_or_an_empty_folder(tmp_path, old, allowed):
    out = tmp_path / "out"
    if isinstance(old, str):
        out.write_text(old)
    else:
        out.mkdir()
        for name, text in old.items():
            (out / name).write_text(text)
    kept = out.read_text() if out.is_file() else digest(out)
    if allowed:
        with atomic_output_dir(out, force=True) as tmp:
            (tmp / "vadasm_config.json").write_text("new")
        assert digest(out).keys() == {"vadasm_config.json"} and (out / "vadasm_config.json").read_text() == "new"
    else:
        with pytest.raises(VadasmError, match="--force (will not replace it|replaces only a folder)"):
            check_output_free(out, True)
        assert (out.read_text() if out.is_file() else digest(out)) == kept
    assert hidden(tmp_path) == []


def test_force_keeps_the_old_output_when_the_new_one_cannot_be_put_in_place(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "vadasm_config.json").write_text("old")
    real_rename = os.rename

    def failing_rename(src, dst):
        if ".vadasm-tmp-" in str(src):
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(VadasmError, match="Input/output error; nothing written"), \
            atomic_output_dir(out, force=True) as tmp:
        (tmp / "vadasm_config.json").write_text("new")
    assert (out / "vadasm_config.json").read_text() == "old" and hidden(tmp_path) == []


def test_dead_runs_temp_folders_are_removed_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    dead, alive = dead_pid(), os.getppid()
    for name in (f".out.vadasm-tmp-{dead}", f".out.vadasm-tmp-{alive}", f".out.vadasm-tmp-{dead}x",
                 f".other.vadasm-tmp-{dead}", f"out.vadasm-tmp-{dead}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"half")
    with atomic_output_dir(out) as tmp:
        (tmp / "vadasm_config.json").write_text("{}")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert f".out.vadasm-tmp-{dead}" not in left
    assert {f".out.vadasm-tmp-{alive}", f".out.vadasm-tmp-{dead}x", f".other.vadasm-tmp-{dead}",
            f"out.vadasm-tmp-{dead}", "out"} == set(left)


def test_an_old_output_moved_aside_by_a_killed_run_is_put_back(tmp_path):
    out = tmp_path / "out"
    aside = tmp_path / f".out.vadasm-old-{dead_pid()}"  # killed between moving it aside and the rename
    aside.mkdir()
    (aside / "vadasm_config.json").write_text("finished earlier")
    with pytest.raises(VadasmError, match="already exists"):
        check_output_free(out, False)
    assert (out / "vadasm_config.json").read_text() == "finished earlier" and hidden(tmp_path) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES])
def test_os_errors_while_writing_are_one_line_naming_the_output_file(tmp_path, code):
    out = tmp_path / "out"
    with pytest.raises(VadasmError) as err, atomic_output_dir(out) as tmp:
        (tmp / "model.safetensors").write_bytes(b"part")
        raise OSError(code, os.strerror(code), str(tmp / "model.safetensors"))
    assert str(err.value) == f"{out / 'model.safetensors'}: {os.strerror(code)}; nothing written"
    assert not out.exists() and hidden(tmp_path) == []


def test_an_unwritable_destination_is_refused_before_any_work(tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(".vadasm-lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(VadasmError, match=f"Read-only file system; cannot write {tmp_path / 'a' / 'out'}$"):
        check_output_free(tmp_path / "a" / "out", False)
    assert list(tmp_path.iterdir()) == []  # the parent folder it made for the lock is gone again


def test_an_opened_input_changed_during_the_run_is_refused_before_the_rename(tmp_path):
    from tiny_checkpoints import write_tiny_llama
    from vadasm.io import Checkpoint

    source = Checkpoint.open(write_tiny_llama(tmp_path / "in"))
    out = tmp_path / "out"
    refused = pytest.raises(VadasmError, match="changed while being read.*; nothing written")
    with refused, atomic_output_dir(out, inputs=[source]) as tmp:
        (tmp / "x").write_text("partial")
        weights = source.path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x80\x7f")  # another program writes
    assert not out.exists() and hidden(tmp_path) == []
