"""Read and check a safetensors header without loading any tensor data.

We parse the header ourselves (it is 8 bytes of length plus JSON) so that a truncated or
corrupt shard is reported with its file name before any work starts, instead of failing
half-way through a merge.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from vadasm.errors import VadasmError

# Bytes per element for each safetensors dtype string.
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives inside a safetensors file."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Return the tensor table of a safetensors file, or raise a VadasmError naming the defect."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise VadasmError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > size - 8:
            raise VadasmError(f"{path}: corrupt or truncated safetensors header")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise VadasmError(f"{path}: corrupt safetensors header ({err})") from None
    data_size = size - 8 - header_len
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if end > data_size:
            raise VadasmError(
                f"{path}: truncated safetensors file (tensor '{name}' ends at byte {end}, "
                f"file holds {data_size} data bytes)"
            )
        entries[name] = TensorEntry(info["dtype"], tuple(info["shape"]), begin, end)
    return entries
