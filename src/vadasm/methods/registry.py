"""Merge methods by name, with the parameters each declares (mergekit's YAML keys and defaults).

A method is a pure function `f(base, tensors, *, <per-model params as lists>, <global params>,
generator) -> Tensor` (`generator`: one, or one per model, for random masks). Registering it
declares which parameters it reads, their types and ranges (`Param`), so recipes and flags are
validated before any tensor is loaded, and help texts and tunable names come from one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vadasm.errors import VadasmError

_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


@dataclass(frozen=True)
class Param:
    """One parameter of a merge method: its recipe name, default, type and accepted range.

    `default=None` means required. `per_model` parameters take one value per input model (e.g.
    `weight`), others one value for the merge (e.g. `lambda`). `low`/`high` bound numbers
    (inclusive unless `low_open`/`high_open`); `choices` lists the accepted strings.
    """

    name: str
    default: Any = None
    per_model: bool = False
    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    help: str = ""
    ignored: bool = False  # accepted for mergekit recipes but unused by this method: a run notes it when set

    def check(self, value: Any) -> Any:
        """The value converted to this parameter's type; ValueError naming the rule it breaks."""
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
                return _BOOL_WORDS[value.strip().lower()]
            raise ValueError(f"'{self.name}' must be true or false, got {value!r}")
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                allowed = f"one of {', '.join(self.choices)}" if self.choices else "a string"
                raise ValueError(f"'{self.name}' must be {allowed}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"'{self.name}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"'{self.name}' must be finite, got {value!r}")
        if self.kind is int and value != int(value):
            raise ValueError(f"'{self.name}' must be a whole number, got {value!r}")
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise ValueError(f"'{self.name}' must be {'>' if self.low_open else '>='} {self.low}, got {value!r}")
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise ValueError(f"'{self.name}' must be {'<' if self.high_open else '<='} {self.high}, got {value!r}")
        return int(value) if self.kind is int else float(value)

    def describe(self) -> str:
        """One line for --help: name, range, default, meaning."""
        if self.choices:
            accepted = "|".join(self.choices)
        elif self.kind is bool:
            accepted = "bool"
        else:
            lo = "" if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
            hi = "" if self.high is None else f"{self.high:g}{')' if self.high_open else ']'}"
            accepted = f"{self.kind.__name__} {lo}..{hi}" if (lo or hi) else self.kind.__name__
        default = "required" if self.default is None else f"default {self.default}"
        scope = "per model" if self.per_model else "global"
        return f"{self.name} ({accepted}; {default}; {scope}){': ' + self.help if self.help else ''}"


# Parameters shared by many methods, declared once with mergekit's names and defaults.
WEIGHT = Param("weight", 1.0, per_model=True, help="scale of this model's contribution")
DENSITY = Param("density", 1.0, per_model=True, low=0.0, high=1.0, low_open=True,
                help="fraction of each delta's entries kept")
LAMBDA = Param("lambda", 1.0, help="scale of the combined delta before it is added to the base")
INT8_MASK = Param("int8_mask", False, kind=bool, help="accepted for mergekit recipes; changes nothing here")


@dataclass(frozen=True)
class MergeMethod:
    name: str
    func: Callable[..., torch.Tensor]
    needs_base: bool
    base_is_input: bool  # does the base model's tensor count as one of the merged inputs?
    params: tuple[Param, ...] = ()
    reference: str = ""
    exact_inputs: int | None = None  # e.g. slerp merges exactly two models
    min_inputs: int | None = None  # fewest models besides the base, e.g. model_stock needs two
    # Output rows depend only on the same rows of the inputs, so large tensors can be merged in row
    # chunks (bounded memory); with `magnitude_pruning` the func also takes `cuts` and `offset`,
    # the per-model thresholds found over the whole tensors first (see methods/sparsify.py).
    rows_independent: bool = False
    magnitude_pruning: bool = False
    needs_data: bool = False  # calibration data (activations) needed, e.g. RegMean
    base_joins_inputs: bool = False  # a base_model missing from `models:` is merged as one more input (mergekit)
    summary: str = ""  # one line for --help

    @property
    def merges_deltas(self) -> bool:
        """Can it add weighted deltas from a base, with every other parameter at its default? True for a
        base-relative method that reads a per-model `weight`, takes two models and needs no data: graft's
        language merge (recipient + beta x donor delta over the common base) then offers it."""
        weight = next((p for p in self.params if p.name == "weight"), None)
        return (self.needs_base and not self.base_is_input and not self.needs_data
                and weight is not None and weight.per_model and not weight.ignored
                and self.exact_inputs in (None, 2) and (self.min_inputs or 0) <= 2
                and all(p.default is not None for p in self.params))

    @property
    def model_params(self) -> dict[str, Any]:
        """Per-model parameters: name -> default."""
        return {p.name: p.default for p in self.params if p.per_model}

    @property
    def global_params(self) -> dict[str, Any]:
        """Parameters of the whole merge: name -> default."""
        return {p.name: p.default for p in self.params if not p.per_model}

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise VadasmError(f"merge method '{self.name}' has no parameter '{name}' "
                          f"(known: {', '.join(p.name for p in self.params) or 'none'})")


METHODS: dict[str, MergeMethod] = {}


def register(method: MergeMethod) -> MergeMethod:
    if method.name in METHODS:
        raise ValueError(f"merge method '{method.name}' registered twice")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> MergeMethod:
    if name not in METHODS:
        raise VadasmError(f"unknown merge method '{name}' (available: {', '.join(sorted(METHODS))})")
    return METHODS[name]


def method_names(*, needs_data: bool | None = None, merges_deltas: bool | None = None) -> list[str]:
    """Registered method names, sorted; `needs_data` filters data-aware (or data-free) methods,
    `merges_deltas` those that can (or cannot) merge a delta onto a base (`MergeMethod.merges_deltas`)."""
    return sorted(n for n, m in METHODS.items() if (needs_data is None or m.needs_data == needs_data)
                  and (merges_deltas is None or m.merges_deltas == merges_deltas))


def ignored_settings(method: MergeMethod, recipe: Any) -> list[str]:
    """One note per parameter the recipe sets that `method` accepts only for mergekit's sake and ignores.

    `recipe` is the recipe as plain data; every `parameters:` block in it is looked at (global, per
    model, per slice and source), so the note does not depend on where the setting was written.
    """
    def blocks(node: Any):
        if isinstance(node, dict):
            if isinstance(node.get("parameters"), dict):
                yield node["parameters"]
            for value in node.values():
                yield from blocks(value)
        elif isinstance(node, list):
            for value in node:
                yield from blocks(value)

    names = {p.name for p in method.params if p.ignored}
    used = sorted({key for block in blocks(recipe) for key in block} & names)
    return [f"'{name}' is accepted for mergekit recipes but {method.name} ignores it" for name in used]
