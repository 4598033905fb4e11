"""Reading a JSON file a user named (an adapter config, a manifest, a data file): one way to refuse it
in one line, whether it is missing, unreadable or not JSON.

Model folders' own JSON files go through `io.model_folder.read_json` instead (confined, size-capped).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vadasm.errors import VadasmError


def read_json_file(path: Path, missing: str | None = None) -> Any:
    """The parsed content of `path`; VadasmError `missing` (default: '<path>: not found') when it is not a
    file, else one line naming the path and where the JSON breaks or why it cannot be read."""
    if not path.is_file():
        raise VadasmError(missing or f"{path}: not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise VadasmError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    except (UnicodeDecodeError, OSError) as err:
        raise VadasmError(f"{path}: cannot be read ({type(err).__name__})") from None
