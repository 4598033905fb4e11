"""Stream tensors into sharded safetensors files, one tensor in memory at a time.

Because the merge plan knows every output name, shape and dtype before any math runs, each
shard's header can be written first and tensor bytes appended as they are computed. No shard
is ever assembled in RAM, and the bytes on disk depend only on the tensors (deterministic).

Small writes (a streamed merge's row chunks) go to disk on one background thread while the caller
computes the next chunk, at most `WRITE_AHEAD_BYTES` behind; a file write is a kernel copy that releases
the GIL, so on two cores merging and writing overlap. Larger tensors are written synchronously, so
memory still follows one tensor. Shards are opened and closed only once every queued write is done, so
the background thread never creates a file (a failed run's temporary folder can always be removed).
"""

from __future__ import annotations

import json
import re
import struct
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from vadasm.errors import VadasmError

TORCH_TO_SAFETENSORS = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
DTYPE_NAMES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
               "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
DEFAULT_SHARD_SIZE = "5GB"
WRITE_AHEAD_BYTES = 64 << 20  # queued but unwritten bytes, at most (and no single write above it is queued)
_WRITES: ThreadPoolExecutor | None = None  # one thread for every writer: writes stay in submission order


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPE_NAMES[name.lower()]
    except KeyError:
        raise VadasmError(f"unknown dtype '{name}' (choose from {', '.join(DTYPE_NAMES)})") from None


_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]I?B|B)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str | int) -> int:
    """'5GB', '500MB', '2GiB' or a byte count, as bytes (decimal units, like transformers).

    At least one byte: a zero, negative, NaN or unreadable size is refused in one line.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = _SIZE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            shown = repr(text) if len(repr(text)) <= 40 else repr(text)[:37] + "..."
            raise VadasmError(f"cannot read size {shown} (examples: 5GB, 500MB, 2GiB)")
        size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "B").upper()])
    if size < 1:
        raise VadasmError(f"size {text!r} is less than one byte; give a positive size such as 5GB or 500MB")
    return size


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * torch.empty((), dtype=self.dtype).element_size()


class ShardedWriter:
    """Writes the planned tensors, in plan order, into `folder` as safetensors shards + index."""

    def __init__(self, folder: Path, plan: list[PlannedTensor], max_shard_bytes: int = parse_size(DEFAULT_SHARD_SIZE)):
        self.folder = folder
        self.plan = plan
        self.shards = _split(plan, max_shard_bytes)
        count = len(self.shards)
        self.shard_names = (
            ["model.safetensors"] if count == 1
            else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        )
        self._next = 0
        self._rows_done = 0  # rows of plan[_next] written so far
        self._shard = -1
        self._left_in_shard = 0
        self._file = None
        self._queued: deque[tuple[Future, int]] = deque()
        self._queued_bytes = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write the next planned tensor whole."""
        planned = self.plan[self._next]
        if name != planned.name or tuple(tensor.shape) != planned.shape:
            raise RuntimeError(f"writer expected {planned.name} {planned.shape}, got {name} {tuple(tensor.shape)}")
        self._append(tensor, rows=planned.shape[0] if planned.shape else 1)

    def write_rows(self, name: str, rows: torch.Tensor, queue: bool = True) -> None:
        """Append the next rows (first dimension) of the current tensor, so a tensor can be computed
        and written in chunks; it is complete once all its rows have come, in order. `queue=False`
        writes now: for a plain copy, whose reads already run on another thread, a third thread only
        competes for the cores (measured 10% slower at 1B on 2 cores)."""
        planned = self.plan[self._next]
        if name != planned.name or tuple(rows.shape[1:]) != planned.shape[1:] or not planned.shape or (
                self._rows_done + rows.shape[0] > planned.shape[0]):
            raise RuntimeError(f"writer expected rows of {planned.name} {planned.shape} after row "
                               f"{self._rows_done}, got {name} {tuple(rows.shape)}")
        self._append(rows, rows=rows.shape[0], queue=queue)

    def _append(self, tensor: torch.Tensor, rows: int, queue: bool = True) -> None:
        planned = self.plan[self._next]
        if self._rows_done == 0 and self._left_in_shard == 0:
            self._open_next_shard()
        data = tensor.detach().to("cpu", planned.dtype).contiguous()
        self._write(data.reshape(-1).view(torch.uint8).numpy(), queue)  # the tensor's own buffer, no copy
        self._rows_done += rows
        if self._rows_done == (planned.shape[0] if planned.shape else 1):
            self._next += 1
            self._left_in_shard -= 1
            self._rows_done = 0

    def _write(self, buffer, queue: bool = True) -> None:
        """Append bytes to the open shard: queued on the write thread when small, else now. The caller
        must not change the tensor behind `buffer` afterwards (no caller does: each writes fresh results)."""
        file, path = self._file, self.folder / self.shard_names[self._shard]

        def write() -> None:
            with _naming(path):
                file.write(buffer)

        if not queue or buffer.nbytes > WRITE_AHEAD_BYTES:
            self._wait(0)
            write()
            return
        global _WRITES
        if _WRITES is None:
            _WRITES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vadasm-write")
        self._queued.append((_WRITES.submit(write), buffer.nbytes))
        self._queued_bytes += buffer.nbytes
        self._wait(WRITE_AHEAD_BYTES)

    def _wait(self, most_bytes: int) -> None:
        """Until at most `most_bytes` are queued; a queued write's error (full disk ...) is raised here."""
        while self._queued and self._queued_bytes > most_bytes:
            future, size = self._queued.popleft()
            self._queued_bytes -= size
            future.result()

    def close(self) -> None:
        if self._next != len(self.plan):
            raise RuntimeError(f"writer closed after {self._next} of {len(self.plan)} tensors")
        self._wait(0)
        if self._file is not None:
            with _naming(self.folder / self.shard_names[self._shard]):
                self._file.close()  # flushes: a full disk can show here
        if len(self.shards) > 1:
            weight_map = {t.name: self.shard_names[i] for i, shard in enumerate(self.shards) for t in shard}
            index = {"metadata": {"total_size": sum(t.nbytes for t in self.plan)}, "weight_map": weight_map}
            index_file = self.folder / "model.safetensors.index.json"
            with _naming(index_file):
                index_file.write_text(json.dumps(index, indent=2) + "\n")

    def _open_next_shard(self) -> None:
        self._wait(0)
        if self._file is not None:
            with _naming(self.folder / self.shard_names[self._shard]):
                self._file.close()
        self._shard += 1
        shard = self.shards[self._shard]
        with _naming(self.folder / self.shard_names[self._shard]):
            self._file = open(self.folder / self.shard_names[self._shard], "wb")  # noqa: SIM115 (spans write calls)
            self._file.write(_header(shard))
        self._left_in_shard = len(shard)


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An OS error while writing (full disk, file-size limit) names the file it hit, so the CLI's
    one line says where; writes on an open file raise it without a name."""
    try:
        yield
    except OSError as err:
        if err.filename:
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err


def _split(plan: list[PlannedTensor], max_shard_bytes: int) -> list[list[PlannedTensor]]:
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for tensor in plan:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def _header(shard: list[PlannedTensor]) -> bytes:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in shard:
        header[tensor.name] = {
            "dtype": TORCH_TO_SAFETENSORS[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw
