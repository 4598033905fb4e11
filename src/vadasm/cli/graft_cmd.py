"""`vadasm graft`: give a text model the donor's vision (and, over a shared base, its language delta)."""

from __future__ import annotations

from typing import Annotated

import typer

from vadasm.cli.app import app
from vadasm.cli.common import AsJson, Quiet, check_run_flags, emit
from vadasm.cli.options import options_from
from vadasm.graft.options import GraftOptions


@app.command("graft")
@options_from(GraftOptions, defaults={"protect_ratio": None})  # None: decided by the merge method
def graft_command(
    donor: Annotated[str, typer.Argument(help="Vision-language donor: a LLaVA or LLaVA-Next folder or Hub id.")],
    recipient: Annotated[str, typer.Argument(
        help="Recipient: a text LLM (or a LLaVA of the donor's base, which keeps its own vision).")],
    output: Annotated[str, typer.Argument(help="Output folder (a stock LLaVA checkpoint with processor).")],
    options: GraftOptions,
    evaluate: Annotated[list[str] | None, typer.Option(
        "--eval", help="Evaluate the output beside its controls, donor and recipient: easyvqa, arith. Repeatable.")]
    = None,
    eval_limit: Annotated[int, typer.Option(help="Items per task for --eval.")] = 200,
    eval_split: Annotated[str, typer.Option(help="Split for --eval (test is held out; val for tuning).")] = "test",
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Graft DONOR's vision onto RECIPIENT, without training. The pair class is decided and printed.

    A (shared base): donor tower and projector kept; LM = recipient + beta x (donor LM - base), or with
    --merge-method regmean the linear layers that best reproduce each model on its own task.

    B/C (other sizes/tokenizers): projector moved by an anchor-token embedding map, scored vs controls; or, with
    --map calibrated, its linear_2 refitted on --calibration-data images and their text (closed form).

    --projector closed-form: the no-donor baseline (the donor's tower, one least-squares map, no donor projector).

    Example: vadasm graft ./llava-gemma3 ./smollm2 ./smollm2-sees --eval easyvqa
    """
    from vadasm.cli.eval_cmd import resolve_model
    from vadasm.graft import graft, record_scores

    check_run_flags(shard_size=str(options.output.shard_size))
    # testbed:NAME names a built testbed artefact, as in `vadasm eval` and `vadasm tune`
    donor, recipient = str(resolve_model(donor)), str(resolve_model(recipient))
    language = options.language
    language.base = str(resolve_model(language.base)) if language.base else None
    options.output.progress = not (quiet or as_json)
    result = graft(donor, recipient, output, options)
    payload, lines = {"graft": result.to_dict()}, result.lines()
    if evaluate:
        from vadasm.eval.report import format_table
        from vadasm.graft.measure import measure_graft, scores_record, verdicts

        models = {"graft": output, "donor": donor, "recipient": recipient}
        report = measure_graft(models, list(evaluate), split=eval_split, limit=eval_limit, seed=options.seed)
        found = verdicts(report)
        record_scores(output, scores_record(report, found))
        payload["eval"] = scores_record(report, found)
        lines += ["", format_table(report)] + [line for v in found for line in v.lines]
    emit(payload, as_json, lines, quiet)
