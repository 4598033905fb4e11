"""Objectives with known optima for the tuning tests (module-level so worker processes can load them)."""

from __future__ import annotations

from dataclasses import dataclass

from vadasm.tune.objective import Evaluation


@dataclass
class Quadratic:
    """Validation optimum at beta=0.3, density=0.7 (value 1.0); the test split's optimum is elsewhere,
    so a run that peeked at test would pick different parameters. The recipient scores `recipient`."""

    recipient: float = 0.5
    scale: float = 1.0

    def __call__(self, params, split, controls=False):
        if params is None:
            value = self.recipient
        else:
            b, d = params["beta"], params["density"]
            target = (0.3, 0.7) if split == "val" else (0.9, 0.1)
            value = 1.0 - self.scale * ((b - target[0]) ** 2 + (d - target[1]) ** 2)
        scores = {"arith/text": value}
        if controls:
            scores["easyvqa/image"], scores["easyvqa/blind"] = 0.8, 0.6
        return Evaluation(value, scores, 0.0)
