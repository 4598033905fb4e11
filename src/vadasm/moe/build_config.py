"""mergekit-moe's YAML config, validated at the edge: `vadasm moe build CONFIG OUT` reads the same files.

Field names and defaults follow mergekit 0.1.5 (`mergekit/moe/config.py`); so do its sanity checks
(`is_bad_config`): enough experts for `experts_per_token`, prompts for every expert unless the gates
are random, prompts not identical for all experts, expert models not all the same unless allowed.
vadasm adds `seed` (random gates and `noise_scale` are seeded and recorded) and the `router_input`
gate mode (see `gates.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vadasm.errors import VadasmError, one_line
from vadasm.merge.recipe import validation_error_line
from vadasm.merge.recipe_yaml import read_yaml_mapping

GateMode = Literal["hidden", "hidden_avg", "hidden_last", "cheap_embed", "random", "uniform_random", "router_input"]
RANDOM_GATES = ("random", "uniform_random")


class MoeExpert(BaseModel):
    """One model whose MLPs become one expert (or the shared expert) in every layer."""

    model_config = ConfigDict(extra="forbid")
    source_model: str
    positive_prompts: list[str] | None = None
    negative_prompts: list[str] | None = None
    noise_scale: float | None = None  # Gaussian noise (seeded) added to every expert tensor
    residual_scale: float | None = None  # multiplies the expert's down projection

    def prompts_key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(self.positive_prompts or []), tuple(self.negative_prompts or [])


class MoeBuildConfig(BaseModel):
    """A mergekit-moe config: attention, norms and embeddings from `base_model`, MLPs from the experts."""

    model_config = ConfigDict(extra="forbid")
    base_model: str
    experts: list[MoeExpert] = Field(min_length=1)
    gate_mode: GateMode = "hidden"
    dtype: Literal["float32", "float16", "bfloat16", "fp32", "fp16", "bf16"] | None = None
    experts_per_token: int = 2
    shared_experts: list[MoeExpert] | None = None
    architecture: str | None = None
    seed: int = 0  # vadasm: seeds random gates and expert noise


def check_moe_config(config: MoeBuildConfig, allow_all_same: bool = False) -> None:
    """mergekit's `is_bad_config` as one-line errors (raised as ValueError, the caller names the file)."""
    if config.experts_per_token < 1:
        raise ValueError("experts_per_token must be >= 1")
    if len(config.experts) < config.experts_per_token:
        raise ValueError(f"{len(config.experts)} experts but experts_per_token is {config.experts_per_token}; "
                         "give at least as many experts")
    if config.gate_mode in RANDOM_GATES:
        return
    for index, expert in enumerate(config.experts):
        if not expert.positive_prompts:
            raise ValueError(f"experts[{index}] has no positive_prompts (needed by gate_mode {config.gate_mode}; "
                             "or use gate_mode: random)")
    if len(config.experts) > 1 and len({e.prompts_key() for e in config.experts}) == 1:
        raise ValueError("the positive and negative prompts are identical for all experts; the router could not "
                         "tell them apart")
    if not allow_all_same and len(config.experts) > 1 and len({e.source_model for e in config.experts}) == 1:
        raise ValueError("all experts are the same model: the MoE computes what that model computes at a higher "
                         "cost (pass --i-understand-this-is-not-useful-without-training to build it anyway)")
    shared = config.shared_experts or []
    if shared and len({bool(e.positive_prompts) for e in shared}) > 1:
        raise ValueError("give prompts for all shared experts or for none")


def load_moe_config(path: str | Path, allow_all_same: bool = False) -> MoeBuildConfig:
    """Read and validate a mergekit-moe YAML file; every problem is one `VadasmError` line naming the file."""
    raw = read_yaml_mapping(path, "mergekit-moe config", "'base_model' and 'experts'")
    try:
        config = MoeBuildConfig.model_validate(raw)
        check_moe_config(config, allow_all_same)
    except ValidationError as err:
        raise VadasmError(validation_error_line(str(path), err)) from None
    except ValueError as err:
        raise VadasmError(one_line(f"{path}: {err}")) from None
    return config
