"""Train a testbed stage in rounds until a validation criterion holds, within a step budget.

Why: the same recipe and seed learn at different speeds on different CPUs (after 2,000 tower steps one
machine named the shape on 97.7% of validation patches, another on 56.2%), so a fixed step count hands
on a half-trained model on some machines. Each stage instead measures itself on validation data every
few steps, stops as soon as its criterion holds, and fails loudly when its budget is spent first.

A round is one learning-rate schedule (warmup and decay over `round_steps`); the next round restarts
it from the current weights, so no schedule needs the total step count up front and the first round
is the fixed-step recipe the testbed used before.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from tqdm import tqdm

from vadasm.errors import VadasmError, one_line

if TYPE_CHECKING:
    from vadasm.testbed.build import BuildOptions


@dataclass(frozen=True)
class Criterion:
    """Every named validation value must reach its threshold; no threshold above 0 means disabled."""

    description: str
    thresholds: dict[str, float]

    @property
    def enabled(self) -> bool:
        return any(t > 0 for t in self.thresholds.values())

    def met(self, values: dict[str, float]) -> bool:
        return all(values[name] >= t for name, t in self.thresholds.items())


@dataclass(frozen=True)
class Budget:
    steps: int  # the most training steps the stage may take
    round_steps: int  # length of one learning-rate schedule
    eval_every: int  # validation checks this often (and at the end of every round)

    def __post_init__(self) -> None:
        if min(self.steps, self.round_steps, self.eval_every) < 1:
            raise VadasmError(f"a testbed step budget must be at least 1 step (got {self.steps}, "
                              f"round {self.round_steps}, check every {self.eval_every})")


@dataclass
class RoundsResult:
    """What a stage's training did: steps taken, whether the criterion held, the validation curve."""

    steps_used: int
    met: bool
    curve: list[dict[str, float]] = field(default_factory=list)  # {"step": s, value name: value, ...}
    final_loss: float | None = None

    def record(self, criterion: Criterion, budget: Budget) -> dict:
        """The JSON kept in `vadasm_testbed.json` (`vadasm testbed status` prints steps used of budget)."""
        return {
            "criterion": criterion.description if criterion.enabled else f"none ({criterion.description})",
            "thresholds": criterion.thresholds,
            "met": self.met,
            "steps_used": self.steps_used,
            "budget_steps": budget.steps,
            "round_steps": budget.round_steps,
            "eval_every": budget.eval_every,
            "val_curve": self.curve,
        }


def train_in_rounds(
    start_round: Callable[[int, int], None],
    step: Callable[[int], float],
    measure: Callable[[], dict[str, float]],
    criterion: Criterion,
    budget: Budget,
    desc: str,
) -> RoundsResult:
    """Call `start_round(index, length)` then `step(global_step)` (returning the loss) until `measure()`
    meets `criterion` or `budget.steps` are taken. A disabled criterion is never measured: the whole
    budget is trained and the result counts as met."""
    steps, round_index, losses = 0, 0, []
    curve: list[dict[str, float]] = []
    progress = tqdm(total=budget.steps, desc=desc, unit="step")
    try:
        while steps < budget.steps:
            length = min(budget.round_steps, budget.steps - steps)
            start_round(round_index, length)
            for i in range(length):
                losses.append(step(steps))
                steps += 1
                progress.update(1)
                if steps % 10 == 0:
                    progress.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
                if criterion.enabled and ((i + 1) % budget.eval_every == 0 or i + 1 == length):
                    values = {name: round(value, 4) for name, value in measure().items()}
                    curve.append({"step": steps, **values})
                    progress.write(f"{desc}: step {steps}: val " + ", ".join(
                        f"{k} {100 * v:.1f}%" for k, v in values.items() if k in criterion.thresholds), file=sys.stderr)
                    if criterion.met(values):
                        return RoundsResult(steps, True, curve, _mean_tail(losses))
            round_index += 1
    finally:
        progress.close()
    return RoundsResult(steps, not criterion.enabled, curve, _mean_tail(losses))


def timed_rounds(
    recipe: Any,
    start_round: Callable[[int, int], None],
    step: Callable[[int], float],
    measure: Callable[[], dict[str, float]],
    criterion: Criterion,
    desc: str,
) -> tuple[RoundsResult, Budget, float]:
    """`train_in_rounds` under the recipe's own budget (`steps`, `round_steps`, `eval_every`); also
    returns the budget and the start time, which `stage_record` needs."""
    budget = Budget(recipe.steps, recipe.round_steps, recipe.eval_every)
    start = time.time()
    return train_in_rounds(start_round, step, measure, criterion, budget, desc), budget, start


def stage_record(
    recipe: Any, start: float, seen: str, rounds: RoundsResult, criterion: Criterion, budget: Budget, **extra: Any
) -> dict:
    """What a round-trained stage returns: its recipe, seconds since `start`, examples seen (under the
    key `seen`), final loss, any `extra` entries, then the rounds with their criterion and budget."""
    return {
        "recipe": asdict(recipe),
        "train_seconds": round(time.time() - start, 1),
        seen: rounds.steps_used * recipe.batch_size,
        "final_loss": rounds.final_loss,
        **extra,
        "rounds": rounds,
        "criterion": criterion,
        "budget": budget,
    }


def _mean_tail(losses: list[float]) -> float | None:
    tail = losses[-20:]
    return round(sum(tail) / len(tail), 4) if tail else None


class CriterionNotMet(VadasmError):
    """A stage spent its step budget without meeting its validation criterion (nothing was written)."""


def require_met(stage: str, result: RoundsResult, criterion: Criterion, budget: Budget, flag: str) -> None:
    """Raise one clear line naming the stage, the criterion, the values reached and the budget."""
    if result.met:
        return
    last = result.curve[-1] if result.curve else {}
    reached = ", ".join(f"{k} {100 * v:.1f}%" for k, v in last.items() if k in criterion.thresholds)
    raise CriterionNotMet(one_line(
        f"testbed stage {stage} did not meet its criterion ({criterion.description}) within its budget of "
        f"{budget.steps} steps ({flag}): reached {reached or 'nothing measured'} at step {result.steps_used}; "
        f"nothing was written; rebuild with a larger {flag} or another --seed", limit=400))


Recipe = TypeVar("Recipe")


def fitted(recipe: Recipe, options: BuildOptions, budgets: tuple[str, ...], floors: tuple[str, ...]) -> Recipe:
    """`recipe` with the build's seed, each of its `budgets` fields (step counts, check intervals) capped
    at `options.opt_in_steps` when that is set, and each of its criterion `floors` 0 when criteria are off."""
    changes: dict[str, object] = {"seed": options.seed}
    if options.opt_in_steps is not None:
        changes |= {name: min(getattr(recipe, name), options.opt_in_steps) for name in budgets}
    if not options.criteria:
        changes |= {name: 0.0 for name in floors}
    return replace(recipe, **changes)
