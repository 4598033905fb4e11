"""`vadasm decompose`: U, S, Vh of every selected 2-D weight, one safetensors file per tensor.

The layout follows the seed's `svd_decompose.py` (one file per weight, names sanitized: dots ->
`__`, slashes -> `_slash_`, keys `U`, `S`, `Vh`, `orig_shape`), in safetensors instead of pickles,
plus a manifest `decomposition.json` with the source model's fingerprint, so that
`vadasm blend --from-decomposition` can refuse a decomposition of some other model.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from vadasm.blend.select import TensorRoles, TensorSelector
from vadasm.blend.svd import Svd, svd_fp32
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint, atomic_output_dir
from vadasm.io.json_file import read_json_file
from vadasm.version import __version__

MANIFEST = "decomposition.json"
FORMAT = "vadasm-svd-v1"


def sanitize(name: str) -> str:
    """The seed's file-name rule for a tensor name."""
    return name.replace(".", "__").replace("/", "_slash_")


def is_float_matrix(dtype: str, shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and dtype.startswith(("F", "BF"))


@dataclass
class DecomposeResult:
    output: str
    model: str
    fingerprint: str
    decomposed: int
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def run_decompose(
    model: str,
    output: str | Path,
    selector: TensorSelector,
    *,
    device: str = "cpu",
    force: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> DecomposeResult:
    start = time.perf_counter()
    ckpt = Checkpoint.open(model, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    roles = TensorRoles(ckpt.config, ckpt.keys())
    chosen, skipped = [], {}
    for name in ckpt.keys():
        entry = ckpt.entries[name]
        reason = "ndim!=2" if len(entry.shape) != 2 else (
            "not_float" if not is_float_matrix(entry.dtype, entry.shape) else selector.reason_to_skip(name, roles))
        if reason:
            skipped[name] = reason
        else:
            chosen.append(name)
    fingerprint = ckpt.fingerprint()
    manifest: dict = {"format": FORMAT, "source": str(ckpt.path.resolve()), "fingerprint": fingerprint,
                      "tool": f"vadasm {__version__}", "tensors": {}}
    with atomic_output_dir(output, force, [ckpt]) as tmp:
        for name in tqdm(chosen, desc="decompose", unit="tensor", disable=not progress):
            svd = svd_fp32(ckpt.get_checked(name).to(device))
            file = f"{sanitize(name)}.safetensors"
            save_file({"U": svd.U.cpu().contiguous(), "S": svd.S.cpu().contiguous(), "Vh": svd.Vh.cpu().contiguous(),
                       "orig_shape": torch.tensor(ckpt.shape(name), dtype=torch.int64)},
                      str(tmp / file), metadata={"name": name})
            manifest["tensors"][name] = {"file": file, "shape": list(ckpt.shape(name))}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return DecomposeResult(str(Path(output).resolve()), str(ckpt.path.resolve()), fingerprint, len(chosen), skipped,
                           round(time.perf_counter() - start, 3))


class DecompositionStore:
    """A folder written by `run_decompose`, read one tensor at a time."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        manifest_file = self.folder / MANIFEST
        manifest = read_json_file(
            manifest_file, f"{manifest_file}: not found; is this a folder written by 'vadasm decompose'?")
        if manifest.get("format") != FORMAT:
            raise VadasmError(f"{manifest_file}: unknown format {manifest.get('format')!r} (expected {FORMAT})")
        self.fingerprint: str = manifest["fingerprint"]
        self.source: str = manifest.get("source", "?")
        self.tensors: dict[str, dict] = manifest["tensors"]

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> Svd:
        file = self.folder / self.tensors[name]["file"]
        if not file.is_file():
            raise VadasmError(f"{file}: listed in {MANIFEST} but missing")
        with safe_open(str(file), framework="pt") as f:
            return Svd(f.get_tensor("U"), f.get_tensor("S"), f.get_tensor("Vh"))
