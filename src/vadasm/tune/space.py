"""The search space of a tuning run: named coefficients with ranges, choices and defaults.

Optimizers work in the unit cube; `decode` maps a point of it to concrete parameters, so every
optimizer (grid, CMA-ES, TPE, GA) explores exactly the same space and logs the same values.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from vadasm.errors import VadasmError


@dataclass(frozen=True)
class Param:
    """One coefficient: a float/int range [low, high] or a list of choices; `default` is the untuned value."""

    name: str
    low: float = 0.0
    high: float = 1.0
    kind: str = "float"  # "float", "int" or "choice"
    choices: tuple[Any, ...] = ()
    default: Any = None

    def decode(self, u: float) -> Any:
        u = min(max(u, 0.0), 1.0)
        if self.kind == "choice":
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        value = self.low + u * (self.high - self.low)
        return int(round(value)) if self.kind == "int" else round(value, 6)

    def encode(self, value: Any) -> float:
        if self.kind == "choice":
            return (self.choices.index(value) + 0.5) / len(self.choices)
        return 0.0 if self.high == self.low else (float(value) - self.low) / (self.high - self.low)

    def grid(self, points: int) -> list[Any]:
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            values = list(range(int(self.low), int(self.high) + 1))
            return values[:: max(1, math.ceil(len(values) / points))]
        if points < 2:
            return [self.decode(0.5)]
        return [round(self.low + k * (self.high - self.low) / (points - 1), 6) for k in range(points)]


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def decode(self, point: list[float]) -> dict[str, Any]:
        return {p.name: p.decode(u) for p, u in zip(self.params, point)}

    def encode(self, values: dict[str, Any]) -> list[float]:
        return [p.encode(values[p.name]) for p in self.params]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def grid(self, points: int) -> list[dict[str, Any]]:
        axes = [p.grid(points) for p in self.params]
        return [dict(zip(self.names, combo)) for combo in itertools.product(*axes)]


def _number(text: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise VadasmError(f"--param {spec!r}: {text!r} is not a number") from None


def _choice(text: str) -> str | float:
    """A listed value: numbers stay numbers (`density=0.5,0.9`), anything else is a name."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return text


def parse_param(spec: str) -> Param:
    """`beta=0:1` (float range), `beta=0:1@0.3` (with default), `layers=0:6:int`, `map=lstsq,procrustes`."""
    name, eq, rest = spec.partition("=")
    if not eq or not name.strip() or not rest:
        raise VadasmError(f"--param {spec!r}: write NAME=LOW:HIGH[@DEFAULT] or NAME=CHOICE1,CHOICE2[@DEFAULT]")
    name = name.strip()
    body, at, default_text = rest.partition("@")
    if ":" in body:
        parts = body.split(":")
        kind = "int" if parts[-1] == "int" else "float"
        if kind == "int":
            parts = parts[:-1]
        if len(parts) != 2:
            raise VadasmError(f"--param {spec!r}: a range is LOW:HIGH (optionally LOW:HIGH:int)")
        low, high = (_number(p, spec) for p in parts)
        if high < low:
            raise VadasmError(f"--param {spec!r}: HIGH is below LOW")
        default = _number(default_text, spec) if at else (low + high) / 2
        if not low <= default <= high:
            raise VadasmError(f"--param {spec!r}: default {default} is outside [{low}, {high}]")
        return Param(name, low, high, kind, (), int(default) if kind == "int" else default)
    choices = tuple(_choice(c) for c in body.split(",") if c.strip())
    if len(choices) < 2:
        raise VadasmError(f"--param {spec!r}: give a range LOW:HIGH or at least two choices")
    default = _choice(default_text) if at else choices[0]
    if default not in choices:
        raise VadasmError(f"--param {spec!r}: default {default!r} is not one of the choices")
    return Param(name, kind="choice", choices=choices, default=default)


def space_from_specs(specs: list[str]) -> SearchSpace:
    params = tuple(parse_param(s) for s in specs)
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise VadasmError(f"--param names must be unique, got {names}")
    if not params:
        raise VadasmError("nothing to tune: give at least one --param NAME=LOW:HIGH")
    return SearchSpace(params)
