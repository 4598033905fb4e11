"""Benchmark rows from local JSONL / JSON / Parquet files, or from the Hub when the user names it.

Every row keeps its 1-based row number and its source, so a malformed row is reported as
`FILE: row N: problem` instead of a KeyError deep inside a scorer. The Hub is only contacted when
the source is not a local path and looks like `owner/name` (an explicit user choice).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vadasm.errors import MissingExtraError, VadasmError
from vadasm.eval.benchmarks.rows import Row
from vadasm.eval.benchmarks.vqa_files import is_official_spec, official_vqa_rows
from vadasm.io.json_file import read_json_file

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")
# Our split names -> the names Hub datasets use, tried in order.
HUB_SPLITS = {"val": ("validation", "val", "dev"), "test": ("test",), "train": ("train",)}


def parse_sources(values: list[str] | None) -> dict[str, str]:
    """`--data TASK=SOURCE` flags as a dict; the task names are checked by the runner."""
    sources = {}
    for value in values or []:
        task, eq, source = value.partition("=")
        if not eq or not task.strip() or not source.strip():
            raise VadasmError(f"--data {value!r}: write TASK=FILE (or TASK=owner/name for a Hub dataset)")
        sources[task.strip()] = source.strip()
    return sources


def is_hub_id(source: str) -> bool:
    return not Path(source).exists() and HUB_ID.match(source) is not None


def load_rows(source: str, split: str = "test") -> list[Row]:
    """All rows of a local data file, official VQA files (`Q.json,A.json,IMAGES/`) or a Hub split."""
    if is_official_spec(source):
        return official_vqa_rows(source)
    path = Path(source).expanduser()
    if path.is_file():
        return list(_file_rows(path))
    if path.exists():
        raise VadasmError(f"{path}: is a folder; give a .jsonl, .json or .parquet file")
    if is_hub_id(source):
        return _hub_rows(source, split)
    raise VadasmError(f"{path}: data file not found (a Hub dataset is written owner/name)")


def _file_rows(path: Path) -> Iterable[Row]:
    suffix = path.suffix.lower()
    folder = path.parent
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as err:
                    raise VadasmError(f"{path}: row {number}: not valid JSON ({err.msg})") from None
                if not isinstance(data, dict):
                    raise VadasmError(f"{path}: row {number}: a row must be a JSON object")
                yield Row(str(path), number, data, folder)
    elif suffix == ".json":
        records = read_json_file(path)
        if isinstance(records, dict) and isinstance(records.get("data"), list):
            records = records["data"]
        if not isinstance(records, list):
            raise VadasmError(f"{path}: a .json data file holds a list of objects (or {{'data': [...]}})")
        for number, data in enumerate(records, 1):
            if not isinstance(data, dict):
                raise VadasmError(f"{path}: row {number}: a row must be a JSON object")
            yield Row(str(path), number, data, folder)
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise MissingExtraError("pyarrow", "eval", "Reading Parquet benchmark files") from err
        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow raises several types for corrupt files
            raise VadasmError(f"{path}: not a readable Parquet file ({err})") from None
        for number, data in enumerate(table.to_pylist(), 1):
            yield Row(str(path), number, data, folder)
    else:
        raise VadasmError(f"{path}: unsupported data file type '{suffix}' (use .jsonl, .json or .parquet)")


def _hub_rows(source: str, split: str) -> list[Row]:
    try:
        import datasets
    except ImportError as err:
        raise MissingExtraError("datasets", "eval", f"Loading the Hub dataset {source}") from err
    name, _, config = source.partition(":")
    try:
        available = datasets.get_dataset_split_names(name, config or None)
        hub_split = next((s for s in HUB_SPLITS.get(split, (split,)) if s in available), None)
        if hub_split is None:
            hub_split = available[0] if len(available) == 1 else None
        if hub_split is None:
            raise VadasmError(f"{source}: no '{split}' split on the Hub (it has {', '.join(available)})")
        dataset = datasets.load_dataset(name, config or None, split=hub_split)
    except VadasmError:
        raise
    except Exception as err:  # network, auth, missing dataset: one line for the user
        raise VadasmError(f"{source}: could not load from the Hub ({type(err).__name__}: {err})") from None
    return [Row(f"{source}[{hub_split}]", n, dict(data), None) for n, data in enumerate(dataset, 1)]


def image_file(row: Row, value: Any, cache: Path) -> Path:
    """A row's image as a file: a path (relative to the data file) or embedded bytes written to `cache`."""
    if isinstance(value, str):
        path = Path(value)
        if not path.is_absolute() and row.folder is not None:
            path = row.folder / path
        if not path.is_file():
            raise row.error(f"image file {path} not found")
        return path
    data = value.get("bytes") if isinstance(value, dict) else None
    if data is None and hasattr(value, "save"):  # a PIL image from `datasets`
        import io

        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        data = buffer.getvalue()
    if not isinstance(data, (bytes, bytearray)):
        if isinstance(value, dict) and isinstance(value.get("path"), str):
            return image_file(row, value["path"], cache)
        raise row.error("field 'image' should be a file path or embedded image bytes")
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{hashlib.sha256(data).hexdigest()[:24]}.img"
    if not target.is_file():
        target.write_bytes(data)
    return target
