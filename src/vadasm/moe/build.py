"""`vadasm moe build`: a mixture of experts from dense models, as mergekit-moe builds it, streamed.

Flow: config -> output family (`outputs.py`) -> gate rows (`gates.py`, the only step that runs a model)
-> tensor plan (base model's attention/norms/embeddings, every expert's MLP per layer, routers) ->
one tensor at a time through `ShardedWriter` into an atomic output folder -> config.json, the base's
tokenizer files, `mergekit_moe_config.yml` (the config as run) and `vadasm_config.json` (provenance).
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

from vadasm.errors import VadasmError
from vadasm.io import Checkpoint, PlannedTensor, ShardedWriter, atomic_output_dir, check_output_free, parse_dtype
from vadasm.io.provenance import input_records, natural_key, provenance_record, write_provenance
from vadasm.moe.build_config import RANDOM_GATES, MoeBuildConfig, MoeExpert, check_moe_config, load_moe_config
from vadasm.moe.gates import (
    load_prompt_tokenizer,
    prompt_gate_rows,
    random_gates,
    signal_function,
    tokenize_prompts,
)
from vadasm.moe.outputs import PROJECTIONS, MoeOutput, output_config, output_warnings, select_output

EMBED = "model.embed_tokens.weight"


@dataclass
class MoeBuildResult:
    output: str
    architecture: str
    gate_mode: str
    seed: int
    experts: list[str]
    shared_experts: list[str]
    tensors: int = 0
    degenerate_layers: list[int] = field(default_factory=list)  # gate rows nearly parallel (cond > 5)
    warnings: list[str] = field(default_factory=list)  # also listed under the card's limits
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def build_moe_from_file(config_path: str | Path, output: str | Path, force: bool = False,
                        allow_all_same: bool = False, progress: bool = True) -> MoeBuildResult:
    """Read a mergekit-moe YAML file and build it; errors name the file."""
    config = load_moe_config(config_path, allow_all_same)
    return build_moe(config, output, force=force, progress=progress, source_text=Path(config_path).read_text(),
                     allow_all_same=allow_all_same)


def build_moe(config: MoeBuildConfig, output: str | Path, force: bool = False, progress: bool = True,
              routers: torch.Tensor | None = None, source_text: str | None = None,
              allow_all_same: bool = False) -> MoeBuildResult:
    """Build the MoE `config` describes into `output`. `routers` ([layers, experts (+ shared), hidden])
    replaces the gate computation (the testbed measures them once for two MoEs; prompts are then not
    needed)."""
    started = time.perf_counter()
    if routers is None:
        try:
            check_moe_config(config, allow_all_same)
        except ValueError as err:
            raise VadasmError(f"MoE config: {err}") from None
    shared = config.shared_experts or []
    refs = [config.base_model] + [e.source_model for e in config.experts + shared]
    check_output_free(Path(output), force, refs)
    opened: dict[str, Checkpoint] = {}
    try:
        for ref in refs:
            if ref not in opened:
                opened[ref] = Checkpoint.open(ref)
        base = opened[config.base_model]
        try:
            moe = select_output(config, [opened[r].config.get("model_type", "?") for r in refs])
        except ValueError as err:
            raise VadasmError(f"{base.path / 'config.json'}: {err}") from None
        layers = int(base.config["num_hidden_layers"])
        _check_inputs(moe, base, [opened[e.source_model] for e in config.experts + shared], layers)
        dtype = parse_dtype(config.dtype) if config.dtype else _config_dtype(base.config)
        gated = [*config.experts, *(shared if (any(e.positive_prompts for e in shared) or
                                              config.gate_mode in RANDOM_GATES) else [])]
        gates = routers if routers is not None else compute_gates(config, base, gated, layers)
        if gates.shape[:2] != (layers, len(gated)):
            raise VadasmError(f"router rows have shape {tuple(gates.shape)}, expected ({layers}, {len(gated)}, hidden)")
        result = MoeBuildResult(str(output), moe.name, config.gate_mode, config.seed,
                                [e.source_model for e in config.experts], [e.source_model for e in shared])
        if config.gate_mode != "router_input":  # centred rows are dependent by construction
            result.degenerate_layers = [i for i in range(layers) if len(gated) > 1 and
                                        float(torch.linalg.cond(gates[i].float())) > 5.0]
        plan = _plan(moe, config, base, opened, gates, layers, dtype)
        out_config = output_config(moe, base.config, len(config.experts), config.experts_per_token,
                                   _dtype_name(dtype or base.dtype(EMBED)), len(shared), config.base_model)
        result.warnings = output_warnings(moe, out_config)
        _write(output, force, plan, out_config, base, list(opened.values()), config, result, source_text,
               started, progress)
    finally:
        for ck in opened.values():
            ck.close()
    return result


def _write(output: str | Path, force: bool, plan: Plan, out_config: dict, base: Checkpoint, inputs: list[Checkpoint],
           config: MoeBuildConfig, result: MoeBuildResult, source_text: str | None, started: float,
           progress: bool) -> None:
    """Stream the planned tensors into a temporary folder, add config, tokenizer and provenance, rename."""
    with atomic_output_dir(output, force, inputs) as tmp:  # inputs re-checked for changes before the rename
        writer = ShardedWriter(tmp, [item for item, _ in plan])
        for item, produce in tqdm(plan, desc="moe build", unit="tensor", disable=not progress):
            writer.write(item.name, produce().to(item.dtype))
        writer.close()
        for file in base.sidecar_files():
            shutil.copy2(file, tmp / file.name)
        (tmp / "config.json").write_text(json.dumps(out_config, indent=2, sort_keys=True) + "\n")
        (tmp / "mergekit_moe_config.yml").write_text(source_text or _yaml(config))
        result.tensors = len(plan)
        result.seconds = round(time.perf_counter() - started, 3)
        write_provenance(tmp, provenance_record("moe_build", config=config.model_dump(exclude_none=True),
                                                inputs=input_records(inputs), result=result.to_dict()))
        from vadasm.card import render_card  # the card reads vadasm_config.json back (warnings as limits)

        (tmp / "README.md").write_text(render_card(tmp, location=Path(output)))


Plan = list[tuple[PlannedTensor, Callable[[], torch.Tensor]]]


def compute_gates(config: MoeBuildConfig, base: Checkpoint, gated: list[MoeExpert], layers: int) -> torch.Tensor:
    """[layers, len(gated), hidden] router rows from the config's gate mode, run in the base model."""
    hidden = int(base.config["hidden_size"])
    if config.gate_mode in RANDOM_GATES:
        return random_gates(layers, len(gated), hidden, config.seed, uniform=config.gate_mode == "uniform_random")
    tokenizer = load_prompt_tokenizer(base.path)
    embed = base.get_checked(EMBED) if config.gate_mode == "cheap_embed" else None
    signal = signal_function(config.gate_mode, base.path, embed, layers)
    batches = [([tokenize_prompts(tokenizer, e.positive_prompts or [])],
                [tokenize_prompts(tokenizer, e.negative_prompts)] if e.negative_prompts else []) for e in gated]
    return prompt_gate_rows(signal, batches, config.gate_mode, routed=len(config.experts))


def _plan(moe: MoeOutput, config: MoeBuildConfig, base: Checkpoint, opened: dict[str, Checkpoint],
          gates: torch.Tensor, layers: int, dtype: torch.dtype | None) -> Plan:
    """Every output tensor with the function that produces it, in a stable order."""
    plan: Plan = []

    def add(name: str, shape: tuple[int, ...], source_dtype: torch.dtype, produce: Callable[[], torch.Tensor]) -> None:
        plan.append((PlannedTensor(name, tuple(shape), dtype or source_dtype), produce))

    for name in base.keys():
        if ".mlp." not in name:
            add(name, base.shape(name), base.dtype(name), lambda n=name: base.get_checked(n))
    if moe.model_type == "qwen2_moe":  # Qwen MoE has q/k/v biases: zeros where the base has none
        for layer in range(layers):
            for proj in ("q", "k", "v"):
                prefix = f"model.layers.{layer}.self_attn.{proj}_proj"
                bias, weight = f"{prefix}.bias", f"{prefix}.weight"
                if bias not in base:
                    shape = (base.shape(weight)[0],)
                    add(bias, shape, base.dtype(weight), lambda s=shape: torch.zeros(s))
    shared = config.shared_experts or []
    for layer in range(layers):
        for index, expert in enumerate(config.experts):
            for projection in PROJECTIONS:
                add(moe.expert_name(layer, index, projection), *_expert_tensor(
                    opened[expert.source_model], expert, layer, projection, _noise_seed(config.seed, len(plan))))
        for expert in shared[:1]:
            for projection in PROJECTIONS:
                add(moe.shared_name(layer, projection), *_expert_tensor(
                    opened[expert.source_model], expert, layer, projection, _noise_seed(config.seed, len(plan))))
        hidden = gates.shape[2]
        add(moe.router_name(layer), (len(config.experts), hidden), base.dtype(EMBED),
            lambda i=layer: gates[i, : len(config.experts)].contiguous())
        if moe.shared == "gated":
            add(moe.shared_router_name(layer), (1, hidden), base.dtype(EMBED),
                lambda i=layer: gates[i, len(config.experts):].contiguous())
    plan.sort(key=lambda entry: natural_key(entry[0].name))
    return plan


def _expert_tensor(ck: Checkpoint, expert: MoeExpert, layer: int, projection: str, noise_seed: int):
    """(shape, dtype, producer) of one expert tensor: the dense MLP weight, plus seeded noise if asked,
    the down projection times residual_scale if asked (mergekit's `noise_and_scale`)."""
    name = f"model.layers.{layer}.mlp.{projection}_proj.weight"

    def produce() -> torch.Tensor:
        tensor = ck.get_checked(name)
        if expert.noise_scale is not None:  # each tensor its own seed: no noise held beyond the tensor
            noise = torch.randn(tensor.shape, generator=torch.Generator().manual_seed(noise_seed))
            tensor = tensor.float() + noise * expert.noise_scale
        if projection == "down" and expert.residual_scale is not None:
            tensor = tensor.float() * expert.residual_scale
        return tensor
    return ck.shape(name), ck.dtype(name), produce


def _check_inputs(moe: MoeOutput, base: Checkpoint, experts: list[Checkpoint], layers: int) -> None:
    """Refuse, in one line, what the MoE family cannot hold: biases it lacks, MLPs of other shapes or missing."""
    biases = [n for n in base.keys() if n.endswith(".bias") and not (
        moe.model_type == "qwen2_moe" and any(f"self_attn.{p}_proj.bias" in n for p in "qkv"))]
    if biases:
        raise VadasmError(f"{base.path / 'config.json'}: {moe.name} has no tensor for {biases[0]} (the base model "
                          "has biases the MoE family lacks)")
    if EMBED not in base:
        raise VadasmError(f"{base.path}: no {EMBED}; mergekit-moe builds from Llama-style checkpoints")
    for ck in experts:
        for layer in range(layers):
            for projection in PROJECTIONS:
                name = f"model.layers.{layer}.mlp.{projection}_proj.weight"
                if name not in ck:
                    raise VadasmError(f"{ck.path}: no {name} (an expert needs every layer's MLP of the base model)")
                if name in base and ck.shape(name) != base.shape(name):
                    raise VadasmError(f"{ck.path}: {name} has shape {list(ck.shape(name))}, the base model's is "
                                      f"{list(base.shape(name))}; experts must be as wide as the base")
            if any(k.startswith(f"model.layers.{layer}.mlp.") and k.endswith(".bias") for k in ck.keys()):
                raise VadasmError(f"{ck.path}: MLP biases in layer {layer}; {moe.name} experts have none")


def _noise_seed(seed: int, position: int) -> int:
    """A distinct, reproducible seed per planned tensor."""
    return (seed * 1_000_003 + position) % 2**63


def _config_dtype(config: dict) -> torch.dtype | None:
    name = config.get("dtype") or config.get("torch_dtype")
    try:
        return parse_dtype(name) if isinstance(name, str) else None
    except VadasmError:
        return None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _yaml(config: MoeBuildConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(exclude_none=True), sort_keys=False)
