"""Lazy, read-only access to a Hugging Face model folder, one tensor at a time.

A `Checkpoint` knows which file holds each tensor (from the shard index or the headers) and
reads tensors (or row ranges of them) with positioned reads on demand, so memory follows the
tensor being processed, not the model. Problems with the inputs are found when the folder is
opened.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from vadasm.errors import VadasmError
from vadasm.io.safetensors_header import DTYPE_SIZES, TensorEntry, read_header
from vadasm.io.writer import TORCH_TO_SAFETENSORS

SAFETENSORS_TO_TORCH = {name: dtype for dtype, name in TORCH_TO_SAFETENSORS.items()}

# Files that travel with the weights: tokenizer, generation and processor settings.
SIDECAR_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "added_tokens.json", "generation_config.json",
    "chat_template.jinja", "chat_template.json", "preprocessor_config.json",
    "processor_config.json", "video_preprocessor_config.json",
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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


@dataclass
class Checkpoint:
    """A model folder opened for lazy reading."""

    path: Path
    config: dict
    entries: dict[str, TensorEntry]
    files: dict[str, Path]
    _pickled: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    _files_open: dict[Path, tuple[object, int]] = field(default_factory=dict, repr=False)  # file, data start

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
        config = read_config(path)
        if config.get("auto_map") and not trust_remote_code:
            raise VadasmError(
                f"{path / 'config.json'}: model needs remote code (auto_map); "
                "pass --trust-remote-code if you trust it"
            )
        shards = sorted(path.glob("*.safetensors"))
        if not shards:
            pickles = sorted(path.glob("*.bin")) + sorted(path.glob("*.pt"))
            if not pickles:
                raise VadasmError(f"{path}: no weights found (*.safetensors)")
            if not allow_pickle:
                raise VadasmError(
                    f"{pickles[0]}: pickle weights can run arbitrary code when loaded; "
                    "convert to safetensors or pass --allow-pickle"
                )
            return cls._open_pickles(path, config, pickles)
        entries: dict[str, TensorEntry] = {}
        files: dict[str, Path] = {}
        for shard in _shards_in_use(path, shards):
            for name, entry in read_header(shard).items():
                entries[name] = entry
                files[name] = shard
        return cls(path, config, entries, files)

    @classmethod
    def _open_pickles(cls, path: Path, config: dict, pickles: list[Path]) -> Checkpoint:
        tensors: dict[str, torch.Tensor] = {}
        for file in pickles:
            state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
            tensors.update(state)
        entries = {
            k: TensorEntry(str(v.dtype), tuple(v.shape), 0, 0) for k, v in tensors.items()
        }
        files = dict.fromkeys(tensors, pickles[0])
        return cls(path, config, entries, files, _pickled=tensors)

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
            raise VadasmError(f"{self.files[name]}: tensor '{name}' has unsupported dtype {stored}")
        return dtype

    def get(self, name: str) -> torch.Tensor:
        """Load one whole tensor into fresh memory.

        A positioned read rather than a kept memory map: mapped pages of every tensor read would
        stay in the process's RSS until the end, so memory would follow the model, not the tensor.
        """
        if self._pickled is not None:
            return self._pickled[name]
        entry = self.entries[name]
        if entry.dtype not in SAFETENSORS_TO_TORCH:  # dtypes torch lacks a view for (fp8 ...)
            with safe_open(str(self.files[name]), framework="pt") as handle:
                return handle.get_tensor(name)
        return self.read_rows(name, 0, entry.shape[0] if entry.shape else 1)

    def read_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of a tensor (its first dimension), read into fresh memory.

        A positioned read: nothing stays mapped afterwards, so memory follows the rows being
        processed and chunked merges of vocabulary-sized matrices stay small. `get` reads whole
        tensors through it (0-d tensors: start=0, stop=1).
        """
        entry = self.entries[name]
        if self._pickled is not None or entry.dtype not in SAFETENSORS_TO_TORCH:
            tensor = self.get(name)
            return tensor[start:stop] if tensor.dim() else tensor
        row_bytes = math.prod(entry.shape[1:]) * DTYPE_SIZES[entry.dtype]
        file = self.files[name]
        if file not in self._files_open:
            handle = open(file, "rb", buffering=0)  # noqa: SIM115 (kept open for the next reads)
            (header_len,) = struct.unpack("<Q", handle.read(8))
            self._files_open[file] = (handle, 8 + header_len)
        handle, data_start = self._files_open[file]
        count = stop - start if entry.shape else 1
        buffer = torch.empty(count * row_bytes, dtype=torch.uint8)
        view, position, done = memoryview(buffer.numpy()), data_start + entry.begin + start * row_bytes, 0
        while done < len(view):  # the kernel returns at most ~2 GiB per call
            read = os.preadv(handle.fileno(), [view[done:]], position + done)
            if read == 0:
                raise VadasmError(f"{file}: file ends inside tensor '{name}'")
            done += read
        return buffer.view(SAFETENSORS_TO_TORCH[entry.dtype]).reshape(count, *entry.shape[1:])[
            slice(None) if entry.shape else 0]

    def get_checked(self, name: str) -> torch.Tensor:
        """Load one tensor and refuse NaN/Inf, naming the file."""
        tensor = self.get(name)
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise VadasmError(f"{self.files[name]}: tensor '{name}' contains NaN or Inf values")
        return tensor

    def num_elements(self, name: str) -> int:
        return math.prod(self.entries[name].shape)

    def num_parameters(self) -> int:
        return sum(self.num_elements(name) for name in self.entries)

    def sidecar_files(self) -> list[Path]:
        return [self.path / name for name in SIDECAR_FILES if (self.path / name).is_file()]

    def fingerprint(self) -> str:
        """Identity for provenance: sha256 over the config and 1 MiB samples (head, middle, tail)
        of every weight file. Cheap on 100 GB models, yet differs between any two fine-tunes."""
        digest = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode())
        for file in sorted(set(self.files.values())):
            size = file.stat().st_size
            digest.update(size.to_bytes(8, "little"))
            with open(file, "rb") as f:
                for offset in (0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)):
                    f.seek(offset)
                    digest.update(f.read(_SAMPLE))
        return digest.hexdigest()


_SAMPLE = 1 << 20


def read_config(path: Path) -> dict:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise VadasmError(f"{config_file}: config.json not found")
    try:
        config = json.loads(config_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VadasmError(f"{config_file}: not valid JSON ({err})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise VadasmError(f"{config_file}: no 'model_type' field; not a transformers config")
    return config


def _shards_in_use(path: Path, shards: list[Path]) -> list[Path]:
    """The shards the index names (a folder can hold stale extra files), else all shards."""
    index_file = path / "model.safetensors.index.json"
    if not index_file.is_file():
        return shards
    try:
        weight_map = json.loads(index_file.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise VadasmError(f"{index_file}: corrupt shard index ({err})") from None
    named = sorted({path / f for f in weight_map.values()})
    missing = [f for f in named if not f.is_file()]
    if missing:
        raise VadasmError(f"{missing[0]}: shard listed in {index_file.name} is missing")
    return named
