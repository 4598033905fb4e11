"""The architecture table: which tensor plays which role, read from `data/<model_type>.json`.

Adding a model family is adding a JSON file. A text file lists the embeddings, LM head, final
norms, the per-layer prefix and, per layer, each tensor suffix with its role (`{expert}` marks
an expert index). A vision-language file lists, for each on-disk naming layout (transformers
before and after 4.52), how the text model's names are prefixed and where the vision tower and
projector live; its language model is described by the text file of `text_config.model_type`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from vadasm.errors import VadasmError

# Roles whose tensors are per-layer linear maps (what merges and alignment act on).
LINEAR_ROLES = frozenset({
    "attn_q", "attn_k", "attn_v", "attn_o", "attn_qkv", "attn_kv", "mlp_gate", "mlp_up", "mlp_down",
    "mlp_gate_up", "expert_gate", "expert_up", "expert_down", "shared_expert_gate", "shared_expert_up",
    "shared_expert_down", "stacked_expert_gate_up", "stacked_expert_down",
})


@dataclass(frozen=True)
class TensorRole:
    """What a tensor is: its part of the model, role, layer and expert index (if any)."""

    part: str  # "text", "vision_tower", "projector", "vision_extra" or "unknown"
    role: str  # "embed", "lm_head", "final_norm", "attn_q", ..., "norm", "router", "unknown"
    layer: int | None = None
    expert: int | None = None


@dataclass(frozen=True)
class TextArch:
    model_type: str
    spec: dict

    @property
    def note(self) -> str | None:
        return self.spec.get("note")

    def config_value(self, config: dict, key: str):
        """A config field by meaning; the table may list several names (renamed across versions)."""
        names = self.spec["config"].get(key) or []
        for name in [names] if isinstance(names, str) else names:
            if config.get(name) is not None:
                return config[name]
        return None

    @property
    def layer_pattern(self) -> re.Pattern:
        return _layer_pattern(self.model_type)

    def role(self, name: str) -> TensorRole:
        spec = self.spec
        if name in spec["embed"] or name in spec.get("position_embed", []):
            return TensorRole("text", "embed")
        if name in (spec["lm_head"], spec.get("lm_head_bias")):
            return TensorRole("text", "lm_head")
        if name in spec["final_norm"]:
            return TensorRole("text", "final_norm")
        match = self.layer_pattern.fullmatch(name)
        if match is None:
            return TensorRole("text", "unknown")
        layer = int(match.group("layer"))
        for suffix_re, role in _suffix_patterns(self.model_type):
            found = suffix_re.fullmatch(match.group("rest"))
            if found:
                expert = found.groupdict().get("expert")
                return TensorRole("text", role, layer, int(expert) if expert is not None else None)
        return TensorRole("text", "unknown", layer)


@dataclass(frozen=True)
class VisionLayout:
    """Where the parts of a vision-language checkpoint live under one naming scheme."""

    name: str
    text_prefixes: dict[str, str]  # text-model prefix -> prefix in this checkpoint
    vision_tower: str
    projector: str
    extra: tuple[str, ...] = ()

    def to_text_name(self, name: str) -> str | None:
        """Checkpoint name -> the text model's own name, or None if not a text tensor."""
        for text_prefix, here in sorted(self.text_prefixes.items(), key=lambda kv: -len(kv[1])):
            if name.startswith(here):
                return text_prefix + name[len(here):]
        return None

    def from_text_name(self, name: str) -> str:
        for text_prefix, here in sorted(self.text_prefixes.items(), key=lambda kv: -len(kv[0])):
            if name.startswith(text_prefix):
                return here + name[len(text_prefix):]
        raise KeyError(name)


@dataclass(frozen=True)
class Architecture:
    """A model's architecture: its text part and, for vision-language models, the layout."""

    model_type: str
    text: TextArch
    text_config: dict
    vision_spec: dict | None = None
    layout: VisionLayout | None = None

    @property
    def has_vision(self) -> bool:
        return self.vision_spec is not None

    def role(self, name: str) -> TensorRole:
        if self.layout is None:
            return self.text.role(name)
        if name.startswith(self.layout.projector):
            return TensorRole("projector", "projector")
        if name.startswith(self.layout.vision_tower):
            return TensorRole("vision_tower", "vision")
        if any(name == e or name.startswith(e + ".") for e in self.layout.extra):
            return TensorRole("vision_extra", "vision")
        text_name = self.layout.to_text_name(name)
        if text_name is None:
            return TensorRole("unknown", "unknown")
        return self.text.role(text_name)

    def num_layers(self) -> int | None:
        return self.text.config_value(self.text_config, "num_layers")


def supported_model_types() -> list[str]:
    return list(_table_names())


@cache
def _table_names() -> tuple[str, ...]:
    return tuple(sorted(p.name[:-5] for p in resources.files("vadasm.arch").joinpath("data").iterdir()
                        if p.name.endswith(".json")))


def load_spec(model_type: str) -> dict:
    """The table entry of a family; the name must be one the table lists, so it is never a path."""
    if not isinstance(model_type, str) or model_type not in _table_names():
        shown = repr(model_type) if len(repr(model_type)) <= 80 else repr(model_type)[:77] + "..."
        raise VadasmError(f"unsupported architecture {shown} (supported: {', '.join(_table_names())})")
    return _read_spec(model_type)


@cache
def _read_spec(model_type: str) -> dict:
    return json.loads(resources.files("vadasm.arch").joinpath("data", f"{model_type}.json").read_text())


def architecture_for(config: dict, tensor_names: list[str] | None = None, source: str = "config.json") -> Architecture:
    """Look up the architecture of a model from its config (and, for VLMs, its tensor names)."""
    model_type = config.get("model_type")
    try:
        spec = load_spec(model_type)
    except VadasmError as err:
        raise VadasmError(f"{source}: {err}") from None
    if not spec.get("vision"):
        return Architecture(model_type, TextArch(model_type, spec), config)
    text_config = config.get(spec["text_config_key"]) or config
    text_type = text_config.get("model_type") or spec.get("text_model_type_default")
    if text_config is config or text_type == model_type:
        text_type = spec.get("text_model_type_default", text_type)
    text_spec = load_spec(text_type)
    layout = _detect_layout(spec, tensor_names or [])
    return Architecture(model_type, TextArch(text_type, text_spec), text_config, spec, layout)


def _detect_layout(spec: dict, tensor_names: list[str]) -> VisionLayout:
    layouts = [
        VisionLayout(name, d["text"], d["vision_tower"], d["projector"], tuple(d.get("extra", ())))
        for name, d in spec["layouts"].items()
    ]
    best = max(layouts, key=lambda lay: sum(n.startswith((lay.projector, lay.vision_tower)) for n in tensor_names))
    return best


@cache
def _layer_pattern(model_type: str) -> re.Pattern:
    prefix = load_spec(model_type)["layer_prefix"]
    return re.compile(re.escape(prefix).replace(re.escape("{layer}"), r"(?P<layer>\d+)") + r"(?P<rest>.+)")


@cache
def _suffix_patterns(model_type: str) -> list[tuple[re.Pattern, str]]:
    layer = load_spec(model_type)["layer"]
    return [
        (re.compile(re.escape(suffix).replace(re.escape("{expert}"), r"(?P<expert>\d+)")), role)
        for suffix, role in layer.items()
    ]
