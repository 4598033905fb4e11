"""Merge methods by name, with the parameters each declares (mergekit's YAML keys and defaults).

A method is a pure function `f(base, tensors, *, <per-model params as lists>, <global params>,
generator) -> Tensor` (`generator`: one, or one per model, for random masks). Registering it
declares which parameters it reads, so recipes can be validated before any tensor is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from vadasm.errors import VadasmError


@dataclass(frozen=True)
class MergeMethod:
    name: str
    func: Callable[..., torch.Tensor]
    needs_base: bool
    base_is_input: bool  # does the base model's tensor count as one of the merged inputs?
    model_params: dict[str, Any] = field(default_factory=dict)  # per-model: name -> default
    global_params: dict[str, Any] = field(default_factory=dict)
    reference: str = ""
    exact_inputs: int | None = None  # e.g. slerp merges exactly two models
    # Output rows depend only on the same rows of the inputs, so large tensors can be merged in row
    # chunks (bounded memory); with `magnitude_pruning` the func also takes `cuts` and `offset`,
    # the per-model thresholds found over the whole tensors first (see methods/sparsify.py).
    rows_independent: bool = False
    magnitude_pruning: bool = False


METHODS: dict[str, MergeMethod] = {}


def register(method: MergeMethod) -> MergeMethod:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> MergeMethod:
    if name not in METHODS:
        raise VadasmError(f"unknown merge method '{name}' (available: {', '.join(sorted(METHODS))})")
    return METHODS[name]
