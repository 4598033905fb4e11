"""`vadasm tokensurgeon MODEL DONOR OUT`: give MODEL the tokenizer of DONOR (mergekit-tokensurgeon)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from vadasm.cli.app import app
from vadasm.cli.common import AsJson, Quiet, emit
from vadasm.cli.options import options_from
from vadasm.tokensurgeon.run import SurgeryOptions


@app.command("tokensurgeon")
@options_from(SurgeryOptions)
def tokensurgeon(
    model: Annotated[str, typer.Argument(help="The model whose weights are kept (a text model folder).")],
    donor: Annotated[str, typer.Argument(help="The model whose tokenizer (vocabulary) MODEL receives.")],
    output: Annotated[str, typer.Argument(help="Output folder (written atomically; never an input).")],
    options: SurgeryOptions,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Give MODEL the vocabulary of DONOR without training.

    Tokens both tokenizers spell the same (and the bos/eos/pad/unk tokens, by role) keep MODEL's
    embedding rows, in DONOR's id order; every other DONOR token gets a row predicted from DONOR's
    embedding of it. The LM head is rebuilt the same way unless MODEL ties it to the embedding.
    The output has MODEL's architecture, DONOR's tokenizer files, and vocab_size and special token
    ids from DONOR in its config.

    Example: vadasm tokensurgeon ./gemma3-270m ./smollm2 ./gemma3-smol-vocab --method omp -k 64
    """
    from vadasm.tokensurgeon import token_surgery

    options = replace(options, progress=not (quiet or as_json))
    result = token_surgery(model, donor, output, options)
    how = f"omp, k={options.k}" if options.method == "omp" else options.method
    lines = [f"token surgery ({how}) -> {result.output}",
             f"  {result.vocab_rows} rows: {result.shared_tokens} shared tokens keep MODEL's rows, "
             f"{result.predicted_tokens} predicted, {result.zero_rows} without a token (zero)",
             f"  rebuilt: {', '.join(result.rebuilt)}{' (LM head tied to it)' if result.tied_embeddings else ''}"]
    emit(result.to_dict(), as_json, lines, quiet)
