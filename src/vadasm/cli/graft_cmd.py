"""`vadasm graft`: give a text model the donor's vision (and, over a shared base, its language delta)."""

from __future__ import annotations

from typing import Annotated

import typer

from vadasm.cli import app
from vadasm.cli.common import AllowPickle, AsJson, Force, Quiet, TrustRemoteCode, check_run_flags, emit
from vadasm.io import DEFAULT_SHARD_SIZE


@app.command("graft")
def graft_command(
    donor: Annotated[str, typer.Argument(help="Vision-language donor: a LLaVA or LLaVA-Next folder or Hub id.")],
    recipient: Annotated[str, typer.Argument(
        help="Recipient: a text LLM (or a LLaVA of the donor's base, which keeps its own vision).")],
    output: Annotated[str, typer.Argument(help="Output folder (a stock LLaVA checkpoint with processor).")],
    base: Annotated[str | None, typer.Option(
        help="Class A: the common base of the donor's LM and the recipient; enables the language merge.")] = None,
    beta: Annotated[float, typer.Option(help="Class A: weight of the donor's language delta (donor LM - base).")]
    = 1.0,
    merge_method: Annotated[str, typer.Option(
        help="Class A: task_arithmetic, ties, dare_linear, dare_ties, or regmean (linear layers solved from "
             "each model's inputs on its own task; needs --donor-data and --recipient-data).")]
    = "task_arithmetic",
    density: Annotated[float, typer.Option(help="Class A, ties/dare: fraction of the donor delta kept.")] = 1.0,
    donor_data: Annotated[str | None, typer.Option(
        help="Class A, regmean: the donor's task, a built-in task (easyvqa; its train split) or a JSONL file of "
             "{\"text\", \"answer\", \"image\"} records (image paths relative to the file).")] = None,
    recipient_data: Annotated[str | None, typer.Option(
        help="Class A, regmean: the recipient's task (e.g. arith), same forms as --donor-data.")] = None,
    regmean_samples: Annotated[int, typer.Option(help="Class A, regmean: calibration items per model.")] = 128,
    regmean_alpha: Annotated[float, typer.Option(
        help="Class A, regmean: scale of the Gram matrices' off-diagonal (0 = per-feature average, 1 = exact "
             "regression).")] = 0.9,
    regmean_donor_weight: Annotated[float, typer.Option(
        help="Class A, regmean: weight of reproducing the donor on its task relative to the recipient on its own "
             "(tune it: vadasm tune --param regmean_donor_weight=...).")] = 1.0,
    protect: Annotated[float | None, typer.Option(
        help="Class A: fraction of the first layers that keep the recipient's weights (default 0.2; 0 for "
             "regmean).")] = None,
    map_method: Annotated[str, typer.Option(
        "--map", help="Class B/C: embedding map folded into the projector: lstsq, procrustes or omp.")] = "lstsq",
    ridge: Annotated[float, typer.Option(help="Class B/C, lstsq: relative ridge penalty (0 = plain least squares).")]
    = 0.0,
    omp_k: Annotated[int, typer.Option(help="Class B/C, omp: donor dimensions per recipient dimension.")] = 64,
    heldout: Annotated[int, typer.Option(help="Class B/C: anchor tokens held out to score the maps.")] = 1000,
    min_anchors: Annotated[int, typer.Option(help="Class B/C: refuse tokenizers sharing fewer anchor tokens.")]
    = 1000,
    projector_variance: Annotated[float | None, typer.Option(
        help="Store the projector's linears at the rank keeping this fraction of variance (seed: 0.95).")] = None,
    vision_from: Annotated[str, typer.Option(
        help="When the recipient already sees: keep its vision ('recipient') or take the donor's ('donor').")]
    = "recipient",
    image_token: Annotated[str | None, typer.Option(
        help="Image token in the recipient's tokenizer (default: donor's if present, else a reserved token, "
             "else '<image>' added).")] = None,
    calibration_images: Annotated[str | None, typer.Option(
        help="Folder of images run through the donor's tower: picks projector units when the recipient is "
             "narrower and measures whether projector outputs survive the map.")] = None,
    calibration_limit: Annotated[int, typer.Option(help="At most this many calibration images.")] = 64,
    text_only: Annotated[bool, typer.Option(
        "--text-only", help="Class A: write only the merged language model (recipient's architecture).")] = False,
    evaluate: Annotated[list[str] | None, typer.Option(
        "--eval", help="Evaluate the output beside its controls, donor and recipient: easyvqa, arith. Repeatable.")]
    = None,
    eval_limit: Annotated[int, typer.Option(help="Items per task for --eval.")] = 200,
    eval_split: Annotated[str, typer.Option(help="Split for --eval (test is held out; val for tuning).")] = "test",
    seed: Annotated[int, typer.Option(help="Seed for anchor splits, controls, DARE masks, eval sampling.")] = 0,
    dtype: Annotated[str | None, typer.Option(help="Output dtype; default: each tensor keeps its source dtype.")]
    = None,
    shard_size: Annotated[str, typer.Option(help="Largest output shard, e.g. 5GB.")] = DEFAULT_SHARD_SIZE,
    force: Force = False,
    allow_pickle: AllowPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Graft DONOR's vision onto RECIPIENT, without training. The pair class is decided and printed.

    A (shared base): donor tower and projector kept; LM = recipient + beta x (donor LM - base), or with
    --merge-method regmean the linear layers that best reproduce each model on its own task.

    B/C (other sizes/tokenizers): projector moved by an anchor-token embedding map, scored vs controls.

    Example: vadasm graft ./llava-gemma3 ./smollm2 ./smollm2-sees --eval easyvqa
    """
    from vadasm.cli.eval_cmd import resolve_model
    from vadasm.graft import GraftOptions, graft, record_scores

    check_run_flags(shard_size=shard_size)
    # testbed:NAME names a built testbed artefact, as in `vadasm eval` and `vadasm tune`
    donor, recipient = str(resolve_model(donor)), str(resolve_model(recipient))
    base = str(resolve_model(base)) if base else None
    options = GraftOptions(
        base=base, beta=beta, merge_method=merge_method, density=density, protect_ratio=protect,
        donor_data=donor_data, recipient_data=recipient_data, regmean_samples=regmean_samples,
        regmean_alpha=regmean_alpha, regmean_donor_weight=regmean_donor_weight,
        map_method=map_method, ridge=ridge, omp_k=omp_k, heldout=heldout, min_anchors=min_anchors,
        projector_variance=projector_variance, vision_from=vision_from, image_token=image_token,
        calibration_images=calibration_images, calibration_limit=calibration_limit, text_only=text_only,
        seed=seed, dtype=dtype, shard_size=shard_size, force=force, allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code, progress=not (quiet or as_json),
    )
    result = graft(donor, recipient, output, options)
    payload, lines = {"graft": result.to_dict()}, result.lines()
    if evaluate:
        from vadasm.eval.report import format_table
        from vadasm.graft.measure import measure_graft, scores_record, verdicts

        models = {"graft": output, "donor": donor, "recipient": recipient}
        report = measure_graft(models, list(evaluate), split=eval_split, limit=eval_limit, seed=seed)
        found = verdicts(report)
        record_scores(output, scores_record(report, found))
        payload["eval"] = scores_record(report, found)
        lines += ["", format_table(report)] + [line for v in found for line in v.lines]
    emit(payload, as_json, lines, quiet)
