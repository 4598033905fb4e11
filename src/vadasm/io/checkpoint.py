"""Lazy, read-only access to a Hugging Face model folder, one tensor at a time.

A `Checkpoint` knows which file holds each tensor (from the shard index or the headers) and
reads tensors (or row ranges of them) with positioned reads on demand, so memory follows the
tensor being processed, not the model. It is the one reader every command uses, so every check
of an input happens when the folder is opened: headers (safetensors_header), which files are the
weights and that none lies outside the folder (model_folder), config against tensors
(config_check), sidecars that are copied into outputs. Weight files stay open from then on, and
`verify_unchanged` tells a writer whether any input changed while it was being read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch

from vadasm.errors import VadasmError
from vadasm.io.config_check import check_config_against_tensors, check_model_type
from vadasm.io.model_folder import (
    INDEX_FILE,
    check_sidecars,
    confined_file,
    find_weight_files,
    open_confined,
    read_json,
)
from vadasm.io.safetensors_header import DTYPE_SIZES, TensorEntry, read_open_header, shown
from vadasm.io.writer import TORCH_TO_SAFETENSORS

SAFETENSORS_TO_TORCH = {name: dtype for dtype, name in TORCH_TO_SAFETENSORS.items()}
# Every stored dtype read as itself (fp8 and wide unsigned ints included), for positioned reads.
_READ_AS = {**SAFETENSORS_TO_TORCH, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
            "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64}

# Files that travel with the weights: tokenizer, generation and processor settings.
SIDECAR_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "added_tokens.json", "generation_config.json",
    "chat_template.jinja", "chat_template.json", "preprocessor_config.json",
    "processor_config.json", "video_preprocessor_config.json",
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or Inf entry. The sum is checked first: finite only when every entry is, and over 10x
    cheaper than `isfinite` on every entry (100x on bf16); a sum that overflows falls back to the full check."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def resolve_model_path(ref: str | Path, revision: str | None = None) -> Path:
    """A local folder as is; a Hub id ("org/name") downloaded with huggingface_hub.

    The Hub is contacted only when `ref` is not an existing path and looks like a repo id.
    """
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise VadasmError(f"{path}: expected a model folder, found a file")
        return path
    if not _HUB_ID.match(str(ref)) or str(ref).startswith((".", "/", "~")):
        raise VadasmError(f"{ref}: model folder not found")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            str(ref), revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"],
        )
    except Exception as err:  # huggingface_hub raises many types; the message is what matters
        raise VadasmError(f"{ref}: not a local folder and could not be fetched from the Hub ({err})") from None
    return Path(local)


@dataclass(frozen=True)
class FileState:
    """What a file looked like when opened; any write or replacement changes one of the fields."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, status: os.stat_result) -> FileState:
        return cls(status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


@dataclass
class Checkpoint:
    """A model folder opened and checked for lazy reading."""

    path: Path
    config: dict
    entries: dict[str, TensorEntry]
    files: dict[str, Path]
    _pickled: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    _handles: dict[Path, tuple[BinaryIO, int]] = field(default_factory=dict, repr=False)  # file, data start
    _headers: dict[Path, bytes] = field(default_factory=dict, repr=False)
    _watched: dict[Path, FileState] = field(default_factory=dict, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        ref: str | Path,
        *,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
        revision: str | None = None,
    ) -> Checkpoint:
        path = resolve_model_path(ref, revision)
        config_file = path / "config.json"
        # States are taken before the files are read, so a change after that is caught at the end.
        watched = _watch(path, [config_file, path / INDEX_FILE, *(path / name for name in SIDECAR_FILES)])
        config = read_config(path)
        if config.get("auto_map") and not trust_remote_code:
            raise VadasmError(
                f"{config_file}: model needs remote code (auto_map); pass --trust-remote-code if you trust it"
            )
        weights = find_weight_files(path)
        checkpoint = cls(path, config, {}, {}) if weights.shards else cls._open_pickles(path, config, allow_pickle)
        try:
            checkpoint._read_shards(weights.shards)
            checkpoint._check_index(weights.weight_map)
            checkpoint._check_foreign(weights.foreign)
            check_sidecars(path, SIDECAR_FILES)
            checkpoint._watched = {**watched, **checkpoint._watched}
            shapes = {name: entry.shape for name, entry in checkpoint.entries.items()}
            check_config_against_tensors(config_file, config, shapes)
        except BaseException:
            checkpoint.close()
            raise
        return checkpoint

    def _read_shards(self, shards: list[Path]) -> None:
        """Open each shard for good, check its header, and refuse a tensor stored twice."""
        for shard in shards:
            handle = open_confined(self.path, shard)
            self._handles[shard] = (handle, 0)
            self._watched[shard] = FileState.of(os.fstat(handle.fileno()))
            entries, raw = read_open_header(handle, shard)
            if not entries:
                raise VadasmError(f"{shard}: holds no tensors")
            self._handles[shard] = (handle, 8 + len(raw))
            self._headers[shard] = raw
            for name, entry in entries.items():
                if name in self.files:
                    raise VadasmError(f"{shard}: tensor {shown(name)} is also stored in {self.files[name]}")
                self.entries[name] = entry
                self.files[name] = shard

    def _check_index(self, weight_map: dict[str, Path] | None) -> None:
        """Each tensor the index lists must be in the shard it names (unlisted ones are read, as
        transformers reads them)."""
        for name, shard in (weight_map or {}).items():
            if self.files.get(name) != shard:
                where = f"is stored in {self.files[name].name}" if name in self.files else "is in no shard"
                raise VadasmError(
                    f"{self.path / INDEX_FILE}: tensor {shown(name)} is listed in {shard.name} but {where}")

    def _check_foreign(self, foreign: list[Path]) -> None:
        """A file in another format is left alone only if it shares no tensor name with the model."""
        for file in foreign:
            with open_confined(self.path, file) as handle:
                shared = sorted(set(read_open_header(handle, file)[0]) & set(self.entries))
            if shared:
                raise VadasmError(f"{file}: holds tensors of the model (e.g. {shown(shared[0])}) but is not one of "
                                  "its weight files (refused)")

    @classmethod
    def _open_pickles(cls, path: Path, config: dict, allow_pickle: bool) -> Checkpoint:
        pickles = sorted(path.glob("*.bin")) + sorted(path.glob("*.pt"))
        if not pickles:
            raise VadasmError(f"{path}: no weights found (*.safetensors)")
        if not allow_pickle:
            raise VadasmError(
                f"{pickles[0]}: pickle weights can run arbitrary code when loaded; "
                "convert to safetensors or pass --allow-pickle"
            )
        tensors: dict[str, torch.Tensor] = {}
        files: dict[str, Path] = {}
        for file in pickles:
            try:
                state = torch.load(confined_file(path, file), map_location="cpu", mmap=True, weights_only=True)
            except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
                raise VadasmError(f"{file}: cannot load ({(str(err).splitlines() or ['?'])[0][:120]})") from None
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise VadasmError(f"{file}: not a state dict of tensors")
            for name in state:
                if name in tensors:
                    raise VadasmError(f"{file}: tensor {shown(name)} is also stored in {files[name]}")
                files[name] = file
            tensors.update(state)
        if not tensors:
            raise VadasmError(f"{path}: the weight files hold no tensors")
        entries = {k: TensorEntry(str(v.dtype), tuple(v.shape), 0, 0) for k, v in tensors.items()}
        return cls(path, config, entries, files, _pickled=tensors, _watched=_watch(path, pickles))

    def keys(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def dtype(self, name: str) -> torch.dtype:
        """The torch dtype a tensor is stored in (safetensors names like 'BF16', or pickled ones)."""
        stored = self.entries[name].dtype
        if stored in SAFETENSORS_TO_TORCH:
            return SAFETENSORS_TO_TORCH[stored]
        dtype = getattr(torch, stored.removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype):
            raise VadasmError(f"{self.files[name]}: tensor {shown(name)} has unsupported dtype {stored}")
        return dtype

    def get(self, name: str) -> torch.Tensor:
        """Load one whole tensor into fresh memory.

        A positioned read rather than a kept memory map: mapped pages of every tensor read would
        stay in the process's RSS until the end, so memory would follow the model, not the tensor.
        """
        if self._pickled is not None:
            return self._pickled[name]
        entry = self.entries[name]
        return self.read_rows(name, 0, entry.shape[0] if entry.shape else 1)

    def read_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of a tensor (its first dimension), read into fresh memory.

        A positioned read from the file opened (and checked) at `open`: nothing stays mapped
        afterwards, so memory follows the rows being processed and chunked merges of
        vocabulary-sized matrices stay small. `get` reads whole tensors through it (0-d
        tensors: start=0, stop=1). Zero-size tensors read as empty tensors of their shape.
        """
        if self._pickled is not None:
            tensor = self.get(name)
            return tensor[start:stop] if tensor.dim() else tensor
        entry = self.entries[name]
        row_bytes = math.prod(entry.shape[1:]) * DTYPE_SIZES[entry.dtype]
        file = self.files[name]
        handle, data_start = self._handles[file]
        count = stop - start if entry.shape else 1
        buffer = torch.empty(count * row_bytes, dtype=torch.uint8)
        view, position, done = memoryview(buffer.numpy()), data_start + entry.begin + start * row_bytes, 0
        while done < len(view):  # the kernel returns at most ~2 GiB per call
            read = os.preadv(handle.fileno(), [view[done:]], position + done)
            if read == 0:
                raise VadasmError(f"{file}: file ends inside tensor {shown(name)} (changed while being read?)")
            done += read
        return buffer.view(_READ_AS[entry.dtype]).reshape(count, *entry.shape[1:])[
            slice(None) if entry.shape else 0]

    def get_checked(self, name: str) -> torch.Tensor:
        """Load one tensor and refuse NaN/Inf, naming the file."""
        tensor = self.get(name)
        self.refuse_non_finite(name, tensor)
        return tensor

    def refuse_non_finite(self, name: str, values: torch.Tensor) -> None:
        """Refuse NaN/Inf in `values` (all or some rows of tensor `name`), naming the file."""
        if values.is_floating_point() and not all_finite(values):
            raise VadasmError(f"{self.files[name]}: tensor {shown(name)} contains NaN or Inf values")

    def num_elements(self, name: str) -> int:
        return math.prod(self.entries[name].shape)

    def num_parameters(self) -> int:
        return sum(self.num_elements(name) for name in self.entries)

    def sidecar_files(self) -> list[Path]:
        """Sidecars to copy into an output; each was checked (confined, parsable) at `open`."""
        return [self.path / name for name in SIDECAR_FILES if (self.path / name) in self._watched]

    def fingerprint(self) -> str:
        """Identity for provenance, computed once from the files as opened (so an input replaced
        later does not change it): sha256 over the config, each weight file's size and full
        header, 1 MiB samples (head, middle, tail) and the first 4 KiB of every tensor. Cheap on
        100 GB models, equal for copies of a model, yet differs between any two fine-tunes.
        `verify_unchanged` is the exact check that nothing was written meanwhile."""
        if self._fingerprint is None:
            digest = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode())
            if self._pickled is not None:
                for file in sorted(set(self.files.values())):
                    with open(file, "rb") as handle:
                        _digest_file(digest, handle, self._watched[file].size, None, b"", [])
            for file in sorted(self._handles):
                handle, data_start = self._handles[file]
                spans = sorted((e.begin, e.end) for n, e in self.entries.items() if self.files[n] == file)
                _digest_file(digest, handle, self._watched[file].size, data_start, self._headers[file], spans)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def verify_unchanged(self) -> None:
        """Refuse if any file read from (config, index, weights, sidecars) changed since `open`.

        Device, inode, size and modification time are compared, so both a write in place and an
        atomic replacement are caught; weight headers are also read again, as a write within the
        file system's timestamp tick keeps the modification time. A writer calls this before it
        renames its output into place.
        """
        for file, before in self._watched.items():
            try:
                now = FileState.of(os.stat(file))
            except OSError:
                raise VadasmError(f"{file}: changed while being read (it is gone)") from None
            if now != before:
                raise VadasmError(f"{file}: changed while being read")
        for file, (handle, data_start) in self._handles.items():
            if os.pread(handle.fileno(), data_start, 0)[8:] != self._headers[file]:
                raise VadasmError(f"{file}: changed while being read")

    def close(self) -> None:
        for handle, _ in self._handles.values():
            handle.close()
        self._handles = {}


_SAMPLE = 1 << 20
_TENSOR_SAMPLE = 4096


def _digest_file(digest, handle: BinaryIO, size: int, data_start: int | None, header: bytes,
                 spans: list[tuple[int, int]]) -> None:
    fd = handle.fileno()
    digest.update(size.to_bytes(8, "little"))
    digest.update(hashlib.sha256(header).digest())
    for offset in (0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)):
        digest.update(os.pread(fd, _SAMPLE, offset))
    for begin, end in spans:
        digest.update(os.pread(fd, min(_TENSOR_SAMPLE, end - begin), data_start + begin))


def _watch(folder: Path, files: list[Path]) -> dict[Path, FileState]:
    """The state of each of `files` that exists (all confined to the model folder)."""
    states = {}
    for file in files:
        if not (file.exists() or file.is_symlink()):
            continue
        try:
            states[file] = FileState.of(os.stat(confined_file(folder, file)))
        except OSError as err:
            raise VadasmError(f"{file}: cannot read ({err.strerror})") from None
    return states


def read_config(path: Path) -> dict:
    """config.json of a model folder: confined, UTF-8 JSON without repeated keys, and a plain model_type."""
    config_file = path / "config.json"
    if not (config_file.exists() or config_file.is_symlink()):
        raise VadasmError(f"{config_file}: config.json not found")
    config = read_json(path, config_file, unique_keys=True)
    if not isinstance(config, dict) or "model_type" not in config:
        raise VadasmError(f"{config_file}: no 'model_type' field; not a transformers config")
    check_model_type(config, config_file)
    return config
