"""`vadasm methods`: the registered merge methods and their parameters, straight from the registry."""

from __future__ import annotations

from typing import Annotated

import typer

from vadasm.cli.app import app
from vadasm.cli.common import AsJson, emit
from vadasm.methods import METHODS, get_method, method_names


@app.command("methods")
def methods(
    name: Annotated[str | None, typer.Argument(help="One method: show its parameters in full.")] = None,
    as_json: AsJson = False,
) -> None:
    """List the merge methods a recipe's `merge_method` (or `merge --method`) accepts, with their
    parameters: type, accepted range, default, and whether each is set per model or for the merge.

    Example: vadasm methods ties
    """
    chosen = [get_method(name)] if name else [METHODS[n] for n in method_names()]
    payload = {m.name: {"summary": m.summary, "needs_base": m.needs_base, "needs_data": m.needs_data,
                        "reference": m.reference,
                        "parameters": {p.name: {"default": p.default, "per_model": p.per_model,
                                                "type": p.kind.__name__, "low": p.low, "high": p.high,
                                                "choices": p.choices, "help": p.help} for p in m.params}}
               for m in chosen}
    lines = []
    for m in chosen:
        needs = ", ".join(w for w, flag in (("base model", m.needs_base), ("calibration data", m.needs_data)) if flag)
        lines.append(f"{m.name}: {m.summary or '(no summary)'}{f' [needs {needs}]' if needs else ''}")
        if name or len(chosen) == 1:
            lines += [f"  {p.describe()}" for p in m.params]
            lines += [f"  reference: {m.reference}"] if m.reference else []
    emit(payload, as_json, lines)
