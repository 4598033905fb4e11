"""The MoE families `vadasm moe build` writes, as data: which dense inputs each takes, its tensor names,
its config. Selection follows mergekit 0.1.5's `select_output_arch`: the `architecture:` key filters by
name prefix, Mixtral wins when it fits, otherwise the first family that supports the config.

Tensor names are those transformers itself saves (per-expert `block_sparse_moe.experts.E.w1` for
Mixtral, `mlp.experts.E.gate_proj` for Qwen MoE), which every transformers version and llama.cpp read;
mergekit 0.1.5 writes transformers 5's fused in-memory layout (`experts.gate_up_proj`) instead.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    stock: bool = True  # False: no stock transformers class (remote code); vadasm does not write it

    def expert_name(self, layer: int, expert: int, projection: str) -> str:
        if self.model_type == "mixtral":
            return f"model.layers.{layer}.block_sparse_moe.experts.{expert}.{MIXTRAL_NAMES[projection]}.weight"
        return f"model.layers.{layer}.mlp.experts.{expert}.{projection}_proj.weight"

    def shared_name(self, layer: int, projection: str) -> str:
        return f"model.layers.{layer}.mlp.shared_expert.{projection}_proj.weight"

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
    MoeOutput("DeepSeek MoE", "deepseek", "DeepseekForCausalLM", ("llama", "mistral"), "ungated", stock=False),
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
    chosen = next((o for o in fitting if o.name == "Mixtral"), fitting[0])
    if not chosen.stock:
        raise ValueError(f"{chosen.name} output (model_type '{chosen.model_type}') has no stock transformers class "
                         "(mergekit's needs deepseek-ai's remote code); vadasm does not write it: drop the shared "
                         "expert for Mixtral, or give it prompts and set architecture: qwen")
    return chosen


def output_config(output: MoeOutput, base_config: dict, experts: int, per_token: int, dtype: str | None) -> dict:
    """config.json of the MoE: the base's fields in the family's config class, with mergekit's MoE settings."""
    import json

    import transformers

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
        result["dtype"] = dtype
    return result
