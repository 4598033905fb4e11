"""Run tasks on models with controls, on identical items, and collect the scores.

Vision tasks run three conditions by default: `image` (the real question), `blind` (no image: what
the wording alone gives) and `shuffled` (another item's image: what any picture gives). A text-only
model in a comparison gets the `blind` condition only. Results are plain dataclasses; formatting
lives in `report.py` and the CLI.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from vadasm.errors import VadasmError
from vadasm.eval.backend_types import Backend, Decoding, Request
from vadasm.eval.registry import TASKS, prompt_formats_for, task_for
from vadasm.eval.tasks import Item, derange_images

TASK_NAMES = tuple(name for name, task in TASKS.items() if not task.needs_data)  # what `evaluate` runs
CONDITIONS = ("image", "blind", "shuffled")


@dataclass
class Score:
    model: str
    task: str
    condition: str
    metric: str
    value: float
    n: int
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    predictions: list[str] | None = None


@dataclass
class EvalReport:
    models: list[str]
    tasks: list[str]
    split: str
    limit: int | None
    seed: int
    decoding: dict
    item_ids: dict[str, list[str]]
    scores: list[Score] = field(default_factory=list)
    seconds: float = 0.0
    prompt_formats: dict[str, str] = field(default_factory=dict)  # task -> question wording used

    def get(self, model: str, task: str, condition: str) -> Score | None:
        return next(
            (s for s in self.scores if (s.model, s.task, s.condition) == (model, task, condition)),
            None,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _aggregate(task, items: Sequence[Item], replies: Sequence[str]) -> tuple[float, dict]:
    per_group: dict[str, list[float]] = defaultdict(list)
    values = []
    for item, reply in zip(items, replies):
        value = task.score(reply, item)
        values.append(value)
        per_group[item.group].append(value)
    groups = {g: {"value": sum(v) / len(v), "n": len(v)} for g, v in sorted(per_group.items())}
    return sum(values) / len(values), groups


def _requests(items: Sequence[Item], condition: str, seed: int) -> list[Request]:
    if condition == "image":
        return [Request(item.text, item.image) for item in items]
    if condition == "blind":
        return [Request(item.text, None) for item in items]
    if condition == "shuffled":
        return [Request(item.text, image) for item, image in zip(items, derange_images(items, seed))]
    raise ValueError(condition)


def evaluate(
    backends: Sequence[tuple[str, Callable[[], Backend]]],
    tasks: Sequence[str],
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    controls: bool = True,
    decoding: Decoding | None = None,
    keep_predictions: bool = False,
    perplexity_max_tokens: int = 512,
    progress: bool = True,
    prompt_format: str | None = None,
) -> EvalReport:
    """Score every model (loaded one at a time, in order) on the same items of every task.

    `prompt_format` words the question of every task that offers a choice (default: its own).
    """
    unknown = [t for t in tasks if t not in TASK_NAMES]
    if unknown:
        raise VadasmError(f"unknown task(s) {', '.join(unknown)}; available: {', '.join(TASK_NAMES)}")
    decoding = decoding or Decoding()
    formats = prompt_formats_for(tasks, prompt_format)
    chosen = {t: task_for(t, formats) for t in tasks}
    items = {t: task.items(split, limit, seed) for t, task in chosen.items() if task.kind == "generate"}
    report = EvalReport(
        models=[name for name, _ in backends],
        tasks=list(tasks),
        split=split,
        limit=limit,
        seed=seed,
        decoding=asdict(decoding),
        item_ids={t: [item.id for item in its] for t, its in items.items()},
        prompt_formats=formats,
    )
    start = time.time()
    for name, load in backends:
        backend = load()
        for task_name in tasks:
            task = chosen[task_name]
            if task.kind == "perplexity":
                nll, count = backend.negative_log_likelihood(task.texts(split), perplexity_max_tokens)
                report.scores.append(Score(name, task_name, "text", task.metric, math.exp(nll / count), count))
                continue
            if not task.vision:
                conditions = ["text"]
            elif not backend.sees_images:
                conditions = ["blind"]
            else:
                conditions = list(CONDITIONS) if controls else ["image"]
            task_decoding = Decoding(**{**asdict(decoding), "max_new_tokens": task.max_new_tokens})
            for condition in conditions:
                requests = (
                    [Request(item.text) for item in items[task_name]]
                    if condition == "text"
                    else _requests(items[task_name], condition, seed)
                )
                replies = backend.generate(
                    requests, task_decoding, desc=f"{name} {task_name} {condition}", progress=progress
                )
                value, groups = _aggregate(task, items[task_name], replies)
                report.scores.append(
                    Score(
                        name, task_name, condition, task.metric, value, len(replies), groups,
                        list(replies) if keep_predictions else None,
                    )
                )
        del backend
    report.seconds = round(time.time() - start, 1)
    return report
