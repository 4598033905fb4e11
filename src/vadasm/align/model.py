"""Align one checkpoint to another: per-layer permutations, computed streaming, applied per tensor.

`compute_alignment` reads, group by group, only the few tensors a permutation needs (one layer's
MLP or attention weights of both models), finds the permutation, and keeps just the index
vectors. `Alignment.apply(name, tensor)` then reorders any tensor as it is read later, e.g. inside
the merge loop, so a whole model is never held in memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from vadasm.align.hungarian import (
    assignment,
    grouped_head_alignment,
    similarity,
    unit_features,
    unit_index,
)
from vadasm.align.layout import UnitGroup, unit_groups
from vadasm.arch import Architecture, architecture_for
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint

SIMILARITIES = ("weights", "activations")


@dataclass
class GroupReport:
    group: str
    units: int
    moved: int  # units that do not stay in place
    distance_before: float  # ||reference - model|| over the group's tensors
    distance_after: float  # the same after permuting the model
    similarity: str


@dataclass
class AlignmentReport:
    reference: str
    model: str
    similarity: str
    groups: list[GroupReport] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    @property
    def moved_fraction(self) -> float:
        units = sum(g.units for g in self.groups)
        return sum(g.moved for g in self.groups) / units if units else 0.0

    def summary(self) -> dict:
        before = sum(g.distance_before ** 2 for g in self.groups) ** 0.5
        after = sum(g.distance_after ** 2 for g in self.groups) ** 0.5
        return {"groups": len(self.groups), "moved_fraction": round(self.moved_fraction, 6),
                "distance_before": before, "distance_after": after,
                "distance_reduction": (1 - after / before) if before else 0.0}

    def to_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary()}


@dataclass
class Alignment:
    """Index vectors per tensor: `apply` reorders a tensor of the aligned model."""

    indices: dict[str, list[tuple[int, torch.Tensor]]]
    report: AlignmentReport

    def apply(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        for axis, index in self.indices.get(name, []):
            tensor = tensor.index_select(axis, index)
        return tensor


def compute_alignment(reference: Checkpoint, model: Checkpoint, arch: Architecture | None = None,
                      similarity_kind: str = "weights",
                      activations: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> Alignment:
    """Permutations of `model`'s MLP neurons and attention heads that match `reference`.

    `activations` maps a group's activation module to (reference, model) activations [tokens,
    units*unit] measured on the same real inputs; groups without them use weights.
    """
    if similarity_kind not in SIMILARITIES:
        raise VadasmError(f"unknown alignment similarity '{similarity_kind}' (choose {', '.join(SIMILARITIES)})")
    arch = arch or architecture_for(reference.config, reference.keys(), str(reference.path / "config.json"))
    groups, skipped = unit_groups(arch, reference)
    report = AlignmentReport(str(reference.path), str(model.path), similarity_kind, skipped=skipped)
    indices: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for group in groups:
        names = {slot.name for slot in group.slots}
        for name in names:
            if name not in model or model.shape(name) != reference.shape(name):
                raise VadasmError(f"{model.path}: tensor '{name}' is missing or has another shape; "
                                  "alignment needs two models of one architecture and size")
        ref = {n: reference.get_checked(n).float() for n in names}
        oth = {n: model.get_checked(n).float() for n in names}
        acts = (activations or {}).get(group.activation_module or "")
        perms, used = _group_permutations(group, ref, oth, acts)
        aligned = {n: permute_tensor(oth[n], group, perms, n) for n in names}
        report.groups.append(GroupReport(
            group.key, sum(group.sizes.values()),
            sum(int((p != torch.arange(len(p))).sum()) for p in perms.values()),
            _distance(ref, oth), _distance(ref, aligned), used))
        indices.update(group_indices(group, perms, reference))
    return Alignment(indices, report)


def _group_permutations(group: UnitGroup, ref: dict, oth: dict, acts) -> tuple[dict[str, torch.Tensor], str]:
    def features(tensors: dict, units: str) -> torch.Tensor:
        parts = [unit_features(tensors[s.name], s.axis, group.sizes[units], s.unit, s.copies, s.offset)
                 for s in group.slots if s.units == units]
        return torch.cat(parts, dim=1) if parts else torch.zeros(group.sizes[units], 1)  # fused per-head qkv

    if group.kind == "mlp":
        if acts is not None:
            scores = similarity(acts[0].T, acts[1].T, "correlation")
            return {"neuron": assignment(scores)[0]}, "activations"
        return {"neuron": assignment(similarity(features(ref, "neuron"), features(oth, "neuron")))[0]}, "weights"
    if acts is not None:
        n_q = group.sizes["q"]
        ref_q, oth_q = (a.reshape(a.shape[0], n_q, -1).transpose(0, 1).flatten(1) for a in acts)
        zeros = torch.zeros(group.sizes["kv"], 1)
        q_perm, kv_perm = grouped_head_alignment(ref_q, oth_q, zeros, zeros, "correlation")
        return {"q": q_perm, "kv": kv_perm}, "activations"
    q_perm, kv_perm = grouped_head_alignment(features(ref, "q"), features(oth, "q"),
                                             features(ref, "kv"), features(oth, "kv"))
    return {"q": q_perm, "kv": kv_perm}, "weights"


def group_indices(group: UnitGroup, perms: dict[str, torch.Tensor],
                  checkpoint: Checkpoint) -> dict[str, list[tuple[int, torch.Tensor]]]:
    """Per tensor of the group, (axis, index vector) pairs that apply the unit permutations."""
    indices: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for slot in group.slots:
        axes = indices.setdefault(slot.name, [])
        if all(axis != slot.axis for axis, _ in axes):
            axes.append((slot.axis, _axis_index(group, perms, slot.name, slot.axis,
                                                checkpoint.shape(slot.name)[slot.axis])))
    return indices


def random_alignment(checkpoint: Checkpoint, arch: Architecture, seed: int = 0) -> Alignment:
    """Random valid permutations of every group: the same function in a shuffled basis. The null
    model for alignment experiments (a merge with such a copy is what alignment must repair)."""
    gen = torch.Generator().manual_seed(seed)
    groups, skipped = unit_groups(arch, checkpoint)
    report = AlignmentReport("random", str(checkpoint.path), f"random(seed={seed})", skipped=skipped)
    indices: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for group in groups:
        if group.kind == "mlp":
            perms = {"neuron": torch.randperm(group.sizes["neuron"], generator=gen)}
        else:
            per = group.sizes["q"] // group.sizes["kv"]
            kv = torch.randperm(group.sizes["kv"], generator=gen)
            perms = {"kv": kv, "q": torch.cat([int(b) * per + torch.randperm(per, generator=gen) for b in kv])}
        indices.update(group_indices(group, perms, checkpoint))
        moved = sum(int((p != torch.arange(len(p))).sum()) for p in perms.values())
        report.groups.append(GroupReport(group.key, sum(group.sizes.values()), moved, 0.0, 0.0, "random"))
    return Alignment(indices, report)


def _axis_index(group: UnitGroup, perms: dict, name: str, axis: int, size: int) -> torch.Tensor:
    index = torch.arange(size)
    for slot in group.slots:
        if slot.name == name and slot.axis == axis:
            span = unit_index(perms[slot.units], slot.unit, slot.copies, slot.offset)
            index[slot.offset:slot.offset + len(span)] = span
    return index


def permute_tensor(tensor: torch.Tensor, group: UnitGroup, perms: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """Reorder tensor `name` of a group by unit permutations ({"neuron"|"q"|"kv": perm})."""
    for axis in sorted({s.axis for s in group.slots if s.name == name}):
        tensor = tensor.index_select(axis, _axis_index(group, perms, name, axis, tensor.shape[axis]))
    return tensor


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(sum(float((a[n] - b[n]).double().pow(2).sum()) for n in a) ** 0.5)
