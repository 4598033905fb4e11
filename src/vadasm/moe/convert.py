"""Dense <-> MoE on checkpoints, one tensor at a time, every tensor's fate reported.

`dense_into_moe`: MoE + weight * (dense tuned - dense base): shared tensors (attention, norms,
embeddings) take the delta directly, every routed expert and the shared expert take the MLP delta
(scaled per `injection_scale`), routers are kept. `moe_into_dense`: dense + weight * (aggregated
experts - base MLP), shared tensors + weight * (MoE - base); routers and shared experts have no
dense counterpart and are reported as dropped.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from vadasm.arch import Architecture, architecture_for
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint, PlannedTensor, ShardedWriter, atomic_output_dir, check_output_free
from vadasm.io.provenance import input_records, natural_key, provenance_record, write_provenance
from vadasm.moe.experts import AGGREGATIONS, INJECT_SCALES, aggregate_experts, injection_scale, top_k_experts
from vadasm.moe.router import router_usage

EXPERT_ROLES = {"expert_gate": "mlp_gate", "expert_up": "mlp_up", "expert_down": "mlp_down"}
SHARED_ROLES = {"shared_expert_gate": "mlp_gate", "shared_expert_up": "mlp_up", "shared_expert_down": "mlp_down"}


@dataclass
class MoeResult:
    output: str
    direction: str  # "dense_to_moe" or "moe_to_dense"
    settings: dict
    tensors: int
    changed: int
    kept: list[dict] = field(default_factory=list)  # written unchanged from the recipient, with reason
    dropped: list[dict] = field(default_factory=list)  # source tensors with no place in the output
    layers: dict[int, dict] = field(default_factory=dict)  # usage, experts used, scales
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _open(ref) -> tuple[Checkpoint, Architecture]:
    ck = Checkpoint.open(ref)
    return ck, architecture_for(ck.config, ck.keys(), str(ck.path / "config.json"))


def _usage(ck: Checkpoint, arch: Architecture, input_ids: list[torch.Tensor] | None) -> dict[int, list[float]]:
    if input_ids is None:
        from vadasm.align.activations import validation_token_ids

        input_ids = validation_token_ids(ck.path)
    return router_usage(ck.path, arch, input_ids)


def dense_into_moe(moe_ref, base_ref, tuned_ref, output, weight: float = 1.0, scale: str = "none",
                   input_ids: list[torch.Tensor] | None = None, force: bool = False,
                   progress: bool = True) -> MoeResult:
    """Add a dense fine-tune's task vector to a MoE model of the same family and widths."""
    started = time.perf_counter()
    if scale not in INJECT_SCALES:
        raise VadasmError(f"unknown scale '{scale}' (choose {', '.join(INJECT_SCALES)})")
    check_output_free(Path(output), force, [moe_ref, base_ref, tuned_ref])
    moe, moe_arch = _open(moe_ref)
    base, base_arch = _open(base_ref)
    tuned, _ = _open(tuned_ref)
    usage = _usage(moe, moe_arch, input_ids) if scale == "usage" else {}
    num_experts = moe_arch.text.config_value(moe_arch.text_config, "num_experts") or 1
    dense_mlp = _dense_mlp_index(base, base_arch)
    result = MoeResult(str(output), "dense_to_moe", {"weight": weight, "scale": scale, "moe": str(moe.path),
                       "base": str(base.path), "tuned": str(tuned.path)}, 0, 0)
    scales: dict[int, dict] = {}

    def produce(name: str) -> torch.Tensor | None:
        role = moe_arch.role(name)
        tensor = moe.get_checked(name)
        if role.role in ("router", "shared_expert_router"):
            return _keep(result, name, f"{role.role}: no dense counterpart, kept from the MoE model")
        if role.role in EXPERT_ROLES or role.role in SHARED_ROLES:
            dense_role = EXPERT_ROLES.get(role.role) or SHARED_ROLES[role.role]
            dense_name = dense_mlp.get((role.layer, dense_role))
            if dense_name is None:
                return _keep(result, name, f"no dense {dense_role} in layer {role.layer}")
            if base.shape(dense_name) != tuple(tensor.shape):
                return _keep(result, name, f"shape {tuple(tensor.shape)} differs from dense {dense_name} "
                                           f"{base.shape(dense_name)}")
            dense = base.get_checked(dense_name).float()
            share = usage[role.layer][role.expert] if role.expert is not None and usage else None
            # the shared expert sees every token: usage scaling does not apply to it
            mode = "none" if scale == "usage" and role.expert is None else scale
            s = injection_scale(mode, tensor, dense, share, num_experts)
            scales.setdefault(role.layer, {})[f"{role.role}.{role.expert}"] = round(s, 6)
            return tensor.float() + weight * s * (tuned.get_checked(dense_name).float() - dense)
        return _direct_delta(result, name, tensor, base, tuned, weight)

    def finish() -> None:
        result.layers = {layer: {"usage": usage.get(layer), "scales": scales[layer]} for layer in sorted(scales)}
        result.seconds = round(time.perf_counter() - started, 3)

    _write(output, moe, produce, result, [moe, base, tuned], finish, force, progress)
    return result


def moe_into_dense(dense_ref, moe_ref, output, base_ref=None, weight: float = 1.0, method: str = "uniform",
                   top_k: int | None = None, usage_weighted: bool = False,
                   input_ids: list[torch.Tensor] | None = None, force: bool = False,
                   progress: bool = True) -> MoeResult:
    """Add the MoE's experts, aggregated into one dense delta (relative to `base`, by default the
    dense recipient itself), to a dense model of the same family and widths."""
    started = time.perf_counter()
    if method not in AGGREGATIONS:
        raise VadasmError(f"unknown aggregation '{method}' (choose {', '.join(AGGREGATIONS)})")
    check_output_free(Path(output), force, [dense_ref, moe_ref, base_ref])
    dense, dense_arch = _open(dense_ref)
    moe, moe_arch = _open(moe_ref)
    base = Checkpoint.open(base_ref) if base_ref else dense
    usage = _usage(moe, moe_arch, input_ids) if (top_k or usage_weighted) else {}
    experts: dict[tuple[int, str], dict[int, str]] = {}
    result = MoeResult(str(output), "moe_to_dense", {"weight": weight, "method": method, "top_k": top_k,
                       "usage_weighted": usage_weighted, "moe": str(moe.path), "base": str(base.path),
                       "dense": str(dense.path)}, 0, 0)
    for name in moe.keys():
        role = moe_arch.role(name)
        if role.role in EXPERT_ROLES:
            experts.setdefault((role.layer, EXPERT_ROLES[role.role]), {})[role.expert] = name
        elif role.role in SHARED_ROLES or role.role in ("router", "shared_expert_router"):
            result.dropped.append({"tensor": name, "reason": f"{role.role}: no dense counterpart (a dense MLP "
                                   "cannot hold a separately gated expert)" if "shared" in role.role else
                                   f"{role.role}: no dense counterpart (used only for router statistics)"})
    chosen_layers: dict[int, dict] = {}

    def produce(name: str) -> torch.Tensor | None:
        role = dense_arch.role(name)
        tensor = dense.get_checked(name)
        group = experts.get((role.layer, role.role))
        if group is None:
            return _direct_delta(result, name, tensor, base, moe, weight)
        layer_usage = usage.get(role.layer)
        chosen = top_k_experts(layer_usage, top_k) if layer_usage and top_k else sorted(group)
        weights = [layer_usage[e] for e in chosen] if usage_weighted and layer_usage else None
        if weights is not None and sum(weights) <= 0:
            weights = None
        chosen_layers[role.layer] = {"experts": chosen, "usage": layer_usage, "weights": weights}
        parts = [moe.get_checked(group[e]) for e in chosen]
        if tuple(parts[0].shape) != tuple(tensor.shape):
            return _keep(result, name, f"experts' shape {tuple(parts[0].shape)} differs from {tuple(tensor.shape)}")
        delta = aggregate_experts(parts, method, weights) - base.get_checked(name).float()
        return tensor.float() + weight * delta

    def finish() -> None:
        result.layers = dict(sorted(chosen_layers.items()))
        result.seconds = round(time.perf_counter() - started, 3)

    _write(output, dense, produce, result, [dense, moe] + ([base] if base is not dense else []), finish,
           force, progress)
    return result


def _dense_mlp_index(ck: Checkpoint, arch: Architecture) -> dict[tuple[int, str], str]:
    index = {}
    for name in ck.keys():
        role = arch.role(name)
        if role.role in ("mlp_gate", "mlp_up", "mlp_down") and name.endswith(".weight"):
            index[role.layer, role.role] = name
    return index


def _direct_delta(result: MoeResult, name: str, tensor: torch.Tensor, base: Checkpoint, other: Checkpoint,
                  weight: float) -> torch.Tensor | None:
    """Tensors both sides have under one name (attention, norms, embeddings): recipient + w*(other-base)."""
    if not tensor.is_floating_point():
        return _keep(result, name, "not floating point")
    for ck in (base, other):
        if name not in ck:
            return _keep(result, name, f"absent from {ck.path.name}")
        if ck.shape(name) != tuple(tensor.shape):
            return _keep(result, name, f"shape {ck.shape(name)} in {ck.path.name} differs from {tuple(tensor.shape)}")
    return tensor.float() + weight * (other.get_checked(name).float() - base.get_checked(name).float())


def _keep(result: MoeResult, name: str, reason: str) -> None:
    result.kept.append({"tensor": name, "reason": reason})
    return None


def _write(output, recipient: Checkpoint, produce: Callable[[str], torch.Tensor | None], result: MoeResult,
           inputs: list[Checkpoint], finish: Callable[[], None], force: bool, progress: bool) -> None:
    """Stream the recipient's tensor list through `produce` (None = keep), then provenance."""
    names = sorted(recipient.keys(), key=natural_key)
    plan = [PlannedTensor(n, recipient.shape(n), recipient.get(n).dtype) for n in names]
    with atomic_output_dir(output, force, inputs) as tmp:
        writer = ShardedWriter(tmp, plan)
        for item in tqdm(plan, desc=result.direction, unit="tensor", disable=not progress):
            new = produce(item.name)
            result.changed += new is not None
            writer.write(item.name, (recipient.get_checked(item.name) if new is None else new).to(item.dtype))
        writer.close()
        for file in recipient.sidecar_files():
            shutil.copy2(file, tmp / file.name)
        (tmp / "config.json").write_text(json.dumps(recipient.config, indent=2, sort_keys=True) + "\n")
        result.tensors = len(plan)
        finish()
        write_provenance(tmp, provenance_record(result.direction, inputs=input_records(inputs),
                                                result=result.to_dict()))
