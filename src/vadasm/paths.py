"""Where vadasm keeps its files on disk, for every package (testbed, benchmark image cache, ...).

A neutral home: `eval` and `testbed` both read it, and neither reaches into the other for it.
"""

from __future__ import annotations

import os
from pathlib import Path


def vadasm_home() -> Path:
    """The cache root, from `VADASM_HOME` or `~/.cache/vadasm`."""
    return Path(os.environ.get("VADASM_HOME", Path.home() / ".cache" / "vadasm")).expanduser()
