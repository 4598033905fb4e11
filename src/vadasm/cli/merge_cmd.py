"""`vadasm merge`: same-architecture merges from a mergekit-style YAML recipe or from flags."""

from __future__ import annotations

from typing import Annotated

import typer

from vadasm.cli import app
from vadasm.cli.common import AllowPickle, AsJson, Device, Force, Quiet, TrustRemoteCode, check_run_flags, emit
from vadasm.errors import VadasmError
from vadasm.io import DEFAULT_SHARD_SIZE
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge
from vadasm.merge.multi import plan_stages, read_recipe_documents, run_multi_merge
from vadasm.methods import method_names


@app.command("merge")
def merge(
    paths: Annotated[list[str], typer.Argument(
        metavar="[RECIPE.yaml] OUTPUT_DIR",
        help="mergekit-yaml order: recipe then output folder; or only the output folder with --method/--model.")],
    method: Annotated[str | None, typer.Option(
        help=f"One of: {', '.join(method_names())} (overrides the recipe; `vadasm methods` lists their "
             "parameters).")] = None,
    base: Annotated[str | None, typer.Option(
        help="Base model (folder or Hub id) for task-vector methods and slerp.")] = None,
    model: Annotated[list[str] | None, typer.Option(help="An input model; repeat for each.")] = None,
    weight: Annotated[list[float] | None, typer.Option(help="Weight per --model, in order (one value: all).")] = None,
    density: Annotated[list[float] | None, typer.Option(
        help="Fraction of each delta kept (ties/dare), per --model or one for all.")] = None,
    calibration: Annotated[list[str] | None, typer.Option(
        help="regmean: each model's calibration data, a JSONL file of {\"text\"[, \"answer\"]} records or a "
             "built-in task (its train split), per --model or one for all (--param calibration_samples=N: items "
             "per model, default 128). Each model is run on its data first; memory: one fp32 Gram matrix "
             "(in_features x in_features) per linear layer per model, held until the merge ends.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        help="Global parameter KEY=VALUE, e.g. normalize=false, lambda=0.8, t=0.5. Repeatable.")] = None,
    dtype: Annotated[str | None, typer.Option(
        help="Output dtype (float32, bfloat16, float16). Arithmetic is always fp32.")] = None,
    shard_size: Annotated[str, typer.Option(help="Largest output shard, e.g. 5GB, 500MB.")] = DEFAULT_SHARD_SIZE,
    seed: Annotated[int | None, typer.Option(
        help="Seed for DARE's random masks (recorded in vadasm_config.json).")] = None,
    exclude_norms: Annotated[bool, typer.Option(
        "--exclude-norms", help="Copy normalisation weights from the base instead of merging them.")] = False,
    align: Annotated[str | None, typer.Option(
        help="Permute each input's MLP neurons and attention heads to match the base (Hungarian weight "
             "matching) before merging: 'weights' or 'activations' (measured on held-out validation text).")] = None,
    intermediate_dir: Annotated[str | None, typer.Option(
        help="For a recipe of several `---`-separated documents (mergekit-multi): keep each named merge in "
             "this folder (DIR/NAME); default: a temporary folder removed at the end.")] = None,
    threads: Annotated[int, typer.Option(
        help="Torch threads for the math (a reader thread overlaps I/O); more pays only on idle cores.")] = 1,
    device: Device = "cpu",
    force: Force = False,
    allow_pickle: AllowPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Merge models of one architecture with any of mergekit's methods, or RegMean, without training.

    Reads and writes one tensor at a time, computes in fp32, writes sharded safetensors into a
    temporary folder that becomes OUTPUT_DIR only on success, and records the recipe and input
    fingerprints in OUTPUT_DIR/vadasm_config.json.

    A recipe of several `---`-separated documents runs as mergekit-multi does: each named document
    is a merge that later ones may use by name; the unnamed (or last-used) one is written to OUTPUT_DIR.

    RegMean (`merge_method: regmean`) first runs each input model on its own calibration data
    (--calibration, or `calibration:` in its parameters) and keeps one fp32 Gram matrix
    (in_features x in_features) per linear layer per model in memory; see docs/recipes.md.

    Example: vadasm merge examples/ties.yaml ./merged
    """
    device = check_run_flags(device=device, threads=threads, shard_size=shard_size)
    options = MergeOptions(dtype=dtype, shard_size=shard_size, force=force, allow_pickle=allow_pickle,
                           trust_remote_code=trust_remote_code, device=device, threads=threads,
                           progress=not (quiet or as_json), align=align)
    documents = read_recipe_documents(paths[0]) if len(paths) == 2 else []
    if len(documents) > 1:
        overrides = [flag for flag, value in (("--method", method), ("--base", base), ("--model", model),
                                              ("--weight", weight), ("--density", density), ("--param", param),
                                              ("--seed", seed), ("--exclude-norms", exclude_norms),
                                              ("--calibration", calibration)) if value]
        if overrides:
            raise VadasmError(f"{paths[0]}: {', '.join(overrides)} cannot apply to a recipe of "
                              f"{len(documents)} documents; write the values into its documents")
        staged = run_multi_merge(plan_stages(documents, source=paths[0]), paths[1], options, intermediate_dir)
        lines = [f"merged {s['name'] or 'final merge'} ({s['result']['merge_method']}, "
                 f"{s['result']['merged']}/{s['result']['tensors']} tensors) -> {s['output'] or '(temporary)'}"
                 for s in staged.stages]
        lines += [f"  skipped '{name}': the final merge does not use it (keep it with --intermediate-dir)"
                  for name in staged.skipped]
        emit(staged.to_dict(), as_json, lines, quiet)
        return
    if intermediate_dir is not None:
        raise VadasmError("--intermediate-dir is for a recipe of several `---`-separated documents")
    if len(paths) == 2:  # one document; its 'name' (mergekit-multi's) changes nothing alone
        raw = recipe_from_dict({k: v for k, v in documents[0].items() if k != "name"}, source=paths[0])
        raw = raw.model_dump(exclude_none=True)
    elif len(paths) == 1:
        raw = {}
    else:
        raise VadasmError("give RECIPE.yaml OUTPUT_DIR, or OUTPUT_DIR with --method and --model")
    output = paths[-1]
    raw = _apply_flags(raw, method, base, model, weight, density, param, seed, exclude_norms, calibration)
    recipe = recipe_from_dict(raw, source=paths[0] if len(paths) == 2 else "flags")
    result = run_merge(recipe, output, options)
    lines = [f"merged {result.merged}/{result.tensors} tensors ({result.architecture}, {result.merge_method}) "
             f"-> {result.output} in {result.seconds:.1f}s"]
    lines += [f"  not merged: {a.name}: {a.action} ({a.reason})" for a in result.not_merged]
    lines += [f"  note: {note}" for note in result.notes]
    for report in result.alignment or []:
        summary = report["summary"]
        lines.append(f"  aligned {report['model']}: {summary['moved_fraction']:.1%} of units moved, distance to "
                     f"reference {summary['distance_before']:.4g} -> {summary['distance_after']:.4g}")
    emit(result.to_dict(), as_json, lines, quiet)


def _apply_flags(raw: dict, method, base, models, weights, densities, params, seed, exclude_norms,
                 calibrations=None) -> dict:
    if method:
        raw["merge_method"] = method
    if base:
        raw["base_model"] = base
    if models:
        raw["models"] = [{"model": m, "parameters": {}} for m in models]
    entries = raw.get("models") or []
    if calibrations and len(calibrations) == 1 and not entries:  # a slices recipe: the default for every source
        raw.setdefault("parameters", {})["calibration"] = calibrations[0]
    for key, values in (("weight", weights), ("density", densities), ("calibration", calibrations)):
        if not values:
            continue
        if len(values) not in (1, len(entries)):
            raise VadasmError(f"--{key}: give one value or one per --model ({len(entries)})")
        for i, entry in enumerate(entries):
            entry.setdefault("parameters", {})[key] = values[i if len(values) > 1 else 0]
    for item in params or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise VadasmError(f"--param {item}: expected KEY=VALUE")
        raw.setdefault("parameters", {})[key.strip()] = value.strip()  # typed by the method's Param when checked
    if seed is not None:
        raw["seed"] = seed
    if exclude_norms:
        raw["exclude_norms"] = True
    return raw
