"""What `vadasm inspect` reports: the architecture as recognised from config and tensor names."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from vadasm.arch.table import architecture_for

if TYPE_CHECKING:  # annotation only: the architecture table sits below io, which checks configs against it
    from vadasm.io import Checkpoint


@dataclass
class ModelSummary:
    path: str
    model_type: str
    architectures: list[str]
    text_model_type: str
    num_layers: int | None
    hidden_size: int | None
    intermediate_size: int | None
    vocab_size: int | None
    num_experts: int | None
    tied_embeddings: bool
    parameters: int
    dtypes: dict[str, int]
    vision: dict | None = None
    roles: dict[str, int] = field(default_factory=dict)
    unknown_tensors: list[str] = field(default_factory=list)

    @property
    def is_moe(self) -> bool:
        return bool(self.num_experts)

    def to_dict(self) -> dict:
        return {**asdict(self), "moe": self.is_moe}

    def lines(self) -> list[str]:
        out = [
            f"{self.path}",
            f"  architecture : {self.model_type} ({', '.join(self.architectures) or 'no architectures field'})",
            f"  text model   : {self.text_model_type}, {self.num_layers} layers, hidden {self.hidden_size}, "
            f"intermediate {self.intermediate_size}, vocab {self.vocab_size}",
            f"  kind         : {'MoE, ' + str(self.num_experts) + ' experts' if self.is_moe else 'dense'}, "
            f"embeddings {'tied' if self.tied_embeddings else 'untied'}",
            f"  parameters   : {self.parameters:,} ({', '.join(f'{k}: {v}' for k, v in sorted(self.dtypes.items()))})",
        ]
        if self.vision:
            v = self.vision
            out.append(f"  vision       : layout {v['layout']}, vision tower {v['vision_tower_parameters']:,} params, "
                       f"projector {v['projector_parameters']:,} params")
            out.append(f"  projector    : {', '.join(f'{k} {tuple(s)}' for k, s in v['projector_tensors'].items())}")
        out.append(f"  roles        : {', '.join(f'{k} {n}' for k, n in sorted(self.roles.items()))}")
        if self.unknown_tensors:
            out.append(f"  unrecognised : {len(self.unknown_tensors)} tensors, e.g. {self.unknown_tensors[:3]}")
        return out


def describe(checkpoint: Checkpoint) -> ModelSummary:
    names = checkpoint.keys()
    arch = architecture_for(checkpoint.config, names, source=str(checkpoint.path / "config.json"))
    roles = {name: arch.role(name) for name in names}
    text_cfg = arch.text_config

    vision = None
    if arch.has_vision:
        vision = {
            "layout": arch.layout.name,
            "vision_tower_parameters": sum(
                checkpoint.num_elements(n) for n, r in roles.items() if r.part == "vision_tower"),
            "projector_parameters": sum(
                checkpoint.num_elements(n) for n, r in roles.items() if r.part == "projector"),
            "projector_tensors": {n: checkpoint.shape(n) for n, r in roles.items() if r.part == "projector"},
        }
    lm_head_name = arch.text.spec["lm_head"]
    if arch.layout is not None:
        lm_head_name = arch.layout.from_text_name(lm_head_name)
    tied = text_cfg.get("tie_word_embeddings", checkpoint.config.get("tie_word_embeddings"))
    if tied is None:
        tied = lm_head_name not in checkpoint
    return ModelSummary(
        path=str(checkpoint.path),
        model_type=arch.model_type,
        architectures=checkpoint.config.get("architectures") or [],
        text_model_type=arch.text.model_type,
        num_layers=arch.text.config_value(text_cfg, "num_layers"),
        hidden_size=arch.text.config_value(text_cfg, "hidden_size"),
        intermediate_size=arch.text.config_value(text_cfg, "intermediate_size"),
        vocab_size=arch.text.config_value(text_cfg, "vocab_size"),
        num_experts=arch.text.config_value(text_cfg, "num_experts"),
        tied_embeddings=bool(tied),
        parameters=checkpoint.num_parameters(),
        dtypes=dict(Counter(checkpoint.entries[n].dtype for n in names)),
        vision=vision,
        roles=dict(Counter(f"{r.part}:{r.role}" if r.part != "text" else r.role for r in roles.values())),
        unknown_tensors=[n for n, r in roles.items() if r.role == "unknown"],
    )
