"""Write a model folder atomically: into a hidden temporary sibling, renamed on success.

A crash, an error or Ctrl-C leaves the output location as it was; an existing output is
replaced only with `force=True`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vadasm.errors import VadasmError


def check_output_free(out: Path, force: bool) -> None:
    """Fail before any work if `out` exists and may not be replaced."""
    if out.exists() and not force:
        raise VadasmError(f"{out}: output already exists; pass --force to overwrite")
    if out.exists() and not out.is_dir():
        raise VadasmError(f"{out}: output exists and is not a folder")


@contextmanager
def atomic_output_dir(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes `out`, on failure it disappears."""
    out = Path(out).expanduser().resolve()
    check_output_free(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.vadasm-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.vadasm-old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
