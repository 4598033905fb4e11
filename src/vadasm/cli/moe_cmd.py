"""`vadasm moe into-moe | into-dense | build`: task vectors between dense and MoE models; MoEs from dense ones."""

from __future__ import annotations

from typing import Annotated

import typer

from vadasm.cli.app import app
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


@moe_app.command("build")
def build(
    config: Annotated[str, typer.Argument(help="A mergekit-moe YAML config (base_model, gate_mode, experts ...).")],
    output: Annotated[str, typer.Argument(
        help="Output folder (a Mixtral, Qwen MoE, Qwen3 MoE or DeepSeek MoE checkpoint).")],
    allow_all_same: Annotated[bool, typer.Option(
        "--i-understand-this-is-not-useful-without-training",
        help="Build even when every expert is the same model (sparse upcycling before training).")] = False,
    force: Force = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Build a mixture of experts from dense models, from a mergekit-moe config.

    Attention, norms and embeddings come from base_model, each expert's MLP from its source_model;
    routers from gate_mode: hidden (prompts' hidden states, as mergekit), cheap_embed (prompts' token
    embeddings), random / uniform_random (seeded by `seed:`), or router_input (vadasm: mean MLP input of
    each expert's prompts, centred over experts). A shared expert without prompts (or architecture:
    deepseek) gives a DeepSeek MoE, as mergekit: no transformers class loads it, loading needs
    deepseek-ai's remote code (trust_remote_code=True).

    Example: vadasm moe build clowncar.yml ./clowncar-moe
    """
    from vadasm.moe.build import build_moe_from_file

    result = build_moe_from_file(config, output, force=force, allow_all_same=allow_all_same,
                                 progress=not (quiet or as_json))
    lines = [f"moe build: {result.architecture} with {len(result.experts)} experts "
             f"({len(result.shared_experts)} shared), gates {result.gate_mode}, {result.tensors} tensors -> "
             f"{result.output} in {result.seconds:.1f}s"]
    lines += [f"  warning: {w}" for w in result.warnings]
    if result.degenerate_layers:
        lines.append(f"  warning: layers {result.degenerate_layers} have nearly parallel router rows "
                     "(prompts too similar); some experts will be rarely used")
    emit(result.to_dict(), as_json, lines, quiet)
