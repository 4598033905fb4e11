"""`vadasm tune`: search merge / graft coefficients on validation data, report the winner on test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vadasm.cli.app import app
from vadasm.cli.common import AsJson, Device, Force, Quiet, check_run_flags, emit, parse_flag_value
from vadasm.errors import VadasmError
from vadasm.merge import read_recipe_yaml


def parse_pairs(values: list[str] | None, flag: str, number: bool = False) -> dict:
    out = {}
    for value in values or []:
        key, eq, rest = value.partition("=")
        if not eq or not key or not rest:
            raise VadasmError(f"{flag} {value!r}: write KEY=VALUE")
        if number:
            try:
                out[key.strip()] = float(rest)
            except ValueError:
                raise VadasmError(f"{flag} {value!r}: {rest!r} is not a number") from None
        else:
            out[key.strip()] = parse_flag_value(flag, rest)
    return out


@app.command("tune")
def tune_command(
    param: Annotated[list[str], typer.Option(
        help="A coefficient to search: NAME=LOW:HIGH\\[@DEFAULT], NAME=LOW:HIGH:int or NAME=A,B,C\\[@DEFAULT]. "
             "Repeatable. Merge mode: a ${NAME} placeholder of the recipe (`merge_method: ${NAME}` searches "
             "methods `vadasm methods` lists). Graft mode: a `vadasm graft` option by its field name, e.g. beta, "
             "density, protect_ratio, projector_variance, map_method, merge_method, regmean_donor_weight.")],
    recipient: Annotated[str | None, typer.Option(
        help="The model being changed (the 'change nothing' candidate). Default: the recipe's base_model.")] = None,
    recipe: Annotated[Path | None, typer.Option(
        help="Merge recipe (mergekit YAML) with ${NAME} placeholders for the tuned values.")] = None,
    donor: Annotated[str | None, typer.Option(help="Graft mode: the vision-language donor.")] = None,
    base: Annotated[str | None, typer.Option(
        help="Graft mode: the common base for the class A language delta.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Graft mode: a fixed graft option KEY=VALUE (e.g. merge_method=ties). Repeatable.")] = None,
    tasks: Annotated[str, typer.Option(
        help="Objective tasks, comma-separated (harness: easyvqa, arith; benchmarks need --data).")] = "arith",
    weight: Annotated[list[str] | None, typer.Option(
        help="Objective weight TASK=W (default 1 for each task). Repeatable.")] = None,
    data: Annotated[list[str] | None, typer.Option(help="Benchmark data TASK=FILE_OR_HUB_ID. Repeatable.")] = None,
    search: Annotated[str, typer.Option(help="grid, cma (CMA-ES), tpe (optuna) or deap (genetic).")] = "grid",
    trials: Annotated[int | None, typer.Option(
        help="Most search candidates to evaluate (default: the whole grid / all generations; cma/tpe: 30).")] = None,
    grid_points: Annotated[int, typer.Option(help="Grid values per float range.")] = 5,
    population: Annotated[int, typer.Option(help="DEAP population size (seed: 30).")] = 30,
    generations: Annotated[int, typer.Option(help="DEAP generations (seed: 15).")] = 15,
    limit: Annotated[int | None, typer.Option(help="Validation/test items per task.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the optimizer, item sampling and DARE masks.")] = 0,
    workers: Annotated[int | None, typer.Option(
        help="Candidates evaluated at once: parallel processes (default 1); with --ray, at most this many Ray "
             "tasks (default: every slot of the cluster; --ray local: a local Ray with this many CPUs).")] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="Evaluate candidates as Ray tasks: a cluster address (HEAD:6379), 'auto' (the cluster "
                      "started with `ray start` on this machine) or 'local' (a private Ray for this run).")] = None,
    out: Annotated[Path, typer.Option(
        help="Run folder: trials.jsonl (resumable), tune_result.json, tune_search.png.")] = Path("vadasm-tune"),
    output: Annotated[Path | None, typer.Option(
        help="Write the winning model here, with tuning, validation, gate and test scores in vadasm_config.json.")]
        = None,
    test: Annotated[bool, typer.Option("--test/--no-test", help="Re-score the winner on the test split.")] = True,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch.")] = 16,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads per evaluation (default: torch's choice; 1 is often fastest on a busy machine).")]
        = None,
    device: Device = "cpu",
    force: Force = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Tune merge or graft coefficients on the validation split, against the change-nothing candidate.

    The recipient alone, the untuned defaults and (for grafts) the zero-delta graft are always
    evaluated first; the winner is the best validation objective (ties go to those references) and
    is then re-scored on the test split, which no decision saw. A winner below the recipient (text)
    or below its blind run (vision) fails the validation gate, shown here and recorded in the model.
    Rerunning with the same --out resumes from its trials.jsonl.

    Example: vadasm tune --donor testbed:llava-smollm2 --recipient testbed:smollm2-arith --base testbed:smollm2
    --param beta=0:1.5@1 --param protect_ratio=0:0.5@0.2 --tasks easyvqa,arith --limit 200 --search tpe --trials 20

    RegMean graft: add --set merge_method=regmean --set donor_data=easyvqa --set recipient_data=arith
    --param regmean_donor_weight=1,3,10,20,30,50@1 --search grid
    """
    from vadasm.cli.eval_cmd import absolute_sources, resolve_model
    from vadasm.eval.benchmarks.data import parse_sources
    from vadasm.io import check_output_free
    from vadasm.scale import RayPool
    from vadasm.tune import GraftBuilder, HarnessObjective, MergeBuilder, make_optimizer, space_from_specs, tune
    from vadasm.tune.plot import plot_search
    from vadasm.tune.preflight import check_choices

    if quiet or as_json:  # keep stdout to the JSON / result lines
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    device = check_run_flags(device=device, threads=threads, device_here=not ray)
    if threads:
        import torch

        torch.set_num_threads(threads)
    if workers is not None and workers < 1:
        raise VadasmError(f"--workers {workers}: give at least 1")
    space = space_from_specs(param)
    if (recipe is None) == (donor is None):
        raise VadasmError("give either --recipe (merge) or --donor (graft)")
    if output is not None:  # the winner's build checks its resolved inputs again
        check_output_free(output, force, [recipe, donor, recipient, base])
    if recipe is not None:
        # placeholders stay strings until each trial fills them in; paths absolute for workers elsewhere
        template = absolute_model_paths(read_recipe_yaml(recipe))
        ref = recipient or template.get("base_model")
        if not ref:
            raise VadasmError(f"{recipe}: no base_model; say which model is unchanged with --recipient")
        builder = MergeBuilder(template, str(resolve_model(ref).absolute()))
        source = template.get("tokenizer_source") or "base"  # the merged candidates' tokenizer comes from here
        source = template.get("base_model") if source == "base" else source
        if source and source != builder.recipient:
            require_tokenizer(resolve_model(source), "merge's tokenizer source")
    else:
        if recipient is None:
            raise VadasmError("graft mode needs --recipient")
        fixed = parse_pairs(set_, "--set") | ({"base": str(resolve_model(base).absolute())} if base else {})
        builder = GraftBuilder(str(resolve_model(donor).absolute()), str(resolve_model(recipient).absolute()), fixed)
    builder.check(space.names)
    check_choices(builder, space)  # a searched method or map the operation refuses: before any trial
    require_tokenizer(Path(builder.recipient), "recipient")
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    weights = {t: 1.0 for t in task_list} | parse_pairs(weight, "--weight", number=True)
    if set(weights) != set(task_list):
        raise VadasmError(f"--weight names {sorted(set(weights) - set(task_list))} are not in --tasks")
    objective = HarnessObjective(builder, weights, limit, seed, absolute_sources(parse_sources(data)), device,
                                 batch_size, workdir=None)
    budget = trials if trials is not None else (30 if search in ("cma", "tpe") else None)
    pool = RayPool(ray, gpus_per_task=1 if device.startswith("cuda") else 0, workers=workers) if ray else None
    try:
        # candidates asked per round: every Ray slot, else one per worker process
        batch = pool.slots if pool is not None else max(workers or 1, 1)
        optimizer = make_optimizer(search, space, seed, grid_points, population, generations, batch=batch)
        out.mkdir(parents=True, exist_ok=True)
        result = tune(objective, space, optimizer, budget, out / "trials.jsonl", workers or 1, None,
                      builder.zero_params(), seed, test, progress=not quiet, threads=threads, pool=pool)
    finally:
        if pool is not None:
            pool.close()
    # graft mode also records the fixed options (--set, --base), so the winner can be rebuilt from the file
    fixed_options = {"fixed_options": builder.fixed} if isinstance(builder, GraftBuilder) else {}
    (out / "tune_result.json").write_text(json.dumps(result.to_dict() | fixed_options, indent=2, default=str) + "\n")
    plot = plot_search(result, out / "tune_search.png")
    lines = result.lines() + [f"trials: {out / 'trials.jsonl'}", f"plot: {plot}"]
    if output is not None:
        if result.best.kind == "recipient":
            lines.append(f"nothing written to {output}: changing nothing scored best on validation")
        else:
            builder.build(result.best.params, output, force=force)
            record_tuning(output, result, weights, search, limit)
            lines.append(f"winner written to {output}")
    emit(result.to_dict() | {"plot": str(plot)}, as_json, lines, quiet)
    if result.gate and not result.gate.passed and not quiet and not as_json:
        typer.echo("warning: the winner fails the validation gate (see above)", err=True)


def absolute_model_paths(template):
    """The recipe with every model path that exists here made absolute (Ray workers run elsewhere).

    Paths in a recipe are relative to the working directory, as in mergekit; Hub ids and
    `${name}` placeholders are left as they are.
    """
    if isinstance(template, list):
        return [absolute_model_paths(v) for v in template]
    if not isinstance(template, dict):
        return template
    out = {}
    for key, value in template.items():
        if key in ("model", "base_model", "tokenizer_source") and isinstance(value, str) and Path(value).exists():
            value = str(Path(value).absolute())
        out[key] = absolute_model_paths(value)
    return out


def require_tokenizer(folder: Path, role: str) -> None:
    """Candidates are scored on generated text: a model without a tokenizer is one line, before any work."""
    from transformers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise VadasmError(f"{folder}: the {role} has no usable tokenizer ({reason[:200]}); tuning scores "
                          "generated text, so the folder needs its tokenizer files") from None


def evaluation_seconds(result) -> float:
    """Time spent scoring candidates, resumed trials included (each candidate and split once)."""
    spent: dict[str, float] = {}
    for trial in result.trials:
        key = json.dumps([trial.params, trial.split], sort_keys=True)
        spent[key] = max(spent.get(key, 0.0), trial.seconds)
    return round(sum(spent.values()), 1)


def record_tuning(output: Path, result, weights: dict[str, float], search: str, limit: int | None) -> None:
    """Tuning, validation (with the gate) and test sections of the winner's vadasm_config.json."""
    from vadasm.card import hardware_summary
    from vadasm.eval.gate import record_in_config

    recipient = result.reference("recipient")
    record_in_config(output, "tuning", {
        "search": search, "objective_weights": weights, "space": result.space, "seed": result.seed,
        "winner": {"kind": result.best.kind, "params": result.best.params},
        "candidates": len([t for t in result.trials if t.kind == "search"]),
        "improved_over_default": result.improved_over_default,
        "improved_over_recipient": result.improved_over_recipient,
        "references": {k: {"params": t.params, "objective": t.objective}
                       for k in ("recipient", "default", "zero_delta") if (t := result.reference(k))},
        "seconds": result.seconds, "evaluation_seconds": evaluation_seconds(result), "hardware": hardware_summary(),
    })
    record_in_config(output, "validation", {
        "split": "val", "n": limit, "scores": result.best_validation.scores, "recipient": recipient.scores,
        "objective": result.best_validation.objective, "gate": result.gate.to_dict(),
    })
    if result.test:
        record_in_config(output, "test", {"split": "test", "n": limit, **{
            name: {"params": t.params, "objective": t.objective, "scores": t.scores} for name, t in result.test.items()
        }})
