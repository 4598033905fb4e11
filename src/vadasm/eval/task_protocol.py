"""The one shape of an evaluation task, built-in (easyvqa, arith, perplexity) or public benchmark.

Every task declares the same fields, so `vadasm eval --tasks`, `vadasm tune` and the runners read
one registry (`eval/registry.py`) instead of asking two tables with different shapes. How a task
gets its items is part of its `kind` and `needs_data`:

- `generate`: items carry a question (and image); a reply is scored by `score(reply, item)`.
- `choice`: items carry continuations; `score_choice(loglikelihoods, item)` picks one (MMLU).
- `perplexity`: no items; `texts(split)` is the prose whose likelihood is measured.

Built-in tasks draw items with `items(split, limit, seed)`; tasks with `needs_data` (the public
benchmarks) parse rows of a user's `--data` file with `parse(row, image_cache)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# The question wordings a VQA task may be asked in (`--prompt-format`). `short-answer` is
# LLaVA-1.5's suffix for one-word answers, the wording of its VQAv2 evaluation.
PROMPT_FORMATS = {
    "bare": "{question}",
    "short-answer": "{question}\nAnswer the question using a single word or phrase.",
}


def format_question(prompt_format: str, question: str) -> str:
    """The text a model is asked: the question in one of `PROMPT_FORMATS`."""
    return PROMPT_FORMATS[prompt_format].format(question=question)


@dataclass(frozen=True)
class Item:
    """One question: prompt text, optional image, reference answers, group for per-type scores."""

    id: str
    text: str
    image: Path | None
    references: tuple[str, ...]
    group: str


class EvalTask(Protocol):
    """What every task declares (frozen dataclasses in `tasks.py` and `benchmarks/tasks.py`)."""

    name: str
    kind: str  # "generate", "choice" or "perplexity"
    vision: bool  # items may carry images: run image / blind / shuffled conditions
    metric: str
    max_new_tokens: int  # reply length (0 for tasks that generate nothing)
    samples: bool  # several replies per item with --samples (math benchmarks)
    needs_data: bool  # items come from --data TASK=SOURCE (public benchmarks)
    prompt_format: str  # the question wording in use; "" when the task has a fixed prompt
    prompt_formats: tuple[str, ...]  # the wordings --prompt-format may choose; () = fixed prompt
