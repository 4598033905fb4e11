"""Many models, many tasks, one table: harness tasks and benchmarks together, over GPUs or a Ray cluster.

`evaluate_all` splits the task list (one registry, `vadasm.eval.registry`) between the harness
(easyvqa, arith, perplexity) and the benchmarks, runs both on identical items and returns one
`EvalReport`; `evaluate_parts` is that split, shared with `vadasm tune`. With several GPUs the
models are dealt round-robin to one worker process per GPU (`CUDA_VISIBLE_DEVICES` set before CUDA
starts); with a Ray pool each model is one Ray task (see `vadasm.scale`). Items depend only on the
seed, so the merged table is the one a single process would give.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from functools import partial
from multiprocessing import get_context
from pathlib import Path

from vadasm.errors import VadasmError
from vadasm.eval.backend_types import Backend, Decoding
from vadasm.eval.backends import load_backend
from vadasm.eval.benchmarks.runner import run_benchmarks
from vadasm.eval.harness import EvalReport, Score, evaluate
from vadasm.eval.registry import check_prompt_format, split_tasks
from vadasm.io.figure import pyplot, save_plot
from vadasm.scale import RayPool


def model_folders(root: str | Path, pattern: str = "*") -> list[Path]:
    """Sub-folders of `root` holding a model (config.json), in natural order (alpha_0.2 before alpha_1.0)."""
    root = Path(root)
    if not root.is_dir():
        raise VadasmError(f"{root}: not a folder")
    found = [p for p in root.glob(pattern) if (p / "config.json").is_file()]
    if not found:
        raise VadasmError(f"{root}: no model folders matching {pattern!r} (folders with config.json)")
    return sorted(found, key=lambda p: _natural(p.name))


def _natural(name: str) -> list[tuple[int, float | str]]:
    """alpha_0.2 < alpha_1.0 < alpha_10.0: numbers compare as numbers, words as words."""
    return [(0, float(part)) if re.fullmatch(r"-?\d+(?:\.\d+)?", part) else (1, part)
            for part in re.split(r"_", name)]


def evaluate_all(models: Sequence[tuple[str, Path]], tasks: Sequence[str], split: str = "test",
                 limit: int | None = None, seed: int = 0, controls: bool = True, decoding: Decoding | None = None,
                 data: dict[str, str] | None = None, samples: int = 1, max_new_tokens: int | None = None,
                 backend: str = "transformers", device: str = "cpu", gpus: Sequence[str] | None = None,
                 keep_predictions: bool = False, progress: bool = True, pool: RayPool | None = None,
                 prompt_format: str | None = None) -> EvalReport:
    """One report for all models on all tasks (harness tasks and public benchmarks).

    With `pool`, each model is a Ray task and the pool's records say when and where each ran.
    `prompt_format` words the questions of the tasks that offer a choice (easyvqa, vqav2, okvqa).
    """
    split_tasks(tasks)  # unknown names fail here, before any worker starts
    check_prompt_format(tasks, prompt_format)
    if backend == "lm-eval" and data:
        raise VadasmError(f"--backend lm-eval reads its own task data from the Hub and cannot use --data "
                          f"({', '.join(sorted(data))}); drop --data, or use --backend transformers for local files")
    kwargs = dict(tasks=list(tasks), split=split, limit=limit, seed=seed, controls=controls,
                  decoding=decoding or Decoding(), data=dict(data or {}), samples=samples,
                  max_new_tokens=max_new_tokens, backend=backend, keep_predictions=keep_predictions,
                  prompt_format=prompt_format)
    if pool is not None:
        return _evaluate_on_ray(pool, list(models), device, kwargs, progress)
    if gpus and len(gpus) > 1 and len(models) > 1:
        groups = [list(models[k :: len(gpus)]) for k in range(len(gpus))]
        with ProcessPoolExecutor(len(gpus), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_on_gpu, gpu, group, device, kwargs)
                       for gpu, group in zip(gpus, groups) if group]
            parts = [f.result() for f in futures]
        return merge_reports(parts, [name for name, _ in models])
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[0]
    return _evaluate_here(list(models), device=device, progress=progress, **kwargs)


def _evaluate_on_ray(pool: RayPool, models: list[tuple[str, Path]], device: str, kwargs: dict,
                     progress: bool) -> EvalReport:
    """One Ray task per model, gathered as they finish, merged in the models' order."""
    from tqdm import tqdm

    with tqdm(total=len(models), desc=f"eval on Ray ({pool.slots} at once)", unit=" models",
              disable=not progress) as bar:
        parts = pool.map(_evaluate_one, [(f"model {name} ({path})", ([(name, path)], device, kwargs))
                                         for name, path in models], on_done=lambda label, report: bar.update(1))
    return merge_reports(parts, [name for name, _ in models])


def _evaluate_one(models: list[tuple[str, Path]], device: str, kwargs: dict) -> EvalReport:
    return _evaluate_here(models, device=device, progress=False, **kwargs)


def _on_gpu(gpu: str, models: list[tuple[str, Path]], device: str, kwargs: dict) -> EvalReport:
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before this process touches CUDA
    return _evaluate_here(models, device=device, progress=False, **kwargs)


def _evaluate_here(models, tasks, split, limit, seed, controls, decoding, data, samples, max_new_tokens, backend,
                   keep_predictions, device, progress, prompt_format=None) -> EvalReport:
    harness, bench = split_tasks(tasks)
    if backend == "lm-eval":
        if harness:
            raise VadasmError(f"--backend lm-eval runs public text benchmarks only, not {', '.join(harness)}")
        from vadasm.eval.benchmarks.lm_eval_bridge import run_lm_eval

        report = EvalReport([n for n, _ in models], list(tasks), split, limit, seed, asdict(decoding), {})
        for name, path in models:
            report.scores += run_lm_eval(name, path, bench, limit, device, decoding.batch_size)
        return report
    loaders = [(name, partial(load_backend, path, backend, device)) for name, path in models]
    reports = evaluate_parts(loaders, tasks, data, split=split, limit=limit, seed=seed, controls=controls,
                             decoding=decoding, samples=samples, max_new_tokens=max_new_tokens,
                             keep_predictions=keep_predictions, progress=progress, prompt_format=prompt_format)
    if len(reports) == 1:
        return reports[0]
    combined = merge_reports(reports, [n for n, _ in models])
    combined.tasks = list(tasks)
    return combined


def evaluate_parts(loaders: Sequence[tuple[str, Callable[[], Backend]]], tasks: Sequence[str],
                   data: dict[str, str], split: str, limit: int | None, seed: int, controls: bool,
                   decoding: Decoding, samples: int = 1, max_new_tokens: int | None = None,
                   keep_predictions: bool = False, progress: bool = True,
                   prompt_format: str | None = None) -> list[EvalReport]:
    """The built-in tasks through the harness, then the benchmarks through their runner: one report
    for each part that has tasks (the one task split `vadasm eval` and `vadasm tune` share)."""
    harness, bench = split_tasks(tasks)
    reports = []
    if harness:
        reports.append(evaluate(loaders, harness, split=split, limit=limit, seed=seed, controls=controls,
                                decoding=decoding, keep_predictions=keep_predictions, progress=progress,
                                prompt_format=prompt_format))
    if bench:
        reports.append(run_benchmarks(loaders, bench, data, split=split, limit=limit, seed=seed, controls=controls,
                                      decoding=decoding, samples=samples, max_new_tokens=max_new_tokens,
                                      keep_predictions=keep_predictions, progress=progress,
                                      prompt_format=prompt_format))
    return reports


def merge_reports(parts: Sequence[EvalReport], order: Sequence[str]) -> EvalReport:
    """One report from reports on disjoint models or disjoint tasks (same split, seed and items)."""
    first = parts[0]
    for part in parts[1:]:
        if (part.split, part.seed, part.limit) != (first.split, first.seed, first.limit):
            raise VadasmError("cannot merge reports of different splits, seeds or limits")
        for task, ids in part.item_ids.items():
            if first.item_ids.get(task, ids) != ids:
                raise VadasmError(f"cannot merge reports: task {task} was run on different items")
    tasks = list(dict.fromkeys(t for p in parts for t in p.tasks))
    item_ids = {t: ids for p in parts for t, ids in p.item_ids.items()}
    rank = {name: k for k, name in enumerate(order)}
    scores: list[Score] = sorted((s for p in parts for s in p.scores),
                                 key=lambda s: (tasks.index(s.task), rank.get(s.model, len(rank))))
    decoding = {k: v for p in parts for k, v in p.decoding.items()}
    formats = {t: f for p in parts for t, f in p.prompt_formats.items()}
    return EvalReport(list(order), tasks, first.split, first.limit, first.seed, decoding, item_ids, scores,
                      round(sum(p.seconds for p in parts), 1), formats)


def main_value(scores: Sequence[Score], model: str, task: str) -> float | None:
    """A model's headline score on a task: with image if it sees, else blind, else text."""
    by_condition = {s.condition: s.value for s in scores if s.model == model and s.task == task}
    return next((by_condition[c] for c in ("image", "text", "blind") if c in by_condition), None)


def plot_report(report: EvalReport, path: Path) -> Path:
    """Headline score per model and task; a line over alpha when the models are `alpha_*` folders."""
    plt = pyplot()
    alphas = [re.fullmatch(r"alpha_(-?\d+(?:\.\d+)?)", m) for m in report.models]
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, task in enumerate(report.tasks):
        values = [main_value(report.scores, m, task) for m in report.models]
        metric = next((s.metric for s in report.scores if s.task == task), "")
        label = f"{task} ({metric})"
        if all(alphas):
            ax.plot([float(a.group(1)) for a in alphas], values, marker="o", label=label)
        else:
            width = 0.8 / max(len(report.tasks), 1)
            xs = [i + k * width for i in range(len(report.models))]
            ax.bar(xs, [v if v is not None else 0 for v in values], width, label=label)
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(report.models))], report.models, rotation=30)
        blind = [next((s.value for s in report.scores if (s.model, s.task, s.condition) == (m, task, "blind")),
                      None) for m in report.models]
        if all(alphas) and any(b is not None for b in blind) and any(
                s.condition == "image" for s in report.scores if s.task == task):
            ax.plot([float(a.group(1)) for a in alphas], blind, linestyle="--", label=f"{task} blind control")
    return save_plot(fig, ax, path, xlabel="alpha" if all(alphas) else "model", ylabel="score",
                     title=f"{report.split} split")
