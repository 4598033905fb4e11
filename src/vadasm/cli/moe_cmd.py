"""`vadasm moe into-moe | into-dense`: move task vectors between dense and mixture-of-experts models."""

from __future__ import annotations

from typing import Annotated

import typer

from vadasm.cli import app
from vadasm.cli.common import AsJson, Force, Quiet, emit

moe_app = typer.Typer(help="Dense <-> mixture-of-experts: dense deltas into experts, experts into a dense delta.",
                      no_args_is_help=True)
app.add_typer(moe_app, name="moe")

Weight = Annotated[float, typer.Option(help="Multiplier of the delta added to the recipient.")]
UsageText = Annotated[str | None, typer.Option(
    help="Text file, one input per line (e.g. prompts of your task), to measure router usage on; default: "
         "held-out validation prose. Only used by usage-based options.")]


@moe_app.command("into-moe")
def into_moe(
    moe: Annotated[str, typer.Argument(help="The MoE recipient (same family widths as the dense models).")],
    base: Annotated[str, typer.Argument(help="Dense base model.")],
    tuned: Annotated[str, typer.Argument(help="Dense fine-tune of BASE; TUNED - BASE is the delta.")],
    output: Annotated[str, typer.Argument(help="Output folder (a MoE checkpoint like MOE).")],
    weight: Weight = 1.0,
    scale: Annotated[str, typer.Option(
        help="Per-expert delta scale: none (same delta in every expert), usage (router usage on held-out "
             "validation text x number of experts) or norm (||expert|| / ||dense MLP||).")] = "none",
    usage_text: UsageText = None,
    force: Force = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Inject a dense task vector into every expert of a MoE model.

    Attention, norms and embeddings take the delta directly; each routed expert's gate/up/down takes
    the dense MLP delta times its scale; a shared expert takes it when its width matches; routers
    are kept. Every tensor left unchanged is listed with its reason.

    Example: vadasm moe into-moe ./mixtral ./mistral ./mistral-math ./mixtral-math
    """
    from vadasm.moe import dense_into_moe

    inputs = _usage_inputs(moe, usage_text)
    result = dense_into_moe(moe, base, tuned, output, weight, scale, input_ids=inputs, force=force,
                            progress=not (quiet or as_json))
    _emit(result, as_json, quiet)


@moe_app.command("into-dense")
def into_dense(
    dense: Annotated[str, typer.Argument(help="The dense recipient.")],
    moe: Annotated[str, typer.Argument(help="The MoE donor (experts as wide as DENSE's MLP).")],
    output: Annotated[str, typer.Argument(help="Output folder (a dense checkpoint like DENSE).")],
    base: Annotated[str | None, typer.Option(
        help="Dense model the MoE's delta is measured from (e.g. what it was upcycled from); default DENSE.")] = None,
    weight: Weight = 1.0,
    method: Annotated[str, typer.Option(
        help="uniform (plain mean; closest to the MoE's function in results/moe_synthetic.json) or norm_avg "
             "(mean rescaled to the experts' mean norm).")] = "uniform",
    top_k: Annotated[int | None, typer.Option(
        help="Aggregate only the k experts the router picks most (on --usage-text, default held-out validation "
             "prose).")] = None,
    usage_weighted: Annotated[bool, typer.Option(
        "--usage-weighted", help="Weight experts by router usage (on --usage-text).")] = False,
    usage_text: UsageText = None,
    force: Force = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Aggregate a MoE's experts into one dense MLP delta and add it to a dense model.

    Routers and shared experts have no dense counterpart and are reported as dropped.

    Example: vadasm moe into-dense ./mistral ./mixtral ./mistral-math --top-k 1 --usage-text math_prompts.txt
    """
    from vadasm.moe import moe_into_dense

    inputs = _usage_inputs(moe, usage_text)
    result = moe_into_dense(dense, moe, output, base, weight, method, top_k, usage_weighted, input_ids=inputs,
                            force=force, progress=not (quiet or as_json))
    _emit(result, as_json, quiet)


def _usage_inputs(model: str, usage_text: str | None):
    """Token batches of --usage-text in MODEL's tokenizer, or None (the library's validation-prose default)."""
    if usage_text is None:
        return None
    from vadasm.align.activations import file_token_ids

    return file_token_ids(model, usage_text)


def _emit(result, as_json: bool, quiet: bool) -> None:
    lines = [f"{result.direction}: changed {result.changed}/{result.tensors} tensors -> {result.output} "
             f"in {result.seconds:.1f}s"]
    lines += [f"  kept: {k['tensor']}: {k['reason']}" for k in result.kept]
    lines += [f"  dropped: {d['tensor']}: {d['reason']}" for d in result.dropped]
    emit(result.to_dict(), as_json, lines, quiet)
