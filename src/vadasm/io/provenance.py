"""The writing steps every output shares, so that outputs are reproducible and say where they came from.

One place for each rule that six writers (merge, graft, blend, moe, transfer, align) had copied and let
drift: tensors in natural name order (`layers.2` before `layers.10`), one seed per tensor (random masks
independent of the processing order), the dtype recorded in config.json, and the provenance record
(`vadasm_config.json`: tool, version, kind, then what the writer adds: inputs, recipe, result ...).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vadasm.version import __version__

if TYPE_CHECKING:
    from vadasm.io.checkpoint import Checkpoint
    from vadasm.io.writer import PlannedTensor

PROVENANCE_FILE = "vadasm_config.json"


def natural_key(name: str) -> list:
    """Sort key that orders digit runs as numbers: `layers.2.x` before `layers.10.x`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def tensor_seed(seed: int, name: str) -> int:
    """Per-tensor seed: random masks do not depend on the order tensors are processed in."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def set_config_dtype(config: dict, dtype: torch.dtype) -> None:
    """Record `dtype` under the key the config already uses: `torch_dtype` in a config that has only that
    (older transformers read no other), else `dtype` (the name transformers writes today)."""
    key = "torch_dtype" if "torch_dtype" in config and "dtype" not in config else "dtype"
    config[key] = str(dtype).removeprefix("torch.")


def set_plan_dtype(config: dict, plan: Iterable[PlannedTensor]) -> None:
    """Record the output's dtype when all its floating tensors share one; a mixed output keeps the source's."""
    dtypes = {p.dtype for p in plan if p.dtype.is_floating_point}
    if len(dtypes) == 1:
        set_config_dtype(config, next(iter(dtypes)))


def provenance_record(kind: str, **fields: Any) -> dict:
    """The one provenance schema: `tool`, `version`, `kind` (what wrote the folder), then `fields` in order."""
    for reserved in ("tool", "version"):
        if reserved in fields:
            raise ValueError(f"provenance field {reserved!r} is set by provenance_record itself")
    return {"tool": "vadasm", "version": __version__, "kind": kind, **fields}


def input_records(checkpoints: Iterable[Checkpoint]) -> list[dict]:
    """Each input as `{"path", "fingerprint"}` (its fingerprint now, as the writer read it)."""
    return [{"path": str(c.path), "fingerprint": c.fingerprint()} for c in checkpoints]


def write_provenance(folder: str | Path, record: dict) -> None:
    """Write `record` as the folder's vadasm_config.json (values JSON cannot hold are written as text)."""
    (Path(folder) / PROVENANCE_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
