"""Which tensor axes a hidden unit touches, read from the architecture table.

A permutation of one layer's MLP neurons must move the gate/up rows *and* the down columns; a
permutation of heads must move q/k/v rows in head-sized blocks, the o_proj columns, and keep each
query head with its key/value group. This module turns the table's roles into those `Slot`s, per
layer, so the math never needs to know a model family.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vadasm.arch import Architecture
from vadasm.io import Checkpoint

OUTPUT_SIDE = {"mlp_gate", "mlp_up", "mlp_gate_up", "expert_gate", "expert_up", "shared_expert_gate",
               "shared_expert_up", "attn_q", "attn_k", "attn_v", "attn_qkv", "attn_sinks"}
MLP_ROLES = {"mlp_gate": "mlp", "mlp_up": "mlp", "mlp_gate_up": "mlp", "mlp_down": "mlp",
             "expert_gate": "expert", "expert_up": "expert", "expert_down": "expert",
             "shared_expert_gate": "shared_expert", "shared_expert_up": "shared_expert",
             "shared_expert_down": "shared_expert"}
ATTN_ROLES = {"attn_q", "attn_k", "attn_v", "attn_o", "attn_qkv", "attn_sinks"}


@dataclass(frozen=True)
class Slot:
    """One tensor axis indexed by a group's units (see `hungarian.unit_index`)."""

    name: str
    axis: int
    units: str  # "neuron", "q" (query heads) or "kv" (key/value heads)
    unit: int = 1
    copies: int = 1
    offset: int = 0


@dataclass
class UnitGroup:
    """The units permuted together: one layer's MLP neurons, one expert's, or one layer's heads."""

    key: str  # e.g. "layers.3.mlp", "layers.3.expert.2", "layers.3.attn"
    layer: int
    kind: str  # "mlp" or "attn"
    sizes: dict[str, int] = field(default_factory=dict)  # units -> count
    slots: list[Slot] = field(default_factory=list)
    activation_module: str | None = None  # module whose input holds the units' activations


def unit_groups(arch: Architecture, checkpoint: Checkpoint) -> tuple[list[UnitGroup], list[dict]]:
    """All permutable groups of a model, and what cannot be aligned (with the reason)."""
    transposed = bool(arch.text.spec.get("transposed_linears"))
    buckets: dict[str, list[tuple[str, str]]] = {}
    skipped: list[dict] = []
    for name in checkpoint.keys():
        role = arch.role(name)
        if role.layer is None:
            continue
        if role.role in MLP_ROLES:
            sub = MLP_ROLES[role.role]
            key = f"layers.{role.layer}.{sub}" + (f".{role.expert}" if role.expert is not None else "")
        elif role.role in ATTN_ROLES:
            key = f"layers.{role.layer}.attn"
        elif role.role.startswith("stacked_expert") or role.role == "attn_kv":
            skipped.append({"tensor": name, "reason": f"role {role.role} is not aligned (no unit layout)"})
            continue
        else:
            continue
        buckets.setdefault(key, []).append((name, role.role))
    groups = []
    for key, members in buckets.items():
        layer = int(key.split(".")[1])
        try:
            group = (_attn_group if key.endswith(".attn") else _mlp_group)(
                key, layer, members, arch, checkpoint, transposed)
        except ValueError as err:
            skipped.append({"group": key, "reason": str(err)})
            continue
        groups.append(group)
    return groups, skipped


def _axis(role: str, ndim: int, transposed: bool) -> int | None:
    """Axis holding the units: rows of output-side weights, columns of input-side weights.
    Biases of input-side (residual-writing) layers are not indexed by units: None."""
    if ndim == 1:
        return 0 if role in OUTPUT_SIDE else None
    axis = 0 if role in OUTPUT_SIDE else 1
    return 1 - axis if transposed else axis


def _mlp_group(key, layer, members, arch, checkpoint, transposed) -> UnitGroup:
    group = UnitGroup(key, layer, "mlp")
    for name, role in members:
        shape = checkpoint.shape(name)
        axis = _axis(role, len(shape), transposed)
        if axis is None:
            continue
        copies = 2 if role == "mlp_gate_up" else 1
        n = shape[axis] // copies
        if group.sizes.setdefault("neuron", n) != n:
            raise ValueError(f"{name}: {n} hidden units, other tensors of the group have {group.sizes['neuron']}")
        group.slots.append(Slot(name, axis, "neuron", copies=copies))
        if role.endswith("down") and len(shape) == 2:
            group.activation_module = name.removesuffix(".weight")
    return group


def _attn_group(key, layer, members, arch, checkpoint, transposed) -> UnitGroup:
    config = arch.text_config
    n_q = arch.text.config_value(config, "num_heads")
    if not n_q:
        raise ValueError("number of attention heads unknown (no num_heads in the architecture table)")
    n_kv = arch.text.config_value(config, "num_kv_heads") or n_q
    group = UnitGroup(key, layer, "attn", {"q": n_q, "kv": n_kv})
    layout = arch.text.spec.get("qkv_layout", "concat")
    for name, role in members:
        shape = checkpoint.shape(name)
        axis = _axis(role, len(shape), transposed)
        if axis is None:
            continue
        size = shape[axis]
        if role == "attn_sinks":
            group.slots.append(Slot(name, axis, "q"))
        elif role == "attn_qkv" and layout == "per_head":
            if n_kv != n_q:
                raise ValueError("interleaved fused qkv with grouped kv heads is not supported")
            group.slots.append(Slot(name, axis, "q", unit=_divide(size, n_q, name)))  # [q k v] per head
        elif role == "attn_qkv":
            head_dim = _divide(size, n_q + 2 * n_kv, name)
            group.slots += [Slot(name, axis, "q", head_dim),
                            Slot(name, axis, "kv", head_dim, offset=n_q * head_dim),
                            Slot(name, axis, "kv", head_dim, offset=(n_q + n_kv) * head_dim)]
        else:
            units = "kv" if role in ("attn_k", "attn_v") else "q"
            group.slots.append(Slot(name, axis, units, _divide(size, group.sizes[units], name)))
            if role == "attn_o" and len(shape) == 2:
                group.activation_module = name.removesuffix(".weight")
    if not any(s.units == "q" for s in group.slots):
        raise ValueError("no query projection found")
    return group


def _divide(size: int, parts: int, name: str) -> int:
    if size % parts:
        raise ValueError(f"{name}: axis of {size} does not split into {parts} heads")
    return size // parts
