"""The built-in evaluation tasks: which items to ask, how to score a reply.

A generative task turns a split into `Item`s (question, optional image, references, group for
per-type breakdowns) and scores one reply. Items are drawn once per run and shared by every model
and every control, so a comparison is always on identical questions. Every task has the shape of
`task_protocol.EvalTask`; `registry.TASKS` lists these beside the public benchmarks.
"""

from __future__ import annotations

import importlib
import inspect
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vadasm.errors import VadasmError
from vadasm.eval import arith, easyvqa
from vadasm.eval.metrics import numeric_match, vqa_accuracy
from vadasm.eval.task_protocol import PROMPT_FORMATS, Item, format_question

__all__ = ["BUILTIN_TASKS", "GENERATIVE_TASKS", "ArithTask", "EasyVqaTask", "Item", "PerplexityTask",
           "derange_images", "first_line", "perplexity_texts"]

def first_line(reply: str) -> str:
    """Short-answer tasks score the first non-empty line (base models keep talking after it)."""
    for line in reply.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


@dataclass(frozen=True)
class EasyVqaTask:
    name: str = "easyvqa"
    vision: bool = True
    metric: str = "vqa_accuracy"
    max_new_tokens: int = 5
    groups: tuple[str, ...] = easyvqa.QUESTION_TYPES
    kind: str = "generate"
    samples: bool = False
    needs_data: bool = False
    prompt_format: str = "bare"  # the question as easy-vqa words it
    prompt_formats: tuple[str, ...] = tuple(PROMPT_FORMATS)

    def items(self, split: str, limit: int | None, seed: int) -> list[Item]:
        pool = list(easyvqa.load_split(split))
        if limit is not None and limit < len(pool):
            pool = random.Random(f"easyvqa-{split}-{seed}").sample(pool, limit)
        return [Item(q.qid, format_question(self.prompt_format, q.question), q.image_path, q.answers, q.qtype)
                for q in pool]

    def score(self, reply: str, item: Item) -> float:
        return vqa_accuracy(first_line(reply), item.references)


@dataclass(frozen=True)
class ArithTask:
    name: str = "arith"
    vision: bool = False
    metric: str = "accuracy"
    max_new_tokens: int = 12
    groups: tuple[str, ...] = ("add", "sub", "mul", "add3")
    default_size: int = 500
    kind: str = "generate"
    samples: bool = False
    needs_data: bool = False
    prompt_format: str = ""  # fixed prompt: "What is ...? Answer with the number only."
    prompt_formats: tuple[str, ...] = ()

    def items(self, split: str, limit: int | None, seed: int) -> list[Item]:
        try:
            drawn = arith.problems(split, limit or self.default_size, seed)
        except ValueError as err:
            raise VadasmError(f"arith task: {err}") from err
        return [Item(f"{split}-{p.expression}", p.question, None, (str(p.answer),), p.kind) for p in drawn]

    def score(self, reply: str, item: Item) -> float:
        return float(numeric_match(first_line(reply), item.references[0]))


# The held-out prose for perplexity: docstrings of stable standard-library modules. They ship with
# every Python, no testbed model is fitted on them, and val/test use different modules.
PERPLEXITY_MODULES = {
    "val": ("json", "argparse", "textwrap", "fractions", "csv", "heapq"),
    "test": ("collections", "functools", "pathlib", "decimal", "statistics", "difflib", "shlex", "queue"),
}


def perplexity_texts(split: str) -> list[str]:
    if split == "train":
        raise VadasmError("the perplexity task has no train split (it is never fitted on)")
    texts = []
    for name in PERPLEXITY_MODULES[split]:
        doc = inspect.getdoc(importlib.import_module(name)) or ""
        paragraphs = [p.strip() for p in doc.split("\n\n") if len(p.split()) >= 8]
        texts.extend(paragraphs)
    return texts


@dataclass(frozen=True)
class PerplexityTask:
    """Perplexity on held-out standard-library prose: no items, no replies, lower is better."""

    name: str = "perplexity"
    vision: bool = False
    metric: str = "perplexity"
    max_new_tokens: int = 0
    kind: str = "perplexity"
    samples: bool = False
    needs_data: bool = False
    prompt_format: str = ""
    prompt_formats: tuple[str, ...] = ()

    def texts(self, split: str) -> list[str]:
        return perplexity_texts(split)


BUILTIN_TASKS = {"easyvqa": EasyVqaTask(), "arith": ArithTask(), "perplexity": PerplexityTask()}
# The tasks with question items (graft calibration draws its prompts from these).
GENERATIVE_TASKS = {name: task for name, task in BUILTIN_TASKS.items() if task.kind == "generate"}


def derange_images(items: Sequence[Item], seed: int) -> list[Path | None]:
    """Images shuffled across items so that no item keeps a picture of its own image."""
    images = [item.image for item in items]
    if len(set(images)) < 2:
        raise VadasmError("the shuffled-image control needs at least two different images")
    order = list(range(len(items)))
    random.Random(f"shuffle-{seed}").shuffle(order)
    for i in range(len(order)):
        if images[order[i]] != images[i]:
            continue
        # Swap with a position j such that both i and j end up with a foreign image.
        partner = next(
            (j for j in range(len(order)) if images[order[j]] != images[i] and images[order[i]] != images[j]),
            None,
        )
        if partner is None:
            raise VadasmError("cannot shuffle images: one image dominates the items")
        order[i], order[partner] = order[partner], order[i]
    return [images[k] for k in order]
