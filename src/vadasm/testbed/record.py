"""Provenance and crash safety for testbed artefacts.

Every artefact is written into a temporary sibling folder and renamed when complete, then gets a
`vadasm_testbed.json` saying how it was made, so a killed build never leaves a half model that a
later run would mistake for a finished one.
"""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import transformers

RECORD_NAME = "vadasm_testbed.json"


@dataclass
class BuildRecord:
    """How one artefact was made; measured scores are added after evaluation."""

    artefact: str
    recipe: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    scores: dict[str, Any] = field(default_factory=dict)
    # a trained stage's validation criterion, steps used of its budget and val curve (`RoundsResult.record`)
    training: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(
        default_factory=lambda: {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "threads": str(torch.get_num_threads()),
        }
    )
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def write_record(folder: Path, record: BuildRecord) -> None:
    (folder / RECORD_NAME).write_text(json.dumps(asdict(record), indent=2) + "\n")


def read_record(folder: Path) -> dict[str, Any]:
    return json.loads((folder / RECORD_NAME).read_text())


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder that becomes `final` only if the block succeeds."""
    tmp = final.with_name(final.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
