#!/usr/bin/env python
"""Speed-up of `vadasm eval --ray`: a 6-alpha blend sweep evaluated by 1 Ray worker, then by 2.

    python benchmarks/ray_scale.py    # SmolLM2-135M from the testbed (vadasm testbed build --only smollm2)
    python benchmarks/ray_scale.py --before ./base --after ./ft --limit 20

Without --after, the "after" model is the "before" model with seeded Gaussian noise added to every
2-D weight (std = --perturb x the weight's own std): a stand-in for a fine-tune, enough to make the
six blended models differ; the timing does not depend on what the weights mean. The sweep is made
once with `vadasm blend` (alphas 0, 0.2, ..., 1.0) and reused. Each measurement is one
`vadasm eval --models-from SWEEP --ray local --workers N` run in a fresh process (a private Ray with N
CPUs, one single-threaded task per model), timed from start to exit, Ray start-up included; the
span of its tasks (first start to last end, from the report's ray.tasks) is printed beside it.
Other jobs on the machine slow both runs: the load averages before and after each run are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def vadasm(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "vadasm", *args], check=True)


def perturbed_after(before: Path, after: Path, scale: float, seed: int) -> Path:
    """`before` with seeded noise on every 2-D float weight (a stand-in fine-tune, not a trained one)."""
    import torch
    from safetensors.torch import load_file, save_file

    if after.exists():
        return after
    tmp = after.with_name(after.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(before, tmp, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json"))
    generator = torch.Generator().manual_seed(seed)
    for shard in sorted(before.glob("*.safetensors")):
        tensors = load_file(shard)
        for name, tensor in tensors.items():
            if tensor.ndim == 2 and tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=generator) * (scale * tensor.float().std())
                tensors[name] = (tensor.float() + noise).to(tensor.dtype)
        save_file(tensors, tmp / shard.name, metadata={"format": "pt"})
    for index in before.glob("*.safetensors.index.json"):
        shutil.copy(index, tmp / index.name)
    tmp.rename(after)
    return after


def resolve(ref: str) -> Path:
    from vadasm.cli.eval_cmd import resolve_model

    return resolve_model(ref).absolute()


def timed_eval(sweep: Path, workers: int, tasks: str, limit: int, report: Path) -> dict:
    load_before = os.getloadavg()
    started = time.perf_counter()
    vadasm("eval", "--models-from", str(sweep), "--tasks", tasks, "--limit", str(limit), "--no-controls",
           "--ray", "local", "--workers", str(workers), "--json-out", str(report), "-q")
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    spans = json.loads(report.read_text())["ray"]["tasks"]
    first, last = min(t["started"] for t in spans), max(t["finished"] for t in spans)
    return {"workers": workers, "wall_seconds": round(wall, 1), "task_span_seconds": round(last - first, 1),
            "task_seconds": [round(t["finished"] - t["started"], 1) for t in spans],
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="testbed:smollm2", help="folder or testbed:NAME")
    parser.add_argument("--after", default=None, help="folder; default: --before plus seeded noise")
    parser.add_argument("--perturb", type=float, default=0.02, help="noise std as a fraction of each weight's std")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vadasm-ray-scale"), help="models and sweep go here")
    parser.add_argument("--tasks", default="arith")
    parser.add_argument("--limit", type=int, default=24, help="items per model")
    parser.add_argument("--out", type=Path, default=Path("results/scale_out"))
    args = parser.parse_args(argv)

    before = resolve(args.before)
    args.work.mkdir(parents=True, exist_ok=True)
    after = resolve(args.after) if args.after else perturbed_after(before, args.work / "after", args.perturb, seed=0)
    sweep = args.work / "sweep"
    if not sweep.exists():
        vadasm("blend", "--before", str(before), "--after", str(after), "--output", str(sweep), "--quiet")
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [timed_eval(sweep, workers, args.tasks, args.limit, args.out / f"eval_{workers}_workers.json")
            for workers in (1, 2)]
    ratio = runs[0]["wall_seconds"] / runs[1]["wall_seconds"]
    span_ratio = runs[0]["task_span_seconds"] / runs[1]["task_span_seconds"]
    summary = {"before": str(before), "after": str(after), "after_is_perturbed_copy": args.after is None,
               "perturb": args.perturb if args.after is None else None, "sweep": str(sweep),
               "models": sorted(p.name for p in sweep.glob("alpha_*")), "tasks": args.tasks, "limit": args.limit,
               "cpu_count": os.cpu_count(), "runs": runs, "speedup_wall": round(ratio, 2),
               "speedup_task_span": round(span_ratio, 2)}
    (args.out / "ray_scale.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"{r['workers']} Ray worker(s): {r['wall_seconds']:.1f} s wall "
             f"(tasks span {r['task_span_seconds']:.1f} s), "
             f"load average {r['load_average_before'][0]:.2f} -> {r['load_average_after'][0]:.2f}" for r in runs]
    lines.append(f"speed-up 2 vs 1 workers: {ratio:.2f}x wall, {span_ratio:.2f}x task span "
                 f"({len(summary['models'])} models, {args.tasks}, {args.limit} items each, {os.cpu_count()} CPUs)")
    (args.out / "ray_scale.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
