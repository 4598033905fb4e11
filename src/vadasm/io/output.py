"""Write an output folder so that nothing is ever lost: a temporary sibling renamed on success.

The promise, and how it is kept:
- an output that equals, holds or lies inside an input (symlinks resolved) is refused before any work,
  with or without `--force`, so no input can be overwritten or deleted;
- one run at a time per destination: an exclusive `flock` on `.NAME.vadasm-lock` beside it. Inside
  `locks_held_for_the_run()` (the CLI wraps every command in it) the lock is taken by the first check
  and kept to the rename, so a second run fails at once with one line; a library call holds it while
  writing, and the first check only probes it (a refused call leaves no lock file behind);
- the existence check is repeated at rename time, and `--force` replaces only an earlier vadasm
  output (a folder holding one of `OUTPUT_MARKERS`) or an empty folder; the old one is moved aside
  and deleted only after the new one is in place;
- temporary folders carry the pid (`.NAME.vadasm-tmp-PID`); those of dead runs are removed by the
  next run (a run killed between moving the old output aside and the rename gets it put back);
- OS errors while writing (full disk, read-only file system, file-size limit) become one line;
- `InputWatch`: inputs fingerprinted at open, and any change to them refused before the rename.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from vadasm.errors import VadasmError

if TYPE_CHECKING:
    from vadasm.io.checkpoint import Checkpoint

# Files that mark a folder as written by vadasm (merge/graft/moe/transfer/align, blend, decompose, rotations).
OUTPUT_MARKERS = ("vadasm_config.json", "blend_summary.json", "decomposition.json", "rotations.json")

# What a run reads: folders, or opened checkpoints (then also checked for changes before the rename).
InputPaths = Iterable["str | Path | Checkpoint | None"]

_held_locks: dict[Path, tuple[int, list[Path]]] = {}  # output -> (lock fd, parent folders this run made)
_writing: set[Path] = set()  # outputs with an atomic_output_dir open in this process
_hold_for_the_run = False


@contextmanager
def locks_held_for_the_run() -> Iterator[None]:
    """Keep each lock from `check_output_free` to the end of the write (at the latest, of this block),
    so a concurrent run on the same output fails before it spends any time."""
    global _hold_for_the_run
    _hold_for_the_run = True
    try:
        yield
    finally:
        _hold_for_the_run = False
        _release_all()


def check_output_free(out: str | Path, force: bool, inputs: InputPaths = ()) -> None:
    """Fail before any work if `out` touches an input, may not be replaced, or another run writes it."""
    out = _resolved(out)
    _claim(out, force, inputs)
    if not _hold_for_the_run and out not in _writing:
        _release(out)


def _claim(out: Path, force: bool, inputs: InputPaths) -> None:
    """Every check, with the lock taken (and kept when they pass); dead runs' temp folders removed."""
    refuse_overlap(out, inputs)
    _lock(out)
    try:
        clean_dead_runs(out)
        _refuse_existing(out, force)
    except OSError as err:
        _release(out)
        raise VadasmError(f"{err.filename or out}: {_reason(err)}; cannot write {out}") from None
    except BaseException:
        _release(out)
        raise


def refuse_overlap(out: Path, inputs: InputPaths) -> None:
    """Refuse an output equal to, holding, or inside any input (both paths with symlinks resolved)."""
    for ref in inputs:
        ref = getattr(ref, "path", ref)  # a Checkpoint stands for its folder
        if ref is None:
            continue
        given = Path(ref).expanduser()
        if not os.path.lexists(given):  # a Hub id or a missing folder: the reader reports it
            continue
        for real in _real_locations(given):
            if real == out:
                problem = "is the input"
            elif out in real.parents:
                problem = "holds the input"
            elif real in out.parents:
                problem = "lies inside the input"
            else:
                continue
            raise VadasmError(f"{out}: the output folder {problem} {given}; choose another output (nothing written)")


@contextmanager
def atomic_output_dir(out: str | Path, force: bool = False, inputs: InputPaths = ()) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes `out`, on any failure it disappears.

    Opened checkpoints among `inputs` are checked for changes just before the rename (an input
    rewritten or replaced during the run is refused, nothing written)."""
    out, inputs = _resolved(out), list(inputs)
    if out in _writing:
        raise RuntimeError(f"{out} is already being written by this process")
    _claim(out, force, inputs)
    _writing.add(out)
    tmp = out.parent / f".{out.name}.vadasm-tmp-{os.getpid()}"
    try:
        try:
            tmp.mkdir()
            yield tmp
            InputWatch(ref for ref in inputs if hasattr(ref, "verify_unchanged")).refuse_changed("run")
            _rename_into_place(tmp, out, force)
        except OSError as err:
            raise VadasmError(_describe_os_error(err, tmp, out)) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
    finally:
        _writing.discard(out)
        _release(out)


def clean_dead_runs(out: Path) -> None:
    """Remove the temporary folders that runs writing `out` left when they were killed.

    Only names of our exact pattern whose pid is not alive; called with the lock held, so no live
    run is writing `out`. A moved-aside old output whose replacement never arrived is put back.
    """
    pattern = re.compile(rf"\.{re.escape(out.name)}\.vadasm-(tmp|old)-(\d+)")
    for entry in out.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(match[2])
        if (_alive(pid) and pid != os.getpid()) or (pid == os.getpid() and out in _writing):
            continue
        if match[1] == "old" and not os.path.lexists(out):
            entry.rename(out)
        else:
            shutil.rmtree(entry, ignore_errors=True)


def _rename_into_place(tmp: Path, out: Path, force: bool) -> None:
    """The finished temp folder becomes `out`; an old output is deleted only once the new one is in."""
    if not os.path.lexists(out):
        os.rename(tmp, out)
        return
    if not force:  # appeared during the run (the lock keeps vadasm runs out; something else wrote it)
        raise VadasmError(f"{out}: output appeared while this run was writing it; kept it, nothing written "
                          "(pass --force to replace it)")
    _refuse_unreplaceable(out)
    old = out.parent / f".{out.name}.vadasm-old-{os.getpid()}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _refuse_existing(out: Path, force: bool) -> None:
    if not os.path.lexists(out):
        return
    if not force:
        raise VadasmError(f"{out}: output already exists; pass --force to overwrite")
    _refuse_unreplaceable(out)


def _refuse_unreplaceable(out: Path) -> None:
    """--force replaces an earlier vadasm output or an empty folder, nothing else."""
    if out.is_symlink() or not out.is_dir():
        raise VadasmError(f"{out}: output exists and is not a folder; --force replaces only a folder")
    names = {p.name for p in out.iterdir()}
    if names and not names & set(OUTPUT_MARKERS):
        raise VadasmError(f"{out}: output exists and is not a vadasm output (no {OUTPUT_MARKERS[0]}) nor empty; "
                          "--force will not replace it")


def _lock(out: Path) -> None:
    """Take the exclusive lock on `out` (a no-op when this process holds it already)."""
    if out in _held_locks:
        return
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock_file = out.parent / f".{out.name}.vadasm-lock"
        while True:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise VadasmError(f"another vadasm run is writing {out}") from None
            try:
                if os.stat(lock_file).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # the file was removed by the run that held it: lock the new one
    except OSError as err:
        _remove_empty(made)
        raise VadasmError(f"{err.filename or out.parent}: {_reason(err)}; cannot write {out}") from None
    _held_locks[out] = (fd, made)


def _release(out: Path) -> None:
    held = _held_locks.pop(out, None)
    if held is None:
        return
    fd, made = held
    with suppress(OSError):
        os.unlink(out.parent / f".{out.name}.vadasm-lock")  # while locked: a run that opened it retries
    os.close(fd)
    if not os.path.lexists(out):
        _remove_empty(made)


def _release_all() -> None:
    for out in list(_held_locks):
        _release(out)


atexit.register(_release_all)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # innermost first
        try:
            folder.rmdir()
        except OSError:
            return


def _resolved(out: str | Path) -> Path:
    return Path(out).expanduser().resolve()


def _real_locations(path: Path) -> set[Path]:
    """Where an input's bytes really are: the folder and the targets of symlinks inside it
    (a Hub cache snapshot links each file to a blob elsewhere)."""
    real = {path.resolve()}
    with suppress(OSError):  # an unreadable folder: the reader reports it
        if path.is_dir():
            real |= {entry.resolve() for entry in path.iterdir() if entry.is_symlink()}
    return real


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _describe_os_error(err: OSError, tmp: Path, out: Path) -> str:
    """One line naming the file: paths inside the temp folder are named as they would be in `out`."""
    reason = _reason(err)
    if not err.filename:
        return f"{out}: {reason}; nothing written"
    name = Path(os.fsdecode(err.filename))
    if name == tmp or tmp in name.parents:
        return f"{out / name.relative_to(tmp)}: {reason}; nothing written"
    return f"{name}: {reason}; nothing written to {out}"



def _reason(err: OSError) -> str:
    """strerror ("No space left on device"), else the first line of the message."""
    if err.strerror:
        return err.strerror
    if err.errno:
        return os.strerror(err.errno)
    return (str(err).splitlines() or [type(err).__name__])[0]


class InputWatch:
    """The inputs of one run: fingerprinted at open (what provenance records) and checked just before
    the rename (`Checkpoint.verify_unchanged`), so an input rewritten in place or replaced during the
    run is refused instead of merged half old, half new."""

    def __init__(self, checkpoints: Iterable[Checkpoint | None] = ()):
        self.checkpoints: list[Checkpoint] = []
        self._prints: dict[int, str] = {}
        for checkpoint in checkpoints:
            self.add(checkpoint)

    def add(self, checkpoint: Checkpoint | None) -> None:
        """Watch one more input (call it right after opening, before reading any tensor)."""
        if checkpoint is None or id(checkpoint) in self._prints:
            return
        self.checkpoints.append(checkpoint)
        self._prints[id(checkpoint)] = checkpoint.fingerprint()

    def fingerprint(self, checkpoint: Checkpoint) -> str:
        """The fingerprint taken at open."""
        return self._prints[id(checkpoint)]

    def refuse_changed(self, what: str) -> None:
        for checkpoint in self.checkpoints:
            try:
                checkpoint.verify_unchanged()
            except VadasmError as err:
                raise VadasmError(f"{err} during the {what}; nothing written") from None
