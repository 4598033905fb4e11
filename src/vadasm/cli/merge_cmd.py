"""`vadasm merge`: same-architecture merges from a mergekit-style YAML recipe or from flags."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Annotated

import typer

from vadasm.cli.app import app
from vadasm.cli.common import AsJson, Quiet, check_run_flags, emit
from vadasm.cli.options import options_from
from vadasm.errors import VadasmError
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge
from vadasm.merge.multi import plan_stages, read_recipe_documents, run_multi_merge
from vadasm.methods import method_names
from vadasm.options import flag_name, option


@dataclass
class RecipeFlags:
    """Recipe settings given as flags (mergekit-yaml's shortcuts): they build or override the recipe."""

    method: str | None = option(None, help=lambda: (
        f"One of: {', '.join(method_names())} (overrides the recipe; `vadasm methods` lists their parameters)."))
    base: str | None = option(None, help="Base model (folder or Hub id) for task-vector methods and slerp.")
    model: list[str] = option(default_factory=list, help="An input model; repeat for each.")
    weight: list[float] = option(default_factory=list, help="Weight per --model, in order (one value: all).")
    density: list[float] = option(default_factory=list, help=(
        "Fraction of each delta kept (ties/dare), per --model or one for all."))
    calibration: list[str] = option(default_factory=list, help=(
        "regmean: each model's calibration data, a JSONL file of {\"text\"[, \"answer\"]} records or a "
        "built-in task (its train split), per --model or one for all (--param calibration_samples=N: items "
        "per model, default 128). Each model is run on its data first; memory: one fp32 Gram matrix "
        "(in_features x in_features) per linear layer per model, held until the merge ends."))
    param: list[str] = option(default_factory=list, help=(
        "Global parameter KEY=VALUE, e.g. normalize=false, lambda=0.8, t=0.5. Repeatable."))
    seed: int | None = option(None, help="Seed for DARE's random masks (recorded in vadasm_config.json).")
    exclude_norms: bool = option(False, help="Copy normalisation weights from the base instead of merging them.")

    def given(self) -> list[str]:
        """The flags that were given, e.g. ['--method', '--param']."""
        return [flag_name(f) for f in fields(self) if getattr(self, f.name)]

    def apply(self, raw: dict) -> dict:
        """`raw` (a recipe as a dict, maybe empty) with these flags written into it."""
        if self.method:
            raw["merge_method"] = self.method
        if self.base:
            raw["base_model"] = self.base
        if self.model:
            raw["models"] = [{"model": m, "parameters": {}} for m in self.model]
        entries = raw.get("models") or []
        if len(self.calibration) == 1 and not entries:  # a slices recipe: the default for every source
            raw.setdefault("parameters", {})["calibration"] = self.calibration[0]
        for key, values in (("weight", self.weight), ("density", self.density), ("calibration", self.calibration)):
            if not values:
                continue
            if len(values) not in (1, len(entries)):
                raise VadasmError(f"--{key}: give one value or one per --model ({len(entries)})")
            for i, entry in enumerate(entries):
                entry.setdefault("parameters", {})[key] = values[i if len(values) > 1 else 0]
        for item in self.param:
            key, sep, value = item.partition("=")
            if not sep:
                raise VadasmError(f"--param {item}: expected KEY=VALUE")
            raw.setdefault("parameters", {})[key.strip()] = value.strip()  # typed by the method's Param when checked
        if self.seed is not None:
            raw["seed"] = self.seed
        if self.exclude_norms:
            raw["exclude_norms"] = True
        return raw


@app.command("merge")
@options_from(MergeOptions)
@options_from(RecipeFlags, param="flags")
def merge(
    paths: Annotated[list[str], typer.Argument(
        metavar="[RECIPE.yaml] OUTPUT_DIR",
        help="mergekit-yaml order: recipe then output folder; or only the output folder with --method/--model.")],
    flags: RecipeFlags,
    options: MergeOptions,
    intermediate_dir: Annotated[str | None, typer.Option(
        help="For a recipe of several `---`-separated documents (mergekit-multi): keep each named merge in "
             "this folder (DIR/NAME); default: a temporary folder removed at the end.")] = None,
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
    device = check_run_flags(device=options.device, threads=options.threads, shard_size=options.shard_size)
    options = replace(options, device=device, progress=not (quiet or as_json))
    documents = read_recipe_documents(paths[0]) if len(paths) == 2 else []
    if len(documents) > 1:
        overrides = flags.given()
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
    raw = flags.apply(raw)
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

