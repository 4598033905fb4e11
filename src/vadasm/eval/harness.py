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

from vadasm.eval.backend_types import Backend, Decoding, Request
from vadasm.eval.registry import TASKS, check_names, prompt_formats_for, task_for
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


def score_replies(task, items: Sequence[Item], replies: Sequence[str]) -> tuple[float, dict]:
    """The mean score of one reply per item, and per group (harness tasks and benchmarks alike)."""
    values = [task.score(reply, item) for item, reply in zip(items, replies)]
    return sum(values) / len(values), grouped_means(items, values)


def grouped_means(items: Sequence, values: Sequence[float]) -> dict[str, dict[str, float]]:
    """{group: {"value": mean, "n": count}} over the items' groups, sorted by group."""
    per_group: dict[str, list[float]] = defaultdict(list)
    for item, value in zip(items, values):
        per_group[item.group].append(value)
    return {g: {"value": sum(v) / len(v), "n": len(v)} for g, v in sorted(per_group.items())}


def conditions_for(task, backend: Backend, controls: bool) -> list[str]:
    """Text tasks run as text; a vision task runs every control, or only blind for a model that cannot see."""
    if not task.vision:
        return ["text"]
    if not backend.sees_images:
        return ["blind"]
    return list(CONDITIONS) if controls else ["image"]


def condition_requests(items: Sequence[Item], condition: str, seed: int) -> list[Request]:
    """The prompts of one condition: the item's own image, none (text, blind) or another item's image."""
    if condition == "image":
        return [Request(item.text, item.image) for item in items]
    if condition in ("text", "blind"):
        return [Request(item.text) for item in items]
    if condition == "shuffled":
        return [Request(item.text, image) for item, image in zip(items, derange_images(items, seed))]
    raise ValueError(condition)


def score_models(report: EvalReport, backends: Sequence[tuple[str, Callable[[], Backend]]], tasks: Sequence[str],
                 score_task: Callable[[str, Backend, str], list[Score]]) -> EvalReport:
    """Load each model in turn (one in memory at a time), add its scores on every task, time the whole run."""
    start = time.time()
    for name, load in backends:
        backend = load()
        for task_name in tasks:
            report.scores.extend(score_task(name, backend, task_name))
        del backend
    report.seconds = round(time.time() - start, 1)
    return report


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
    check_names(tasks, TASK_NAMES)
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

    def score_task(name: str, backend: Backend, task_name: str) -> list[Score]:
        task = chosen[task_name]
        if task.kind == "perplexity":
            nll, count = backend.negative_log_likelihood(task.texts(split), perplexity_max_tokens)
            return [Score(name, task_name, "text", task.metric, math.exp(nll / count), count)]
        task_decoding = Decoding(**{**asdict(decoding), "max_new_tokens": task.max_new_tokens})
        scores = []
        for condition in conditions_for(task, backend, controls):
            replies = backend.generate(condition_requests(items[task_name], condition, seed), task_decoding,
                                       desc=f"{name} {task_name} {condition}", progress=progress)
            value, groups = score_replies(task, items[task_name], replies)
            scores.append(Score(name, task_name, condition, task.metric, value, len(replies), groups,
                                list(replies) if keep_predictions else None))
        return scores

    return score_models(report, backends, tasks, score_task)
