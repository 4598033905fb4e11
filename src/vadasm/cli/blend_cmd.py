"""`vadasm blend`, `vadasm decompose`, `vadasm rotations`: the before/after-RL SVD toolkit."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from vadasm.blend import BlendOptions, TensorSelector, run_blend, run_decompose, run_rotations
from vadasm.blend.options import EXCLUDE_HELP, INCLUDE_HELP
from vadasm.blend.sweep import EXCLUDED_EMBEDDINGS
from vadasm.cli.app import app
from vadasm.cli.common import (
    AllowPickle,
    AsJson,
    Device,
    Force,
    Quiet,
    TrustRemoteCode,
    check_run_flags,
    emit,
    resolve_device,
)
from vadasm.cli.options import options_from

Include = Annotated[list[str] | None, typer.Option("--include", help=INCLUDE_HELP)]
Exclude = Annotated[list[str] | None, typer.Option("--exclude", help=EXCLUDE_HELP)]
IncludeEmbeddings = Annotated[bool, typer.Option(
    "--include-embeddings", help="Also process token embeddings and the LM head (off: vocabulary-sized SVDs).")]


@app.command("blend")
@options_from(BlendOptions, defaults={"device": "auto"})
def blend(
    before: Annotated[str, typer.Option(help="Model before fine-tuning / RL (folder or Hub id).")],
    after: Annotated[str, typer.Option(help="Model after fine-tuning / RL; its U, Vh and other tensors are kept.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder that receives alpha_{a:.1f}/ checkpoints.")],
    options: BlendOptions,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Blend the singular values of a before/after pair for a sweep of alphas.

    For every 2-D weight present in both models with equal shapes (token
    embeddings and LM head included, as in the seed):
    S = a*S_after + (1-a)*S_before, keeping U and Vh of the after model, i.e.
    W(a) = W_after + (1-a) * U diag(S_before - S_after) Vh.
    One fp32 SVD of each after-weight and the singular values of the
    before-weight serve every alpha; alpha 1 gives the after model bit for bit.
    Alpha 0 gives every blended weight the before model's singular values in
    the after model's singular vectors: it equals the before weight only where
    the two share their singular vectors (or are equal).
    With --exclude-embeddings, embeddings and LM head are interpolated
    linearly instead. Other tensors (1-D, missing or mismatched) are copied
    from the after model and listed with their reason in each folder's
    svd_blend_meta.json.

    Writes, atomically: OUTPUT/alpha_{a:.1f}/ (loadable checkpoints with
    config and tokenizer), OUTPUT/sigma_logs.safetensors (S_before, S_after
    per weight), OUTPUT/sigma_logs.json (per-layer summary) and
    OUTPUT/blend_summary.json; the same inputs give byte-identical files
    (the run time is printed, not written).

    Example: vadasm blend --before ./base --after ./rl --output ./blends
    """
    check_run_flags(shard_size=options.shard_size)
    options = replace(options, device=resolve_device(options.device), progress=not (quiet or as_json))
    result = run_blend(before, after, output, options)
    lines = [f"blended {result.blended}/{result.tensors} tensors for {len(result.folders)} alphas "
             f"-> {result.output} in {result.seconds:.1f}s"]
    lines += [f"  {'interpolated linearly' if reason == EXCLUDED_EMBEDDINGS else 'copied from after'}: "
              f"{count} x {reason}" for reason, count in sorted(result.skipped.items())]
    if result.reused_decompositions:
        lines.append(f"  reused {result.reused_decompositions} SVDs from {options.from_decomposition}")
    emit(result.to_dict(), as_json, lines, quiet)


@app.command("decompose")
def decompose(
    model: Annotated[str, typer.Argument(help="Model folder or Hub id.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder for one safetensors file per weight.")],
    include: Include = None,
    exclude: Exclude = None,
    include_embeddings: IncludeEmbeddings = False,
    device: Device = "auto",
    force: Force = False,
    allow_pickle: AllowPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Write the fp32 SVD (U, S, Vh, orig_shape) of every selected 2-D weight.

    One safetensors file per weight, named as the seed's svd_decompose.py
    did (dots -> '__', slashes -> '_slash_'), plus decomposition.json with
    the model's fingerprint. Pass the folder to
    'vadasm blend --from-decomposition' to skip the after model's SVDs.

    Example: vadasm decompose ./rl --output ./rl-svd
    """
    result = run_decompose(
        model, output, TensorSelector(include or [], exclude or [], include_embeddings),
        device=resolve_device(device), force=force, allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code, progress=not (quiet or as_json),
    )
    lines = [f"decomposed {result.decomposed} weights of {result.model} -> {result.output} "
             f"in {result.seconds:.1f}s ({len(result.skipped)} tensors skipped)"]
    emit(result.to_dict(), as_json, lines, quiet)


@app.command("rotations")
def rotations(
    base: Annotated[str, typer.Option(help="The starting model M0 (e.g. before RL).")],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder for rotations.csv/.json and the plot.")],
    models: Annotated[list[str] | None, typer.Option(
        "--models", help="The next model M1; further models M2 ... may follow as plain arguments.")] = None,
    more_models: Annotated[list[str] | None, typer.Argument(
        metavar="M2", help="More models after --models M1, in chain order.", show_default=False)] = None,
    top_k: Annotated[int, typer.Option(help="Size of the singular subspaces compared.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the null model's random perturbations.")] = 0,
    include: Include = None,
    exclude: Exclude = None,
    include_embeddings: IncludeEmbeddings = False,
    device: Device = "auto",
    force: Force = False,
    allow_pickle: AllowPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Measure how singular subspaces turn along base -> M1 -> M2.

    Per layer and matrix type: principal angles between the top-k left and
    right singular subspaces; the rotation a->b as the orthogonal Procrustes
    fit of the top-k singular bases, and the relative error of composing
    M0->M1 with M1->M2 against M0->M2; the relative spectrum change. Each is
    computed again on a null chain where every change is a seeded random
    matrix of the same norm. Writes rotations.csv, rotations.json and
    rotation_curves.png.

    Example: vadasm rotations --base ./base --models ./rl1 ./rl2 --output ./rot
    """
    chain = [*(models or []), *(more_models or [])]
    report = run_rotations(
        base, chain, output, TensorSelector(include or [], exclude or [], include_embeddings),
        top_k=top_k, seed=seed, device=resolve_device(device), force=force, allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code, progress=not (quiet or as_json),
    )
    lines = [f"measured {report.tensors} weights over {len(chain) + 1} models -> {report.output} "
             f"in {report.seconds:.1f}s"]
    for entry in report.summary:
        comp = entry["compose_err_left"]
        lines.append(
            f"  {entry['pair']:<8} {entry['kind']:<4} angle L/R {entry['angle_left_mean_deg']:6.2f}/"
            f"{entry['angle_right_mean_deg']:6.2f} deg  spectrum {entry['spectrum_rel_change']:.2e}"
            + (f"  compose err {comp:.2e}" if comp is not None else "")
        )
    emit(report.to_dict(with_rows=False), as_json, lines, quiet)
