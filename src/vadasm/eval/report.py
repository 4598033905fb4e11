"""Plain-text and Markdown tables of an `EvalReport` (the CLI prints these; the README shows them)."""

from __future__ import annotations

from vadasm.eval.harness import EvalReport
from vadasm.eval.registry import TASKS


def _cell(value: float, metric: str) -> str:
    return f"{value:.2f}" if metric == "perplexity" else f"{100 * value:.1f}"


def table_rows(report: EvalReport, task: str) -> tuple[list[str], list[list[str]]]:
    scores = [s for s in report.scores if s.task == task]
    groups = sorted({g for s in scores for g in s.groups})
    header = ["model", "condition", "n", scores[0].metric if scores else "score", *groups]
    rows = []
    for s in scores:
        rows.append(
            [s.model, s.condition, str(s.n), _cell(s.value, s.metric)]
            + [_cell(s.groups[g]["value"], s.metric) if g in s.groups else "-" for g in groups]
        )
    return header, rows


def _title(report: EvalReport, task: str) -> str:
    """The split, and the question wording when it is not the task's default (--prompt-format)."""
    wording = report.prompt_formats.get(task)
    shown = wording is not None and task in TASKS and wording != TASKS[task].prompt_format
    return f"{report.split} split" + (f", {wording} prompt" if shown else "")


def format_table(report: EvalReport, markdown: bool = False) -> str:
    """One table per task; accuracies in percent, perplexity as is."""
    blocks = []
    for task in report.tasks:
        header, rows = table_rows(report, task)
        if markdown:
            lines = [f"**{task}** ({_title(report, task)})", "", "| " + " | ".join(header) + " |"]
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        else:
            widths = [max(len(x) for x in col) for col in zip(header, *rows)]
            fmt = "  ".join(f"{{:<{w}}}" for w in widths)
            lines = [f"{task} ({_title(report, task)})", fmt.format(*header)]
            lines += [fmt.format(*r) for r in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
