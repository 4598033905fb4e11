"""Every evaluation task by name: the built-in tasks and the public benchmarks in one table.

`vadasm eval --tasks`, `vadasm tune` and both runners look tasks up here. All share the shape of
`task_protocol.EvalTask`; `needs_data` tells which runner draws a task's items (the harness for
built-in tasks, the benchmark runner for tasks read from --data).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

from vadasm.errors import VadasmError
from vadasm.eval.benchmarks.tasks import BENCHMARKS
from vadasm.eval.task_protocol import PROMPT_FORMATS, EvalTask
from vadasm.eval.tasks import BUILTIN_TASKS

TASKS: dict[str, EvalTask] = {**BUILTIN_TASKS, **BENCHMARKS}


def check_names(names: Sequence[str], known: Collection[str] = TASKS, what: str = "task(s)") -> None:
    """Refuse, in one line that lists the available ones, names not in `known` (by default every task)."""
    unknown = [t for t in names if t not in known]
    if unknown:
        raise VadasmError(f"unknown {what} {', '.join(unknown)}; available: {', '.join(known)}")


def split_tasks(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(built-in tasks, public benchmarks) of a task list, each in the order given."""
    check_names(names)
    return [t for t in names if not TASKS[t].needs_data], [t for t in names if TASKS[t].needs_data]


def prompt_format_tasks() -> list[str]:
    """The tasks whose question wording `--prompt-format` may choose."""
    return [name for name, task in TASKS.items() if task.prompt_formats]


def prompt_formats_for(names: Sequence[str], prompt_format: str | None) -> dict[str, str]:
    """The wording each task of a run uses: `prompt_format` where a task offers it, else its default.

    Only tasks that offer a choice appear (this is what a report records).
    """
    check_names(names)
    if prompt_format is not None and prompt_format not in PROMPT_FORMATS:
        raise VadasmError(f"--prompt-format {prompt_format!r}: choose one of {', '.join(PROMPT_FORMATS)}")
    return {t: prompt_format or TASKS[t].prompt_format for t in names if TASKS[t].prompt_formats}


def check_prompt_format(names: Sequence[str], prompt_format: str | None) -> None:
    """A chosen wording must be a known one and apply to at least one task of the run."""
    if prompt_format is not None and not prompt_formats_for(names, prompt_format):
        raise VadasmError(f"--prompt-format applies to {', '.join(prompt_format_tasks())}; "
                          f"none of {', '.join(names)} has a choice of wording")


def task_for(name: str, prompt_formats: dict[str, str] | None = None) -> EvalTask:
    """The registered task, asked in the wording `prompt_formats` gives it (if any)."""
    check_names([name])
    task = TASKS[name]
    chosen = (prompt_formats or {}).get(name)
    if chosen is None or chosen == task.prompt_format:
        return task
    return dataclasses.replace(task, prompt_format=chosen)  # type: ignore[type-var]
