"""`vadasm align`: save a model with its neurons and heads permuted to match a reference."""

from __future__ import annotations

from typing import Annotated

import typer

from vadasm.cli.app import app
from vadasm.cli.common import AsJson, Force, Quiet, emit


@app.command("align")
def align(
    model: Annotated[str, typer.Argument(help="The model to permute (folder or Hub id).")],
    reference: Annotated[str, typer.Argument(help="The model whose unit order to match (same architecture and size).")],
    output: Annotated[str, typer.Argument(help="Output folder for the permuted model.")],
    similarity: Annotated[str, typer.Option(
        help="'weights' (inner products of each unit's weights) or 'activations' (correlation of unit "
             "activations on held-out validation text; needs the reference's tokenizer).")] = "weights",
    force: Force = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Hungarian weight matching: permute MODEL's MLP neurons and attention heads to REFERENCE's order.

    The saved model computes exactly the same function as MODEL (each permutation moves both sides
    of every neuron and keeps query heads with their key/value group); only the order of hidden
    units changes, so a later average with REFERENCE combines matching units. Prints per model how
    many units moved and how far MODEL is from REFERENCE before and after.

    Example: vadasm align ./finetune ./base ./finetune-aligned
    """
    from vadasm.align import write_aligned

    report = write_aligned(reference, model, output, similarity, force=force, progress=not (quiet or as_json))
    summary = report.summary()
    lines = [f"aligned {report.model} to {report.reference} ({similarity}) -> {output}",
             f"  {summary['groups']} groups, {summary['moved_fraction']:.1%} of units moved; distance to reference "
             f"{summary['distance_before']:.6g} -> {summary['distance_after']:.6g} "
             f"({summary['distance_reduction']:.2%} less)"]
    lines += [f"  not aligned: {s.get('tensor') or s.get('group')}: {s['reason']}" for s in report.skipped]
    emit(report.to_dict(), as_json, lines, quiet)
