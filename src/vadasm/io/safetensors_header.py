"""Read and check a safetensors header without loading any tensor data.

We parse the header ourselves (8 bytes of length, then JSON) and check every field the format
defines, so a corrupt, hostile or truncated shard is refused with its file name before any work
starts, instead of failing half-way through a merge or, worse, merging the wrong bytes.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vadasm.errors import VadasmError

# Bytes per element for each safetensors dtype string.
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}
MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors library itself enforces
# {name: {"shape": [...]}} is three levels deep; anything deeper is not a safetensors header, and
# refusing it before json.loads keeps a 200k-deep bracket bomb from reaching the recursive parser.
MAX_DEPTH = 3
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})
# A JSON string (an unterminated one runs to the end, so the scan stays linear) or a bracket.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives inside a safetensors file."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (json.loads would silently keep the last one)."""


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Return the tensor table of a safetensors file, or raise a VadasmError naming the defect."""
    try:
        with open(path, "rb") as handle:
            return read_open_header(handle, path)[0]
    except OSError as err:
        raise VadasmError(f"{path}: cannot read ({err.strerror})") from None


def read_open_header(handle: BinaryIO, path: Path) -> tuple[dict[str, TensorEntry], bytes]:
    """The checked tensor table of an open safetensors file, and the raw header bytes."""
    size = os.fstat(handle.fileno()).st_size
    handle.seek(0)
    raw_len = handle.read(8)
    if len(raw_len) < 8:
        raise VadasmError(f"{path}: not a safetensors file (shorter than 8 bytes)")
    (header_len,) = struct.unpack("<Q", raw_len)
    if header_len < 2 or header_len > min(MAX_HEADER_BYTES, size - 8):
        raise VadasmError(f"{path}: corrupt or truncated safetensors header "
                          f"(says {header_len} bytes; the file holds {size})")
    raw = handle.read(header_len)
    if len(raw) != header_len:
        raise VadasmError(f"{path}: truncated safetensors file (header cut short while reading)")
    return parse_header(raw, size - 8 - header_len, path), raw


def parse_header(raw: bytes, data_size: int, path: Path | str) -> dict[str, TensorEntry]:
    """Check a raw header against the format and a data area of `data_size` bytes.

    Refused: non-JSON or non-UTF-8 text, nesting deeper than the format's, a top level that is
    not an object, repeated keys, entries without a known dtype, a shape of non-negative ints or
    two ordered non-negative offsets, a byte count that is not shape x dtype size, tensors past
    the end of the file or overlapping another, bytes that belong to no tensor (the `safetensors`
    library, and so transformers, refuses those files too), and metadata that is not str -> str.
    """
    depth = _max_depth(raw)
    if depth > MAX_DEPTH:
        raise VadasmError(f"{path}: corrupt safetensors header (nested {depth}+ levels deep)")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=refuse_duplicate_keys)
    except DuplicateKeyError as err:
        raise VadasmError(f"{path}: corrupt safetensors header ({err})") from None
    except UnicodeDecodeError:
        raise VadasmError(f"{path}: corrupt safetensors header (not UTF-8 text)") from None
    except (ValueError, RecursionError) as err:
        raise VadasmError(f"{path}: corrupt safetensors header ({_first_line(err)})") from None
    if not isinstance(header, dict):
        raise VadasmError(f"{path}: corrupt safetensors header (a JSON {type(header).__name__}, not an object)")
    metadata = header.get("__metadata__")
    if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise VadasmError(f"{path}: corrupt safetensors header (__metadata__ must map strings to strings)")
    entries = {name: _entry(path, name, info, data_size)
               for name, info in header.items() if name != "__metadata__"}
    _refuse_overlaps(path, entries)
    _refuse_gaps(path, entries, data_size)
    return entries


def _entry(path: Path | str, name: str, info: object, data_size: int) -> TensorEntry:
    where = f"{path}: tensor {shown(name)}"
    if not isinstance(info, dict):
        raise VadasmError(f"{where}: header entry is not an object")
    if info.keys() != _ENTRY_KEYS:
        missing, extra = sorted(_ENTRY_KEYS - info.keys()), sorted(info.keys() - _ENTRY_KEYS)
        problems = ([f"lacks {', '.join(missing)}"] if missing else []) + (
            [f"has unknown keys {', '.join(map(shown, extra))}"] if extra else [])
        raise VadasmError(f"{where}: header entry {' and '.join(problems)}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise VadasmError(f"{where}: unknown dtype {shown(dtype)} (known: {', '.join(DTYPE_SIZES)})")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise VadasmError(f"{where}: shape {shown(shape)} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise VadasmError(f"{where}: data_offsets {shown(offsets)} are not two non-negative integers")
    begin, end = offsets
    if begin > end:
        raise VadasmError(f"{where}: data_offsets {offsets} end before they begin")
    needed = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != needed:
        raise VadasmError(f"{where}: holds {end - begin} bytes but shape {shape} of {dtype} needs {needed}")
    if end > data_size:
        raise VadasmError(f"{path}: truncated safetensors file (tensor {shown(name)} ends at byte {end}, "
                          f"file holds {data_size} data bytes)")
    return TensorEntry(dtype, tuple(shape), begin, end)


def _refuse_overlaps(path: Path | str, entries: dict[str, TensorEntry]) -> None:
    """Two tensors sharing bytes would be read as each other; zero-size tensors share nothing."""
    spans = sorted((e.begin, e.end, name) for name, e in entries.items() if e.end > e.begin)
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise VadasmError(f"{path}: tensors {shown(a)} and {shown(b)} overlap in the file")


def _refuse_gaps(path: Path | str, entries: dict[str, TensorEntry], data_size: int) -> None:
    """Tensors must tile the data area in offset order, as the `safetensors` library checks: a hole or
    trailing bytes mean a tensor was dropped from the header or the file was damaged."""
    position = 0
    for begin, end, name in sorted((e.begin, e.end, name) for name, e in entries.items()):
        if begin != position:
            raise VadasmError(f"{path}: corrupt safetensors file (tensor {shown(name)} starts at byte {begin}, "
                              f"the previous one ends at {position})")
        position = end
    if position != data_size:
        raise VadasmError(f"{path}: corrupt safetensors file ({data_size - position} bytes after the last tensor "
                          "belong to no tensor)")


def _max_depth(raw: bytes) -> int:
    """Bracket nesting outside JSON strings, stopping as soon as it passes MAX_DEPTH."""
    depth = 0
    for token in _TOKEN.finditer(raw):
        char = token.group()[:1]
        if char in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                return depth
        elif char in (b"]", b"}"):
            depth -= 1
    return 0


def refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """An `object_pairs_hook` for json.loads that raises DuplicateKeyError on a repeated key."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise DuplicateKeyError(f"key {shown(repeated)} appears twice")
    return result


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def shown(value: object) -> str:
    """A value for a one-line message: quoted, escaped, and cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:120]
