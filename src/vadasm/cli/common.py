"""Small helpers shared by subcommands: output formatting and common options."""

from __future__ import annotations

import json
from typing import Annotated

import typer

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or chatter; errors still go to stderr.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object with the results (for scripts).")]
Force = Annotated[bool, typer.Option("--force", help=(
    "Replace the output folder if it exists: only an earlier vadasm output (it holds vadasm_config.json "
    "or another vadasm summary) or an empty folder, never a file, another folder or an input; the old "
    "one is deleted only once the new one is in place."))]
AllowPickle = Annotated[bool, typer.Option(
    "--allow-pickle", help="Accept .bin/.pt pickle weights (they can run code when loaded; only for trusted files).")]
TrustRemoteCode = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Accept models whose config needs custom code (auto_map).")]
Device = Annotated[str, typer.Option(help="Where the arithmetic runs: cpu, cuda, cuda:1 ...")]


def emit(payload: dict, as_json: bool, lines: list[str], quiet: bool = False) -> None:
    """Print JSON for scripts, or human lines unless quiet."""
    if as_json:
        typer.echo(json.dumps(payload, indent=2, default=str))
    elif not quiet:
        for line in lines:
            typer.echo(line)
