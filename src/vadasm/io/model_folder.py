"""The files of a model folder, found and opened without ever leaving the folder.

Every path is resolved (symlinks followed) and must stay inside the model folder and be a regular
file, so a shard index naming `../../x` or an absolute path, a weight file symlinked elsewhere,
or a config that is a FIFO or `/dev/zero` is refused before it is opened. The one exception is a
Hugging Face cache snapshot (`.../snapshots/<rev>/`), whose files are symlinks into the same
repository's `blobs/` folder: that folder counts as part of the model.

Which `*.safetensors` files hold the model: the ones the shard index names, or the only one when
there is no index. Any other weight file is refused (it may hold tensors of the model that would
silently be dropped), except files in a format known to be something else (Mistral's native
`consolidated*.safetensors`, a PEFT `adapter_model.safetensors`), which are left alone provided
none of their tensor names is also a tensor of the model.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from vadasm.errors import VadasmError
from vadasm.io.safetensors_header import refuse_duplicate_keys, shown

INDEX_FILE = "model.safetensors.index.json"
FOREIGN_WEIGHT_FILES = ("consolidated*.safetensors", "adapter_model.safetensors")
MAX_JSON_BYTES = 256 << 20  # a large vocabulary's tokenizer.json is ~30 MB; a config a few KB
# Sidecars that must parse before they are copied into an output (they are copied verbatim).
JSON_SIDECARS = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                 "vocab.json", "generation_config.json", "chat_template.json", "preprocessor_config.json",
                 "processor_config.json", "video_preprocessor_config.json")
TEXT_SIDECARS = ("merges.txt", "chat_template.jinja")


@dataclass(frozen=True)
class WeightFiles:
    """The weight files that hold the model, and what the shard index (if any) says of each tensor."""

    shards: list[Path]
    weight_map: dict[str, Path] | None  # tensor name -> shard, from the index
    foreign: list[Path]  # other-format files left alone; their tensors must not be the model's


def allowed_roots(folder: Path) -> tuple[Path, ...]:
    root = folder.resolve()
    blobs = root.parent.parent / "blobs"
    if root.parent.name == "snapshots" and blobs.is_dir():
        return root, blobs.resolve()
    return (root,)


def confined_file(folder: Path, file: Path) -> Path:
    """`file` resolved, if it is a regular file inside the model folder; else a VadasmError."""
    try:
        resolved = file.resolve()
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Python < 3.13)
        raise VadasmError(f"{file}: cannot resolve ({err})") from None
    if not any(resolved.is_relative_to(root) for root in allowed_roots(folder)):
        raise VadasmError(f"{file}: lies outside the model folder {folder} (refused)")
    try:
        mode = os.stat(resolved).st_mode
    except OSError as err:
        raise VadasmError(f"{file}: cannot read ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        raise VadasmError(f"{file}: not a regular file")
    return resolved


def open_confined(folder: Path, file: Path) -> BinaryIO:
    """Open a file of the model for reading; O_NONBLOCK so a file swapped for a FIFO cannot hang us."""
    resolved = confined_file(folder, file)
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise VadasmError(f"{file}: cannot read ({err.strerror})") from None
    handle = os.fdopen(fd, "rb", buffering=0)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise VadasmError(f"{file}: not a regular file")
    return handle


def read_json(folder: Path, file: Path, *, unique_keys: bool = False) -> object:
    """A JSON file of the model, refused with one line if it is not UTF-8 JSON (or repeats a key)."""
    with open_confined(folder, file) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_JSON_BYTES:
            raise VadasmError(f"{file}: {size} bytes, too large for a JSON file of a model")
        raw = handle.read()
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=refuse_duplicate_keys if unique_keys else None)
    except UnicodeDecodeError:
        raise VadasmError(f"{file}: not UTF-8 text") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, repeated keys, nesting bombs
        raise VadasmError(f"{file}: not valid JSON ({(str(err).splitlines() or ['?'])[0][:120]})") from None


def check_sidecars(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """The sidecar files present, each confined and readable: JSON ones must parse, text ones be UTF-8."""
    present = []
    for name in names:
        file = folder / name
        if not (file.exists() or file.is_symlink()):
            continue
        if name in JSON_SIDECARS:
            read_json(folder, file)
        elif name in TEXT_SIDECARS:
            with open_confined(folder, file) as handle:
                try:
                    handle.read().decode("utf-8")
                except UnicodeDecodeError:
                    raise VadasmError(f"{file}: not UTF-8 text") from None
        else:
            confined_file(folder, file)
        present.append(file)
    return present


def find_weight_files(folder: Path) -> WeightFiles:
    """Which `*.safetensors` files hold the model (see the module docstring for the rule)."""
    present = sorted(folder.glob("*.safetensors"))
    foreign = [p for p in present if any(fnmatch(p.name, pattern) for pattern in FOREIGN_WEIGHT_FILES)]
    candidates = [p for p in present if p not in foreign]
    index_file = folder / INDEX_FILE
    if not (index_file.exists() or index_file.is_symlink()):
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates[:3]) + (", ..." if len(candidates) > 3 else "")
            raise VadasmError(f"{folder}: {len(candidates)} weight files ({names}) and no {INDEX_FILE}; "
                              "which of them hold the model is ambiguous")
        return WeightFiles(candidates, None, foreign)
    weight_map = _read_index(folder, index_file)
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        confined_file(folder, shard)
    unnamed = [p for p in present if p not in shards and p not in foreign]
    if unnamed:
        raise VadasmError(f"{unnamed[0]}: weight file not named in {INDEX_FILE}; it may hold tensors of the "
                          "model that would be left out (refused; add it to the index or remove it)")
    return WeightFiles(shards, weight_map, [p for p in foreign if p not in shards])


def _read_index(folder: Path, index_file: Path) -> dict[str, Path]:
    index = read_json(folder, index_file, unique_keys=True)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise VadasmError(f"{index_file}: corrupt shard index (no 'weight_map' object naming the shards)")
    resolved: dict[str, Path] = {}
    for tensor, name in weight_map.items():
        if not isinstance(name, str) or not name.endswith(".safetensors"):
            raise VadasmError(
                f"{index_file}: tensor {shown(tensor)} maps to {shown(name)}, not a .safetensors file name")
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or "\\" in name:
            raise VadasmError(f"{index_file}: shard {shown(name)} is not a plain file name inside the model folder")
        resolved[tensor] = folder / relative
    missing = sorted({p for p in resolved.values() if not (p.exists() or p.is_symlink())})
    if missing:
        raise VadasmError(f"{missing[0]}: shard listed in {index_file.name} is missing")
    return resolved

