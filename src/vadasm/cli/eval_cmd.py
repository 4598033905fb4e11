"""`vadasm eval`: score models on tasks with controls, on identical items, as a table and JSON."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from vadasm.cli import app
from vadasm.cli.common import Device, Quiet
from vadasm.errors import VadasmError


def resolve_model(ref: str) -> Path:
    """`testbed:NAME` is a built testbed artefact; anything else a folder (or an explicit Hub id)."""
    if ref.startswith("testbed:"):
        from vadasm.testbed.paths import artefact_dir, is_built

        name = ref.removeprefix("testbed:")
        try:
            folder = artefact_dir(name)
        except KeyError as err:
            raise VadasmError(str(err.args[0])) from None
        if not is_built(name):
            raise VadasmError(f"{folder}: testbed artefact {name!r} is not built; run: vadasm testbed build")
        return folder
    from vadasm.io.checkpoint import resolve_model_path

    return resolve_model_path(ref)


@app.command("eval")
def eval_command(
    model: Annotated[list[str], typer.Option(
        "--model", "-m", help="Model folder, Hub id or testbed:NAME (e.g. testbed:llava-smollm2). Repeatable.")],
    compare: Annotated[list[str] | None, typer.Option(
        help="More models scored on the very same items, in the same table. Repeatable.")] = None,
    tasks: Annotated[str, typer.Option(help="Comma-separated: easyvqa, arith, perplexity.")] = "easyvqa",
    split: Annotated[str, typer.Option(
        help="val (for tuning) or test (for reporting); train only to inspect fitting.")] = "test",
    limit: Annotated[int | None, typer.Option(
        help="Items per task, drawn with --seed (default: the whole split; arith: 500).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for item sampling, image shuffling and sampling.")] = 0,
    controls: Annotated[bool, typer.Option(
        "--controls/--no-controls", help="Also run vision tasks blind and with shuffled images.")] = True,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch.")] = 16,
    sample: Annotated[bool, typer.Option("--sample", help="Seeded sampling instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (with --sample).")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (with --sample).")] = 0.95,
    backend: Annotated[str, typer.Option(help="Inference backend: transformers.")] = "transformers",
    device: Device = "cpu",
    predictions: Annotated[bool, typer.Option(
        "--predictions", help="Keep every model reply in the JSON results.")] = False,
    json_out: Annotated[str | None, typer.Option(
        "--json", help="Write the results as JSON to this file ('-' for stdout, then no table).")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the table as Markdown.")] = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate one or more models with the controls that make a score mean something.

    Vision tasks run each vision model three times: with the image, blind (no image: what the
    question's wording alone gives) and with images shuffled across questions. Every model sees
    the same items. Use --split val for anything that feeds a decision (tuning); report test.

    Example: vadasm eval -m testbed:llava-smollm2 --compare testbed:smollm2 --tasks easyvqa --limit 600
    """
    from vadasm.eval.backends import Decoding, load_backend
    from vadasm.eval.harness import evaluate
    from vadasm.eval.report import format_table

    refs = list(model) + list(compare or [])
    paths = [resolve_model(ref) for ref in refs]
    names = _unique_names(refs, paths)
    decoding = Decoding(
        do_sample=sample, temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size
    )
    report = evaluate(
        [(name, partial(load_backend, path, backend, device)) for name, path in zip(names, paths)],
        [t.strip() for t in tasks.split(",") if t.strip()],
        split=split,
        limit=limit,
        seed=seed,
        controls=controls,
        decoding=decoding,
        keep_predictions=predictions,
        progress=not quiet,
    )
    payload = report.to_dict() | {"model_paths": {n: str(p) for n, p in zip(names, paths)}}
    if json_out == "-":
        typer.echo(json.dumps(payload, indent=2))
        return
    if json_out:
        Path(json_out).write_text(json.dumps(payload, indent=2) + "\n")
    if not quiet:
        typer.echo(format_table(report, markdown=markdown))


def _unique_names(refs: list[str], paths: list[Path]) -> list[str]:
    """Short table labels: the reference as typed, made unique if two are alike."""
    names: list[str] = []
    for ref, path in zip(refs, paths):
        name = ref.removeprefix("testbed:") if ref.startswith("testbed:") else path.name or ref
        base, k = name, 2
        while name in names:
            name, k = f"{base}#{k}", k + 1
        names.append(name)
    return names
