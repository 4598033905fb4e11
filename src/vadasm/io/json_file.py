"""Reading a JSON file a user named (an adapter config, a manifest, a data file): one way to refuse it
in one line, whether it is missing, unreadable or not JSON.

Model folders' own JSON files go through `io.model_folder.read_json` instead (confined, size-capped).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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


def jsonl_records(path: Path, fields: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line of a JSONL file a user named; a line that is not a JSON
    object with every one of `fields`, or a file that cannot be read, is one line naming it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError) as err:
        raise VadasmError(f"{path}: cannot be read ({type(err).__name__})") from None
    wanted = " and ".join(f'"{name}"' for name in fields) + (" fields" if len(fields) > 1 else " field")
    wanted = wanted if len(fields) > 1 else "a " + wanted
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or any(name not in record for name in fields):
            raise VadasmError(f"{path}:{number}: expected a JSON object with {wanted}")
        yield number, record
