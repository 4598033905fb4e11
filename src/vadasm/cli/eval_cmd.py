"""`vadasm eval`: score models on tasks with controls, on identical items, as a table and JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from vadasm.cli.app import app
from vadasm.cli.common import AsJson, Device, Quiet, check_run_flags
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
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="Model folder, Hub id or testbed:NAME (e.g. testbed:llava-smollm2). Repeatable.")]
        = None,
    compare: Annotated[list[str] | None, typer.Option(
        help="More models scored on the very same items, in the same table. Repeatable.")] = None,
    tasks: Annotated[str, typer.Option(
        help="Comma-separated: easyvqa, arith, perplexity; benchmarks (need --data): vqav2, okvqa, mmlu, gsm8k, "
             "math500, aime24, aime25, amc23.")] = "easyvqa",
    data: Annotated[list[str] | None, typer.Option(
        help="Benchmark data TASK=SOURCE: a local .jsonl/.json/.parquet file, or a Hub dataset id "
             "(owner/name[:config], needs network and `datasets`); for vqav2/okvqa also the official "
             "files, QUESTIONS.json,ANNOTATIONS.json,IMAGES_DIR. Repeatable.")] = None,
    samples: Annotated[int, typer.Option(
        help="Math benchmarks: samples per problem (pass@1 over them; needs --sample when > 1).")] = 1,
    max_new_tokens: Annotated[int | None, typer.Option(
        help="Override the task's reply length (math default 2048).")] = None,
    prompt_format: Annotated[str | None, typer.Option(
        help="Question wording of the tasks that offer a choice (easyvqa, vqav2, okvqa): bare (the question "
             "alone) or short-answer (LLaVA-1.5's suffix 'Answer the question using a single word or phrase.'). "
             "Default: each task's own (easyvqa bare, vqav2/okvqa short-answer); the JSON records it.")] = None,
    models_from: Annotated[Path | None, typer.Option(
        help="Also evaluate every model folder under this one (e.g. a blend sweep's alpha_* folders).")] = None,
    gpus: Annotated[str | None, typer.Option(
        help="Spread the models over these GPUs, one process each: '0,1,2' or 'all' (uses cuda).")] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="Spread the models over a Ray cluster, one task each (one GPU each with --device cuda): "
                      "HEAD:6379, 'auto' (the cluster `ray start` began here) or 'local' (a private Ray).")] = None,
    workers: Annotated[int | None, typer.Option(
        help="With --ray: at most this many models at once (default: every slot of the cluster; "
             "--ray local: a local Ray with this many CPUs).")] = None,
    plot: Annotated[Path | None, typer.Option(
        help="Save a plot of each model's headline score per task (a curve over alpha for alpha_* folders).")]
        = None,
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
    backend: Annotated[str, typer.Option(
        help="transformers, vllm (GPU; extra \\[gpu]) or lm-eval (mmlu/gsm8k through lm-eval).")] = "transformers",
    device: Device = "cpu",
    predictions: Annotated[bool, typer.Option(
        "--predictions", help="Keep every model reply in the JSON results.")] = False,
    as_json: AsJson = False,
    json_out: Annotated[Path | None, typer.Option(
        "--json-out", help="Also write the results as JSON to this file.")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the table as Markdown.")] = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate one or more models with the controls that make a score mean something.

    Vision tasks run each vision model three times: with the image, blind (no image: what the
    question's wording alone gives) and with images shuffled across questions. Every model sees
    the same items. Use --split val for anything that feeds a decision (tuning); report test.

    Example: vadasm eval -m testbed:llava-smollm2 --compare testbed:smollm2 --tasks easyvqa --limit 600
    """
    from vadasm.eval.backends import Decoding
    from vadasm.eval.benchmarks.data import parse_sources
    from vadasm.eval.benchmarks.multi import evaluate_all, model_folders, plot_report
    from vadasm.eval.report import format_table
    from vadasm.scale import RayPool

    if ray and gpus:
        raise VadasmError("--ray places each model on a GPU of the cluster itself; drop --gpus (use --device cuda)")
    if workers is not None and not ray:
        raise VadasmError("--workers is for --ray (local GPUs: --gpus)")
    device = check_run_flags(device=device, device_here=not ray)
    refs = list(model or []) + list(compare or [])
    if models_from is not None:
        refs += [str(p) for p in model_folders(models_from)]
    if not refs:
        raise VadasmError("no model to evaluate: give --model (and/or --compare, --models-from)")
    paths = [resolve_model(ref).absolute() for ref in refs]  # absolute: Ray workers may run elsewhere
    names = _unique_names(refs, paths)
    decoding = Decoding(
        do_sample=sample, temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size
    )
    gpu_list = _gpu_list(gpus)
    pool = RayPool(ray, gpus_per_task=1 if device.startswith("cuda") else 0, workers=workers) if ray else None
    try:
        report = evaluate_all(
            list(zip(names, paths)),
            [t.strip() for t in tasks.split(",") if t.strip()],
            split=split,
            limit=limit,
            seed=seed,
            controls=controls,
            decoding=decoding,
            data=absolute_sources(parse_sources(data)),
            samples=samples,
            max_new_tokens=max_new_tokens,
            backend=backend,
            device="cuda" if gpu_list else device,
            gpus=gpu_list,
            keep_predictions=predictions,
            progress=not quiet and not as_json,
            pool=pool,
            prompt_format=prompt_format,
        )
    finally:
        if pool is not None:
            pool.close()
    if plot is not None:
        plot_report(report, plot)
    payload = report.to_dict() | {"model_paths": {n: str(p) for n, p in zip(names, paths)}}
    if pool is not None:  # where and when each model ran: shows the tasks overlapping
        payload["ray"] = {"address": ray, "slots": pool.slots, "tasks": [asdict(r) for r in pool.records]}
    if json_out:
        json_out.write_text(json.dumps(payload, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
    elif not quiet:
        typer.echo(format_table(report, markdown=markdown))


def absolute_sources(sources: dict[str, str]) -> dict[str, str]:
    """Benchmark data files as absolute paths (Ray workers run in another directory); Hub ids unchanged."""
    from vadasm.eval.benchmarks.vqa_files import absolute_official_spec, is_official_spec

    return {task: str(Path(source).absolute()) if Path(source).exists()
            else absolute_official_spec(source) if is_official_spec(source) else source
            for task, source in sources.items()}


def _gpu_list(gpus: str | None) -> list[str] | None:
    """GPU indices for --gpus, checked against the GPUs this torch can see (CPU-only torch: one line)."""
    if gpus is None:
        return None
    found = [g.strip() for g in gpus.split(",") if g.strip()]
    if gpus != "all" and (not found or not all(g.isdigit() for g in found)):
        raise VadasmError(f"--gpus {gpus!r}: give GPU indices like 0,1 or 'all'")
    import torch

    if not torch.cuda.is_available():
        build = f"torch {torch.__version__} built without CUDA" if torch.version.cuda is None else \
            f"torch {torch.__version__} sees no CUDA GPU"
        raise VadasmError(f"--gpus {gpus}: {build}; evaluate on CPU without --gpus, or install a CUDA torch")
    count = torch.cuda.device_count()
    if gpus == "all":
        return [str(k) for k in range(count)]
    missing = [g for g in found if int(g) >= count]
    if missing:
        raise VadasmError(f"--gpus {gpus}: no GPU {', '.join(missing)} (this machine has {count})")
    return found


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
