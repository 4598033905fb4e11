"""Generated arithmetic problems with splits that can never overlap.

A problem's split is decided by a hash of its expression, not by the order it was drawn in, so the
recipient's training problems, the tuning (validation) problems and the reported (test) problems
are disjoint by construction, whatever seeds or sizes anyone asks for.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

SPLIT_BUCKETS = {"train": range(0, 8), "val": range(8, 9), "test": range(9, 10)}
PROMPT = "What is {expression}? Answer with the number only."


@dataclass(frozen=True)
class ArithProblem:
    expression: str
    answer: int
    kind: str

    @property
    def question(self) -> str:
        return PROMPT.format(expression=self.expression)


def split_of(expression: str) -> str:
    bucket = int(hashlib.sha256(expression.encode()).hexdigest(), 16) % 10
    return next(name for name, buckets in SPLIT_BUCKETS.items() if bucket in buckets)


def _draw(rng: random.Random) -> ArithProblem:
    kind = rng.choice(("add", "sub", "mul", "add3"))
    if kind == "add":
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        return ArithProblem(f"{a} + {b}", a + b, kind)
    if kind == "sub":
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        return ArithProblem(f"{a} - {b}", a - b, kind)
    if kind == "mul":
        a, b = rng.randint(2, 19), rng.randint(2, 9)
        return ArithProblem(f"{a} * {b}", a * b, kind)
    a, b, c = rng.randint(0, 50), rng.randint(0, 50), rng.randint(0, 50)
    return ArithProblem(f"{a} + {b} + {c}", a + b + c, kind)


def problems(split: str, n: int, seed: int = 0) -> list[ArithProblem]:
    """`n` distinct problems of `split`, the same list for the same (split, n, seed)."""
    if split not in SPLIT_BUCKETS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_BUCKETS)}")
    rng = random.Random(f"vadasm-arith-{seed}")
    seen: set[str] = set()
    out: list[ArithProblem] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise ValueError(f"cannot draw {n} distinct {split} problems")
        problem = _draw(rng)
        if problem.expression in seen or split_of(problem.expression) != split:
            continue
        seen.add(problem.expression)
        out.append(problem)
    return out
