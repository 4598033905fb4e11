"""One benchmark row with where it came from, so a bad field is reported as `FILE: row N: problem`.

Its own module because both the file loaders (data.py) and the official VQA reader (vqa_files.py)
build rows, and data.py reads VQA files: keeping Row apart leaves no import circle between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vadasm.errors import VadasmError


@dataclass(frozen=True)
class Row:
    source: str
    number: int  # 1-based line (JSONL) or record index (JSON, Parquet, Hub)
    data: dict[str, Any]
    folder: Path | None  # where relative image paths are resolved; None for Hub rows

    def where(self) -> str:
        return f"{self.source}: row {self.number}"

    def error(self, problem: str) -> VadasmError:
        return VadasmError(f"{self.where()}: {problem}")

    def field(self, *names: str, kind: type | tuple[type, ...] = str) -> Any:
        """The first present field of `names`, type-checked, or a clear error naming the row."""
        for name in names:
            if name in self.data and self.data[name] is not None:
                value = self.data[name]
                if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
                    raise self.error(f"field '{name}' should be {_kind_name(kind)}, got {type(value).__name__}")
                return value
        raise self.error(f"missing field {' or '.join(repr(n) for n in names)}")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)
