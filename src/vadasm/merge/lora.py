"""`model+lora` references: a PEFT LoRA adapter folded into a model's weights as they are read.

mergekit 0.1.5 loads the model with PEFT, calls `merge_and_unload` and saves a merged copy in a
cache folder. Here the adapter (small) is read once and each adapted tensor gets
`W + scaling * (B @ A)` (transposed for `fan_in_fan_out` and embedding LoRAs, as PEFT's
`get_delta_weight`) when it is read, whole or by rows, in fp32; nothing is written to disk and
memory still follows the tensor. `scaling` is `lora_alpha / r`, or `lora_alpha / sqrt(r)` with
`use_rslora`. A base weight the adapter saved whole (`X.base_layer.weight`, which PEFT writes for
adapted embeddings) replaces the model's, as loading the adapter does. Adapters this does not
cover (DoRA, per-module rank or alpha patterns, full `modules_to_save` copies, other PEFT types,
pickled weights) are refused with one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load_file

from vadasm.errors import VadasmError
from vadasm.io import Checkpoint
from vadasm.io.json_file import read_json_file

_PREFIX = "base_model.model."
_SUFFIXES = {  # adapter key suffix -> (which factor, delta transposed like an embedding's)
    ".lora_A.weight": ("A", False), ".lora_B.weight": ("B", False),
    ".lora_embedding_A": ("A", True), ".lora_embedding_B": ("B", True),
}


def split_reference(ref: str) -> tuple[str, str | None]:
    """mergekit's `MODEL+LORA`; a path that exists as written is never split."""
    if "+" not in ref or Path(ref).expanduser().exists():
        return ref, None
    model, _, adapter = ref.partition("+")
    if not model or not adapter or "+" in adapter:
        raise VadasmError(f"{ref}: a model reference is MODEL or MODEL+LORA_ADAPTER")
    return model, adapter


@dataclass
class LoraDelta:
    """One adapted tensor: delta = scaling * (B @ A), transposed when `transpose`."""

    a: torch.Tensor
    b: torch.Tensor
    scaling: float
    transpose: bool

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of the delta, in fp32."""
        if self.transpose:  # delta = (B @ A).T: row i is (B @ A[:, i]).T
            return ((self.b @ self.a[:, start:stop]) * self.scaling).T
        return (self.b[start:stop] @ self.a) * self.scaling

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.b.shape[0], self.a.shape[1]
        return (cols, rows) if self.transpose else (rows, cols)


def read_adapter(folder: Path) -> tuple[dict[str, LoraDelta], dict[str, torch.Tensor]]:
    """(model tensor name -> its LoRA delta, name -> a saved base weight that replaces the model's),
    from a PEFT adapter folder. PEFT saves `X.base_layer.weight` when it stores an adapted
    embedding layer whole; loading the adapter puts it in place of the model's, and so does this."""
    config_file = folder / "adapter_config.json"
    config = read_json_file(config_file, f"{folder}: not a PEFT adapter folder (no adapter_config.json)")
    if config.get("peft_type") != "LORA":
        raise VadasmError(f"{config_file}: peft_type {config.get('peft_type')!r}; only LORA adapters are applied")
    for key in ("use_dora", "rank_pattern", "alpha_pattern", "layer_replication"):
        if config.get(key):
            raise VadasmError(f"{config_file}: '{key}' is not supported for model+lora references")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise VadasmError(f"{folder}: no adapter_model.safetensors (pickled adapters are not read)")
    try:
        tensors = load_file(weights)
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise VadasmError(f"{weights}: not a readable safetensors file ({err})") from None
    factors: dict[tuple[str, bool], dict[str, torch.Tensor]] = {}
    replaced = {}
    for key, tensor in tensors.items():
        module = key.removeprefix(_PREFIX)
        if module.endswith(".base_layer.weight"):
            replaced[module.removesuffix(".base_layer.weight") + ".weight"] = tensor
            continue
        for suffix, (which, transpose) in _SUFFIXES.items():
            if module.endswith(suffix):
                factors.setdefault((module.removesuffix(suffix) + ".weight", transpose), {})[which] = tensor.float()
                break
        else:
            raise VadasmError(f"{weights}: tensor '{key}' is not a LoRA factor (modules_to_save and other "
                              "full weights are not supported)")
    fan_in_fan_out = bool(config.get("fan_in_fan_out"))
    deltas = {}
    for (name, embedding), pair in factors.items():
        if set(pair) != {"A", "B"}:
            raise VadasmError(f"{weights}: '{name}' has only lora_{next(iter(pair))}")
        rank = pair["A"].shape[0]
        alpha = float(config.get("lora_alpha", 8))
        scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        deltas[name] = LoraDelta(pair["A"], pair["B"], scaling, embedding or fan_in_fan_out)
    return deltas, replaced


@dataclass
class LoraCheckpoint(Checkpoint):
    """A checkpoint read with a LoRA adapter folded into its adapted tensors (fp32 reads)."""

    adapter: Path = field(default=Path("."))
    deltas: dict[str, LoraDelta] = field(default_factory=dict, repr=False)
    replaced: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def wrap(cls, base: Checkpoint, adapter: Path) -> LoraCheckpoint:
        if base._pickled is not None:
            raise VadasmError(f"{base.path}: model+lora needs safetensors weights")
        deltas, replaced = read_adapter(adapter)
        for name, tensor in replaced.items():
            if name not in base or base.shape(name) != tuple(tensor.shape):
                raise VadasmError(f"{adapter}: saves a base weight '{name}' of shape {tuple(tensor.shape)} that "
                                  f"{base.path} does not have")
        for name, delta in deltas.items():
            if name not in base:
                raise VadasmError(f"{adapter}: adapts '{name}', which {base.path} does not have")
            if base.shape(name) != delta.shape:
                raise VadasmError(f"{adapter}: the LoRA of '{name}' makes shape {delta.shape}, "
                                  f"but {base.path} has {base.shape(name)}")
        state = {f.name: getattr(base, f.name) for f in fields(Checkpoint)}
        return cls(**state, adapter=adapter, deltas=deltas, replaced=replaced)

    def read_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows of the adapted weight (`get` reads whole tensors through this)."""
        if name in self.replaced:
            rows = self.replaced[name][start:stop] if self.replaced[name].dim() else self.replaced[name]
        else:
            rows = super().read_rows(name, start, stop)
        if name not in self.deltas:
            return rows
        return rows.float() + self.deltas[name].rows(start, stop)

    def fingerprint(self) -> str:
        """The model's fingerprint extended with the adapter's files."""
        import hashlib

        digest = hashlib.sha256(super().fingerprint().encode())
        for file in ("adapter_config.json", "adapter_model.safetensors"):
            digest.update((self.adapter / file).read_bytes())
        return digest.hexdigest()
