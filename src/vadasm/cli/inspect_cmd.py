"""`vadasm inspect`: what vadasm recognises in a model folder, without loading weights."""

from __future__ import annotations

from typing import Annotated

import typer

from vadasm.arch import describe
from vadasm.cli.app import app
from vadasm.cli.common import AllowPickle, AsJson, TrustRemoteCode, emit
from vadasm.io import Checkpoint


@app.command("inspect")
def inspect(
    model: Annotated[str, typer.Argument(help="Model folder or Hub id.")],
    allow_pickle: AllowPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    as_json: AsJson = False,
) -> None:
    """Show the architecture, layers, widths, vocabulary, dense/MoE, vision parts and parameter count.

    Reads only config.json and the safetensors headers, so it is instant even for huge models.
    """
    checkpoint = Checkpoint.open(model, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    summary = describe(checkpoint)
    emit(summary.to_dict(), as_json, summary.lines())
