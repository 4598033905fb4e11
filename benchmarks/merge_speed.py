"""Time and peak memory of `vadasm merge` against mergekit on synthetic Llama checkpoints.

For each size it writes a bf16 base and two "fine-tunes" (benchmarks/synthetic.py; cached in
--workdir between runs), then runs both tools on the same recipe, one method at a time, each as
its own child process: wall time, CPU time and peak RSS of that child (GNU time; memory-mapped
file pages that were touched count, as the kernel counts them), then compares the two outputs
tensor by tensor. Also times `vadasm blend` (the SVD sweep) on the sizes given by --blend-sizes.

    python benchmarks/merge_speed.py --sizes 135M,1B,3B --mergekit /path/to/mergekit-venv/bin/mergekit-yaml

Recipes compute in fp32 (`dtype: float32`) and write bf16 (`out_dtype: bfloat16`) in both
tools. DARE and DELLA draw their random masks from different generators in the two tools, so their outputs
are compared by statistics (fraction of entries changed, mean |merged - base|), not equality;
benchmarks/mergekit_parity.py checks DARE equality at density 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import SIZES, cached_model, largest_tensor_bytes, num_parameters  # noqa: E402

from vadasm.io import Checkpoint  # noqa: E402

METHODS: dict[str, dict] = {
    "linear": {"parameters": {}, "model_params": [{"weight": 0.5}, {"weight": 0.5}]},
    "task_arithmetic": {"parameters": {"lambda": 1.0}, "model_params": [{"weight": 0.6}, {"weight": 0.4}]},
    "ties": {"parameters": {"normalize": True}, "model_params": [{"weight": 0.5, "density": 0.5},
                                                                 {"weight": 0.5, "density": 0.5}]},
    "dare_ties": {"parameters": {}, "model_params": [{"weight": 0.5, "density": 0.5},
                                                     {"weight": 0.5, "density": 0.5}]},
    "model_stock": {"parameters": {}, "model_params": [{}, {}]},
    "della": {"parameters": {}, "model_params": [{"weight": 0.5, "density": 0.5, "epsilon": 0.1},
                                                 {"weight": 0.5, "density": 0.5, "epsilon": 0.1}]},
    "passthrough": {"parameters": {}, "model_params": []},  # a frankenmerge: see write_recipe
}
GIB = 2**30
TIME = "/usr/bin/time"  # GNU time: the child's peak RSS, free of this process's memory


@dataclass
class Run:
    seconds: float
    cpu_seconds: float  # user + system: less sensitive than wall time to other jobs on a shared machine
    peak_rss_bytes: int
    returncode: int
    stderr_tail: str = ""
    load_before: float | None = None  # 1-minute load average when the child started (shared machines)


@dataclass
class Row:
    size: str
    method: str
    vadasm: Run
    mergekit: Run | None
    max_abs_diff: float | None = None
    differing_fraction: float | None = None
    changed_fraction: tuple[float, float] | None = None  # entries != base: vadasm, mergekit
    mean_abs_delta: tuple[float, float] | None = None  # mean |merged - base|: vadasm, mergekit


def timed(cmd: list[str]) -> Run:
    """Run one child under /usr/bin/time: wall time, CPU time and the child's own peak RSS.

    Not os.wait4 from this process: a child spawned by fork/vfork starts its peak-RSS record at
    this (large, after comparing outputs) process's RSS, which inflated later runs' numbers.

    Dirty pages are flushed first (`sync`): otherwise the previous run's output (gigabytes) is still being
    written back while this one runs, and whichever tool runs second pays for the first one's writes."""
    os.sync()
    load = os.getloadavg()[0]
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        started = time.perf_counter()
        proc = subprocess.run([TIME, "-f", "%U %S %M", "-o", report.name, *cmd], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        user, system, max_kib = report.read().split()[-3:]
    return Run(round(seconds, 2), round(float(user) + float(system), 2), int(max_kib) * 1024, proc.returncode,
               proc.stderr[-2000:], round(load, 2))


def write_recipe(path: Path, method: str, base: Path, models: list[Path], dtype: str) -> Path:
    spec = METHODS[method]
    raw = {"merge_method": method, "dtype": dtype, "out_dtype": "bfloat16", "parameters": spec["parameters"],
           "models": [{"model": str(m), "parameters": p} for m, p in zip(models, spec["model_params"])]}
    if method == "passthrough":  # layer stacking: all of one fine-tune's layers, then the top half of the other's
        layers = json.loads((models[0] / "config.json").read_text())["num_hidden_layers"]
        raw.pop("models")
        raw["slices"] = [{"sources": [{"model": str(models[0]), "layer_range": [0, layers]}]},
                         {"sources": [{"model": str(models[1]), "layer_range": [layers // 2, layers]}]}]
    elif method != "linear":
        raw["base_model"] = str(base)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def compare(ours: Path, theirs: Path, base: Path) -> dict:
    """Max |ours - theirs|, fraction of differing entries, and per-tool change statistics (against the
    base; a layer the base lacks, as in a frankenmerge, counts against zero)."""
    a, b, ref = Checkpoint.open(ours), Checkpoint.open(theirs), Checkpoint.open(base)
    if set(a.keys()) != set(b.keys()):
        missing = sorted(set(a.keys()) ^ set(b.keys()))
        raise SystemExit(f"{ours} and {theirs}: tensor names differ, e.g. {missing[:3]}")
    worst, differing, total = 0.0, 0, 0
    changed, moved = [0, 0], [0.0, 0.0]
    for name in a.keys():
        x, y = a.get(name).float(), b.get(name).float()
        z = ref.get(name).float() if name in ref else torch.zeros_like(x)  # stacked layers: no base tensor
        diff = (x - y).abs()
        worst = max(worst, diff.max().item())
        differing += int((diff > 0).sum())
        total += x.numel()
        for i, out in enumerate((x, y)):
            delta = (out - z).abs()
            changed[i] += int((delta > 0).sum())
            moved[i] += delta.sum(dtype=torch.float64).item()
    return {"max_abs_diff": worst, "differing_fraction": differing / total,
            "changed_fraction": (changed[0] / total, changed[1] / total),
            "mean_abs_delta": (moved[0] / total, moved[1] / total)}


def run_size(size: str, args, models_root: Path, out_root: Path) -> list[Row]:
    print(f"[{size}] preparing synthetic models ({num_parameters(size) / 1e9:.2f}B parameters each)", flush=True)
    base, *models = [cached_model(models_root, size, v) for v in (0, 1, 2)]
    rows = []
    for i, method in enumerate(args.methods):
        recipe = write_recipe(out_root / f"{size}-{method}.yaml", method, base, models, args.recipe_dtype)
        ours, theirs = out_root / f"{size}-{method}-vadasm", out_root / f"{size}-{method}-mergekit"
        vadasm_cmd = [args.vadasm, "merge", str(recipe), str(ours), "--quiet", "--force", "--device", args.device]
        mergekit_cmd = None if args.skip_mergekit else [
            args.mergekit, str(recipe), str(theirs), "--no-copy-tokenizer", "--quiet", "--no-write-model-card"]
        if args.device == "cuda" and mergekit_cmd:
            mergekit_cmd.append("--cuda")
        # alternate which tool goes first, so neither always meets a cold page cache
        order = ["vadasm", "mergekit"] if i % 2 == 0 else ["mergekit", "vadasm"]
        runs: dict[str, Run | None] = {"mergekit": None}
        for tool in order:
            cmd = vadasm_cmd if tool == "vadasm" else mergekit_cmd
            if cmd is None:
                continue
            print(f"[{size}] {method}: {tool} ...", end=" ", flush=True)
            runs[tool] = timed(cmd)
            run = runs[tool]
            print(f"{run.seconds:.1f}s ({run.cpu_seconds:.1f}s CPU), {run.peak_rss_bytes / GIB:.2f} GiB, "
                  f"load average {run.load_before:.2f} at start", flush=True)
            if run.returncode != 0:
                raise SystemExit(f"{tool} failed on {size} {method} (exit {run.returncode}):\n{run.stderr_tail}")
        row = Row(size, method, runs["vadasm"], runs["mergekit"])
        if runs["mergekit"] is not None:
            stats = compare(ours, theirs, base)
            row.max_abs_diff, row.differing_fraction = stats["max_abs_diff"], stats["differing_fraction"]
            row.changed_fraction, row.mean_abs_delta = stats["changed_fraction"], stats["mean_abs_delta"]
            print(f"[{size}] {method}: max |vadasm - mergekit| {row.max_abs_diff:.3g}, entries differing "
                  f"{row.differing_fraction:.2e}, changed from base {row.changed_fraction[0]:.1%} vs "
                  f"{row.changed_fraction[1]:.1%}", flush=True)
        rows.append(row)
        for folder in (ours, theirs):
            shutil.rmtree(folder, ignore_errors=True)
    return rows


def run_blend(size: str, args, models_root: Path, out_root: Path) -> dict:
    base, ft = cached_model(models_root, size, 0), cached_model(models_root, size, 1)
    out = out_root / f"{size}-blend"
    print(f"[{size}] blend (alphas {args.alphas}) ...", end=" ", flush=True)
    run = timed([args.vadasm, "blend", "--before", str(base), "--after", str(ft), "--alphas", args.alphas,
                 "--output", str(out), "--quiet", "--force"])
    print(f"{run.seconds:.1f}s ({run.cpu_seconds:.1f}s CPU), {run.peak_rss_bytes / GIB:.2f} GiB", flush=True)
    if run.returncode != 0:
        raise SystemExit(f"vadasm blend failed on {size} (exit {run.returncode}):\n{run.stderr_tail}")
    shutil.rmtree(out, ignore_errors=True)
    return {"size": size, "alphas": args.alphas, **asdict(run)}


def print_tables(rows: list[Row], blends: list[dict]) -> None:
    print("\n| size | method | vadasm s | mergekit s | time ratio | CPU s vadasm / mergekit | CPU ratio "
          "| vadasm peak RSS | mergekit peak RSS | RSS ratio | max abs diff (bf16 out) | entries differing |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mk = r.mergekit
        time_ratio = f"{r.vadasm.seconds / mk.seconds:.2f}x" if mk else "-"
        cpu = f"{r.vadasm.cpu_seconds:.1f} / {mk.cpu_seconds:.1f}" if mk else f"{r.vadasm.cpu_seconds:.1f} / -"
        cpu_ratio = f"{r.vadasm.cpu_seconds / mk.cpu_seconds:.2f}x" if mk else "-"
        rss_ratio = f"{r.vadasm.peak_rss_bytes / mk.peak_rss_bytes:.2f}x" if mk else "-"
        if r.method.startswith(("dare", "della")) and r.changed_fraction:
            equality = "random masks differ"
            differing = (f"changed {r.changed_fraction[0]:.1%} vs {r.changed_fraction[1]:.1%}; mean |Δ| "
                         f"{r.mean_abs_delta[0]:.3g} vs {r.mean_abs_delta[1]:.3g}")
        else:
            equality = f"{r.max_abs_diff:.3g}" if r.max_abs_diff is not None else "-"
            differing = f"{r.differing_fraction:.2e}" if r.differing_fraction is not None else "-"
        mk_rss = f"{mk.peak_rss_bytes / GIB:.2f} GiB" if mk else "-"
        print(f"| {r.size} | {r.method} | {r.vadasm.seconds:.1f} | {mk.seconds if mk else '-'} | {time_ratio} "
              f"| {cpu} | {cpu_ratio} | {r.vadasm.peak_rss_bytes / GIB:.2f} GiB | {mk_rss} "
              f"| {rss_ratio} | {equality} | {differing} |")
    sizes = list(dict.fromkeys(r.size for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    print("\nScaling (vadasm; seconds / peak RSS GiB; largest tensor in bf16):\n")
    print("| size | parameters | largest tensor | " + " | ".join(methods) + " | peak RSS / largest tensor |")
    print("|---|---|---|" + "---|" * len(methods) + "---|")
    for size in sizes:
        cells, worst = [], 0
        for method in methods:
            r = next((r for r in rows if r.size == size and r.method == method), None)
            cells.append(f"{r.vadasm.seconds:.1f} s / {r.vadasm.peak_rss_bytes / GIB:.2f}" if r else "-")
            worst = max(worst, r.vadasm.peak_rss_bytes if r else 0)
        largest = largest_tensor_bytes(size)
        print(f"| {size} | {num_parameters(size) / 1e9:.2f}B | {largest / GIB:.2f} GiB | " + " | ".join(cells)
              + f" | {worst / largest:.1f}x |")
    if blends:
        print("\n| size | vadasm blend alphas | seconds | CPU s | peak RSS |")
        print("|---|---|---|---|---|")
        for b in blends:
            print(f"| {b['size']} | {b['alphas']} | {b['seconds']:.1f} | {b['cpu_seconds']:.1f} "
                  f"| {b['peak_rss_bytes'] / GIB:.2f} GiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="135M,1B,3B", help=f"comma-separated, from {', '.join(SIZES)} (7B: opt-in)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated merge methods")
    parser.add_argument("--mergekit", default="mergekit-yaml",
                        help="mergekit-yaml executable (mergekit pins its own deps: give it its own venv)")
    parser.add_argument("--skip-mergekit", action="store_true", help="time vadasm alone")
    parser.add_argument("--vadasm", default=shutil.which("vadasm") or str(Path(sys.executable).parent / "vadasm"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both tools)")
    parser.add_argument("--recipe-dtype", default="float32", help="recipe `dtype` (the math dtype in mergekit)")
    parser.add_argument("--blend-sizes", default="135M,1B", help="sizes for `vadasm blend`; empty to skip")
    parser.add_argument("--alphas", default="0,0.5,1", help="alphas of the blend sweep")
    parser.add_argument("--workdir", default=None, help="where synthetic models are cached (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    args = parser.parse_args()
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [s for s in args.sizes if s not in SIZES] + [m for m in args.methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown size or method: {', '.join(unknown)}")
    if not args.skip_mergekit and not Path(args.mergekit).is_file():
        raise SystemExit(f"mergekit-yaml not found at {args.mergekit}: install mergekit in its own venv "
                         "(python -m venv mkvenv && mkvenv/bin/pip install mergekit), then pass "
                         "--mergekit mkvenv/bin/mergekit-yaml; or --skip-mergekit to time vadasm alone")
    if not Path(TIME).is_file():
        raise SystemExit(f"{TIME} not found: install GNU time (apt-get install time) to measure peak RSS")
    if not Path(args.vadasm).is_file():
        raise SystemExit(f"vadasm executable not found at {args.vadasm}; pass --vadasm PATH")

    temp = Path(tempfile.mkdtemp(prefix="vadasm-speed-"))
    models_root = Path(args.workdir) if args.workdir else temp / "models"
    try:
        rows = [row for size in args.sizes for row in run_size(size, args, models_root, temp)]
        blend_sizes = [s for s in args.blend_sizes.split(",") if s]
        blends = [run_blend(size, args, models_root, temp) for size in blend_sizes]
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    print_tables(rows, blends)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
            "rows": [asdict(r) for r in rows], "blend": blends}, indent=2) + "\n")


if __name__ == "__main__":
    main()
