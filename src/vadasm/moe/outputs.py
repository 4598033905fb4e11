"""The MoE families `vadasm moe build` writes, as data: which dense inputs each takes, its tensor names,
its config. Selection follows mergekit 0.1.5's `select_output_arch`: the `architecture:` key filters by
name prefix, Mixtral wins when it fits, otherwise the first family that supports the config.

Tensor names are those transformers itself saves (per-expert `block_sparse_moe.experts.E.w1` for
Mixtral, `mlp.experts.E.gate_proj` for Qwen MoE), which every transformers version and llama.cpp read;
mergekit 0.1.5 writes transformers 5's fused in-memory layout (`experts.gate_up_proj`) instead.

DeepSeek MoE (model_type `deepseek`, DeepSeek-MoE 16B's layout: Llama attention, `mlp.experts.E.*`,
`mlp.gate.weight`, one ungated `mlp.shared_experts.*`) has no transformers class: transformers'
deepseek_v2/v3 use multi-head latent attention, not Llama's q/k/v. Its config is mergekit's (with an
`auto_map` to deepseek-ai/deepseek-moe-16b-base's remote code), so loading it needs `trust_remote_code=True`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vadasm.io.provenance import set_config_dtype
from vadasm.moe.build_config import RANDOM_GATES, MoeBuildConfig

PROJECTIONS = ("gate", "up", "down")
MIXTRAL_NAMES = {"gate": "w1", "up": "w3", "down": "w2"}


@dataclass(frozen=True)
class MoeOutput:
    name: str  # mergekit's name, matched by `architecture:` prefix
    model_type: str
    class_name: str
    input_types: tuple[str, ...]
    shared: str  # "none", "gated" (a shared expert with its own sigmoid gate) or "ungated"
    remote_code: bool = False  # True: no transformers class; loading needs the family's remote code

    def expert_name(self, layer: int, expert: int, projection: str) -> str:
        if self.model_type == "mixtral":
            return f"model.layers.{layer}.block_sparse_moe.experts.{expert}.{MIXTRAL_NAMES[projection]}.weight"
        return f"model.layers.{layer}.mlp.experts.{expert}.{projection}_proj.weight"

    def shared_name(self, layer: int, projection: str) -> str:
        block = "shared_experts" if self.model_type == "deepseek" else "shared_expert"
        return f"model.layers.{layer}.mlp.{block}.{projection}_proj.weight"

    def router_name(self, layer: int) -> str:
        block = "block_sparse_moe" if self.model_type == "mixtral" else "mlp"
        return f"model.layers.{layer}.{block}.gate.weight"

    def shared_router_name(self, layer: int) -> str:
        return f"model.layers.{layer}.mlp.shared_expert_gate.weight"

    def unsupported(self, config: MoeBuildConfig, model_types: list[str]) -> str | None:
        """Why this family cannot hold the config's models (mergekit's `supports_config`), or None."""
        shared = config.shared_experts or []
        if self.shared == "none" and shared:
            return f"{self.name} has no shared experts"
        if self.shared == "gated":
            if len(shared) != 1:
                return f"{self.name} needs exactly one shared expert"
            if config.gate_mode not in RANDOM_GATES and not shared[0].positive_prompts:
                return f"{self.name} needs positive_prompts for its shared expert's gate"
        if self.shared == "ungated" and (len(shared) > 1 or any(e.positive_prompts or e.negative_prompts
                                                                for e in shared)):
            return f"{self.name} takes at most one shared expert, without prompts"
        if len(set(model_types)) != 1:
            return f"{self.name} needs all input models of one family (got {', '.join(sorted(set(model_types)))})"
        if model_types[0] not in self.input_types:
            return f"{self.name} is built from {' / '.join(self.input_types)} models, not {model_types[0]}"
        return None


OUTPUTS = (
    MoeOutput("Mixtral", "mixtral", "MixtralForCausalLM", ("llama", "mistral"), "none"),
    MoeOutput("DeepSeek MoE", "deepseek", "DeepseekForCausalLM", ("llama", "mistral"), "ungated",
              remote_code=True),
    MoeOutput("Qwen MoE", "qwen2_moe", "Qwen2MoeForCausalLM", ("llama", "mistral", "qwen2"), "gated"),
    MoeOutput("Qwen3 MoE", "qwen3_moe", "Qwen3MoeForCausalLM", ("qwen3",), "none"),
)


def select_output(config: MoeBuildConfig, model_types: list[str]) -> MoeOutput:
    """The family to write, or ValueError naming why none fits (with the list of families)."""
    names = ", ".join(o.name for o in OUTPUTS)
    wanted = (config.architecture or "").lower()
    candidates = [o for o in OUTPUTS if o.name.lower().startswith(wanted)]
    if not candidates:
        raise ValueError(f"architecture '{config.architecture}' matches no MoE output family (choose from {names})")
    reasons = {o.name: o.unsupported(config, model_types) for o in candidates}
    fitting = [o for o in candidates if reasons[o.name] is None]
    if not fitting:
        raise ValueError("no MoE output family fits these models: " + "; ".join(reasons.values()))
    return next((o for o in fitting if o.name == "Mixtral"), fitting[0])


def output_config(output: MoeOutput, base_config: dict, experts: int, per_token: int, dtype: str | None,
                  shared: int = 0, base_ref: str = "") -> dict:
    """config.json of the MoE: the base's fields in the family's config class, with mergekit's MoE settings."""
    import json

    import transformers

    if output.model_type == "deepseek":
        return deepseek_config(base_config, experts, shared, per_token, dtype, base_ref)

    fields = {k: v for k, v in base_config.items()
              if k not in ("model_type", "architectures", "transformers_version", "auto_map", "torch_dtype")}
    config_class = transformers.CONFIG_MAPPING[output.model_type]
    config = config_class(**fields)
    config.architectures = [output.class_name]
    config.num_experts_per_tok = per_token
    config.sliding_window = None
    if output.model_type == "mixtral":
        config.num_local_experts = experts
    else:
        config.num_experts = experts
        config.decoder_sparse_step = 1
        config.norm_topk_prob = True
        config.moe_intermediate_size = base_config["intermediate_size"]
        config.mlp_only_layers = []
    if output.model_type == "qwen2_moe":
        config.use_sliding_window = False
        config.shared_expert_intermediate_size = base_config["intermediate_size"]
    result = json.loads(config.to_json_string())
    if dtype is not None:
        set_config_dtype(result, getattr(torch, dtype))  # `dtype`: the base's torch_dtype was left out above
    return result


DEEPSEEK_REMOTE = "deepseek-ai/deepseek-moe-16b-base"


def deepseek_config(base_config: dict, experts: int, shared: int, per_token: int, dtype: str | None,
                    base_ref: str) -> dict:
    """mergekit 0.1.5's DeepSeek MoE config (`DeepseekMoE._generate_config`): the base's whole config
    dict (as transformers' `to_dict` gives it) with the MoE fields and the remote-code `auto_map`.

    Two additions, both fields the remote `DeepseekConfig` reads that transformers 5's `to_dict` leaves
    inside `rope_parameters` or writes as `dtype` only: `rope_theta` (else the remote code uses 10000)
    and `dtype` equal to `torch_dtype` (mergekit keeps the base's `dtype` beside its own `torch_dtype`).
    """
    import transformers

    fields = {k: v for k, v in base_config.items() if k not in ("transformers_version", "auto_map")}
    result = transformers.CONFIG_MAPPING[base_config["model_type"]].from_dict(fields).to_dict()
    result["_name_or_path"] = base_ref  # mergekit reads the base with from_pretrained(ref)
    result.update({
        "architectures": ["DeepseekForCausalLM"], "model_type": "deepseek", "n_routed_experts": experts,
        "n_shared_experts": shared or None, "num_experts_per_tok": per_token, "first_k_dense_replace": 0,
        "moe_layer_freq": 1, "scoring_func": "softmax", "norm_topk_prob": True,
        "moe_intermediate_size": result["intermediate_size"],
        "auto_map": {"AutoConfig": f"{DEEPSEEK_REMOTE}--configuration_deepseek.DeepseekConfig",
                     "AutoModel": f"{DEEPSEEK_REMOTE}--modeling_deepseek.DeepseekModel",
                     "AutoModelForCausalLM": f"{DEEPSEEK_REMOTE}--modeling_deepseek.DeepseekForCausalLM"}})
    rope = result.get("rope_parameters")
    if "rope_theta" not in result and isinstance(rope, dict) and "rope_theta" in rope:
        result["rope_theta"] = rope["rope_theta"]
    if dtype is not None:
        result["torch_dtype"] = result["dtype"] = dtype
    return result


def output_warnings(output: MoeOutput, out_config: dict) -> list[str]:
    """What a user must know to load the output: remote code, and rope settings that code cannot read."""
    if not output.remote_code:
        return []
    warnings = [f"{output.name} has no transformers class: loading needs {DEEPSEEK_REMOTE}'s remote code "
                "(from_pretrained(..., trust_remote_code=True)), as mergekit's output does"]
    rope = out_config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" and not out_config.get("rope_scaling"):
        warnings.append(f"rope_type '{rope['rope_type']}' is in rope_parameters only; the remote code reads "
                        "rope_theta and rope_scaling (linear / dynamic) and would use plain rope")
    return warnings
