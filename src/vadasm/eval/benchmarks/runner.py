"""Run public benchmarks on models, with the same controls and result format as the harness.

Items are drawn once and shared by every model. Vision benchmarks run image / blind / shuffled
conditions (a text-only model: blind only); math benchmarks draw n samples per problem and report
pass@1 (mean fraction of correct samples), pass@n, the fraction of replies with a boxed answer, and
the mean score with the +1 / -1 reward convention of math RL graders.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vadasm.errors import VadasmError
from vadasm.eval.backend_types import Backend, Decoding
from vadasm.eval.benchmarks.data import load_rows
from vadasm.eval.benchmarks.loglik import backend_loglikelihoods
from vadasm.eval.benchmarks.math_answers import equivalence_backend, last_boxed
from vadasm.eval.benchmarks.tasks import BENCHMARKS, HUB_SOURCES
from vadasm.eval.harness import (
    EvalReport,
    Score,
    condition_requests,
    conditions_for,
    grouped_means,
    score_models,
    score_replies,
)
from vadasm.eval.registry import check_names, prompt_formats_for, task_for
from vadasm.eval.task_protocol import EvalTask


@dataclass
class BenchScore(Score):
    """A harness `Score` plus the secondary numbers of a benchmark (pass@n, boxed rate ...)."""

    extra: dict[str, float | str] = field(default_factory=dict)


def report_from_dict(data: dict) -> EvalReport:
    """An `EvalReport` back from its JSON (harness and benchmark scores alike)."""
    scores = [BenchScore(**s) if "extra" in s else Score(**s) for s in data["scores"]]
    fields = ("models", "tasks", "split", "limit", "seed", "decoding", "item_ids")
    return EvalReport(**{k: data[k] for k in fields}, scores=scores, seconds=data.get("seconds", 0.0),
                      prompt_formats=data.get("prompt_formats", {}))


def load_items(task_name: str, source: str, split: str, limit: int | None, seed: int, image_cache: Path,
               task: EvalTask | None = None) -> list:
    """Parse every row (so a malformed row fails before any model runs), then draw `limit` of them.

    `task` is the benchmark in the wording chosen for this run (default: the registered one).
    """
    task = task or BENCHMARKS[task_name]
    items = [task.parse(row, image_cache) for row in load_rows(source, split)]
    if not items:
        raise VadasmError(f"{source}: no rows")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise VadasmError(f"{source}: item id {duplicate!r} occurs twice")
    if limit is not None and limit < len(items):
        items = random.Random(f"{task_name}-{split}-{seed}").sample(items, limit)
    return items


def require_sources(tasks: Sequence[str], data: dict[str, str]) -> None:
    missing = [t for t in tasks if t not in data]
    if missing:
        hints = ", ".join(f"--data {t}=FILE.jsonl (or {HUB_SOURCES[t]} from the Hub)" for t in missing)
        raise VadasmError(f"no data for {', '.join(missing)}: give {hints}")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def score_math(task, items: Sequence, replies: Sequence[str], samples: int) -> tuple[float, dict, dict]:
    """pass@1, per-group pass@1 and the secondary numbers from `samples` replies per item (item-major)."""
    per_item, any_correct, boxed = [], [], 0
    for k, item in enumerate(items):
        mine = replies[k * samples : (k + 1) * samples]
        correct = [task.score(r, item) for r in mine]
        boxed += sum(last_boxed(r) is not None for r in mine)
        per_item.append(_mean(correct))
        any_correct.append(float(max(correct)))
    pass1 = _mean(per_item)
    extra = {
        f"pass@{samples}": _mean(any_correct),
        "mean_score": 2 * pass1 - 1,
        "boxed_rate": boxed / len(replies),
        "samples": samples,
        "equivalence": equivalence_backend(),
    }
    return pass1, grouped_means(items, per_item), extra


def run_benchmarks(
    backends: Sequence[tuple[str, Callable[[], Backend]]],
    tasks: Sequence[str],
    data: dict[str, str],
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    controls: bool = True,
    decoding: Decoding | None = None,
    samples: int = 1,
    max_new_tokens: int | None = None,
    keep_predictions: bool = False,
    progress: bool = True,
    image_cache: Path | None = None,
    prompt_format: str | None = None,
) -> EvalReport:
    """Score every model on the same items of every benchmark; same `EvalReport` as the harness.

    `prompt_format` words the question of every benchmark that offers a choice (default: its own).
    """
    check_names(tasks, BENCHMARKS, "benchmark(s)")
    require_sources(tasks, data)
    if samples < 1:
        raise VadasmError("--samples must be at least 1")
    decoding = decoding or Decoding()
    if samples > 1 and not decoding.do_sample:
        raise VadasmError("several samples per problem need sampling: add --sample (greedy replies are identical)")
    if image_cache is None:
        from vadasm.paths import vadasm_home

        image_cache = vadasm_home() / "benchmark-images"
    formats = prompt_formats_for(tasks, prompt_format)
    chosen = {t: task_for(t, formats) for t in tasks}
    items = {t: load_items(t, data[t], split, limit, seed, image_cache, chosen[t]) for t in tasks}
    report = EvalReport(
        models=[name for name, _ in backends], tasks=list(tasks), split=split, limit=limit, seed=seed,
        decoding=asdict(decoding) | {"samples": samples}, item_ids={t: [i.id for i in its] for t, its in items.items()},
        prompt_formats=formats,
    )
    return score_models(report, backends, tasks, lambda name, backend, task_name: _run_task(
        name, backend, chosen[task_name], items[task_name], seed, controls, decoding, samples, max_new_tokens,
        keep_predictions, progress))


def _run_task(name, backend, task, items, seed, controls, decoding, samples, max_new_tokens,
              keep_predictions, progress) -> list[BenchScore]:
    task_name = task.name
    if task.kind == "choice":
        pairs = [(item.context, c) for item in items for c in item.continuations]
        flat = backend_loglikelihoods(backend, pairs)
        values, at = [], 0
        for item in items:
            values.append(task.score_choice(flat[at : at + len(item.continuations)], item))
            at += len(item.continuations)
        return [BenchScore(name, task_name, "text", task.metric, _mean(values), len(items),
                           grouped_means(items, values))]
    task_decoding = Decoding(**{**asdict(decoding), "max_new_tokens": max_new_tokens or task.max_new_tokens})
    scores = []
    for condition in conditions_for(task, backend, controls):
        base = condition_requests(items, condition, seed)
        n = samples if task.samples else 1
        requests = [r for r in base for _ in range(n)]
        replies = backend.generate(requests, task_decoding, desc=f"{name} {task_name} {condition}", progress=progress)
        if task.samples:
            value, groups, extra = score_math(task, items, replies, n)
        else:
            (value, groups), extra = score_replies(task, items, replies), {}
        scores.append(BenchScore(name, task_name, condition, task.metric, value, len(items), groups,
                                 list(replies) if keep_predictions else None, extra))
    return scores
