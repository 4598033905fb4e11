"""`vadasm push`: upload a model folder with its card to the Hugging Face Hub."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from vadasm.cli.app import app
from vadasm.cli.common import AsJson, Quiet, emit


@app.command("push")
def push_command(
    model: Annotated[Path, typer.Argument(help="The model folder (must hold README.md: run `vadasm card` first).")],
    repo: Annotated[str, typer.Option(help="Hub repository, user/name or org/name (created if missing).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be uploaded; no network.")] = False,
    message: Annotated[str, typer.Option(help="Commit message on the Hub.")] = "Upload model made with vadasm",
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Create the Hub repository and upload the folder (weights, tokenizer, processor, card, provenance).

    The token is read from HF_TOKEN or the `hf auth login` cache. Refuses a folder without a card.

    Example: vadasm push ./smollm2-sees --repo me/smollm2-sees --private --dry-run
    """
    from vadasm.hub import push

    plan = push(model, repo, private=private, dry_run=dry_run, message=message)
    emit(asdict(plan), as_json, plan.lines(), quiet)
