"""`vadasm transfer --language-transfer`: experimental cross-size language transfer, with controls."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from vadasm.cli.app import app
from vadasm.cli.common import AsJson, Quiet, emit
from vadasm.cli.options import options_from
from vadasm.errors import VadasmError
from vadasm.transfer.run import TransferOptions


@app.command("transfer")
@options_from(TransferOptions)
def transfer(
    recipient: Annotated[str, typer.Argument(help="The model that receives the transfer (its shapes are kept).")],
    donor: Annotated[str, typer.Argument(help="A text model of another width (same gated-MLP family type).")],
    output: Annotated[str, typer.Argument(
        help="Output folder; the matched-norm random control goes to OUTPUT-control-random.")],
    *,
    language_transfer: Annotated[bool, typer.Option(
        "--language-transfer", help="Required: confirms you are running the experimental cross-size transfer.")]
    = False,
    donor_base: Annotated[str | None, typer.Option(
        help="The donor's base: transfer the task vector DONOR - DONOR_BASE. Without it the transferred delta is "
             "the (mapped) donor minus the recipient, the seed's 'large - small'.")] = None,
    options: TransferOptions,
    tasks: Annotated[str, typer.Option(
        help="Held-out tasks scoring transfer, zero delta and random delta (comma list; '' to skip scoring).")]
    = "arith,perplexity",
    limit: Annotated[int, typer.Option(help="Items per generative task (test split).")] = 100,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """EXPERIMENTAL, off by default: bring a donor's MLP knowledge into a recipient of another width.

    Never interpolates weights across shapes. Fits linear maps between the two residual streams on
    tokens both vocabularies spell the same, expresses each donor MLP neuron in the recipient's
    coordinates, matches recipient neurons to donor neurons (Hungarian), and adds BETA times the
    per-neuron, norm-calibrated donor delta to the recipient's MLPs (layers paired by relative
    depth). Writes a random delta of the same norm beside it and scores recipient (zero delta),
    transfer and random delta on the same held-out items; the verdict says whether the transfer
    beat both controls.

    Example: vadasm transfer ./smollm2 ./gemma3-270m ./smollm2-lt --language-transfer --beta 0.05
    """
    if not language_transfer:
        raise VadasmError("cross-size language transfer is experimental and off by default; "
                          "pass --language-transfer to run it (it is always scored beside controls)")
    from vadasm.transfer import language_transfer as run
    from vadasm.transfer import score_with_controls

    options = replace(options, progress=not (quiet or as_json))
    result = run(recipient, donor, output, donor_base, options)
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    if task_list:
        result = score_with_controls(result, task_list, limit=limit, seed=options.seed)
    maps = result.maps
    lines = [f"language transfer ({result.mode}, beta {options.beta}) -> {result.output}; control -> {result.control}",
             f"  residual maps on {maps['anchors']} anchors: held-out top-1 retrieval "
             f"{maps['retrieval_top1_donor_to_recipient']:.1%} (donor->recipient), "
             f"{maps['retrieval_top1_recipient_to_donor']:.1%} (recipient->donor)"]
    lines += [f"  {s['arm']:>12} {s['task']}: {s['metric']} {s['value']:.4g} (n={s['n']})" for s in result.scores]
    lines.append(f"  verdict: {result.verdict}")
    emit(result.to_dict(), as_json, lines, quiet)
