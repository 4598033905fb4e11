"""`vadasm card`: write a model's README.md from its recorded measurements."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vadasm.cli.app import app
from vadasm.cli.common import AsJson, Force, Quiet, emit


@app.command("card")
def card_command(
    model: Annotated[Path, typer.Argument(help="A model folder made by vadasm (has vadasm_config.json).")],
    eval_: Annotated[list[Path] | None, typer.Option(
        "--eval", help="A `vadasm eval --json` results file whose tables go in the card. Repeatable.")] = None,
    repo: Annotated[str | None, typer.Option(
        help="Hub id used in the loading code and title (default: the local folder).")] = None,
    stdout: Annotated[bool, typer.Option("--stdout", help="Print the card instead of writing README.md.")] = False,
    force: Force = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Write MODEL/README.md: inputs, recipe, pair class, measured tables with controls, the validation
    gate, hardware/time, loading code and limits. Every number comes from vadasm_config.json or --eval.

    Example: vadasm card ./smollm2-sees --eval results.json --repo me/smollm2-sees
    """
    from vadasm.card import render_card, write_card
    from vadasm.card.render import gate_of, read_config

    if stdout:
        typer.echo(render_card(model, list(eval_ or []), repo), nl=False)
        return
    path = write_card(model, list(eval_ or []), repo, force)
    gate = gate_of(read_config(model))
    lines = [f"wrote {path}"] + ([gate.line()] if gate else [])
    emit({"card": str(path), "gate": gate.to_dict() if gate else None}, as_json, lines, quiet)
