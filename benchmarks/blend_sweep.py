"""Time an alpha sweep of SVD sigma blending three ways on the same model pair, in one run.

1. `vadasm blend` with all alphas (one SVD of each after-weight serves every alpha);
2. `vadasm blend` with one alpha (the floor: the SVDs alone);
3. the seed's approach (`replace.py`): for each alpha, load both whole models and take a fresh
   full fp32 SVD of both weights, rebuild U diag(S) Vh, `save_pretrained`.

Each runs in its own subprocess, so its peak RSS is its own. All three blend the same tensors
(every 2-D weight of the same shape, embeddings and LM head included, as the seed and today's
`vadasm blend` default do), and the seed-style outputs are compared with ours to
check that they are the same blend.

    python benchmarks/blend_sweep.py --before BASE --after FINETUNE [--alphas 0,0.2,...]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DEFAULT_ALPHAS = "0,0.2,0.4,0.6,0.8,1.0"


def worker_vadasm(before: str, after: str, alphas: list[float], out: Path) -> dict:
    from vadasm.blend import BlendOptions, run_blend

    result = run_blend(before, after, out, BlendOptions(alphas=alphas, progress=False))
    return {"blended": result.blended}


def worker_seed(before: str, after: str, alphas: list[float], out: Path) -> dict:
    """The seed's loop, faithfully: whole models in RAM, two full SVDs per weight per alpha."""
    import torch
    from transformers import AutoModelForCausalLM

    from vadasm.blend import TensorRoles, TensorSelector
    from vadasm.io import Checkpoint

    ckpt = Checkpoint.open(after)
    roles, selector = TensorRoles(ckpt.config, ckpt.keys()), TensorSelector(include_embeddings=True)
    blended = 0
    for alpha in alphas:
        model_before = AutoModelForCausalLM.from_pretrained(before, dtype=torch.float32)
        model_after = AutoModelForCausalLM.from_pretrained(after, dtype=torch.float32)
        state_before = model_before.state_dict()
        blended = 0
        with torch.no_grad():
            for name, param in model_after.named_parameters():
                other = state_before.get(name)
                if other is None or param.ndim != 2 or other.shape != param.shape:
                    continue
                if selector.reason_to_skip(name, roles):
                    continue
                u_a, s_a, vh_a = torch.linalg.svd(param.float(), full_matrices=False)
                _, s_b, _ = torch.linalg.svd(other.float(), full_matrices=False)
                s = alpha * s_a + (1 - alpha) * s_b
                param.copy_((u_a * s) @ vh_a)
                blended += 1
        folder = out / f"alpha_{alpha:.1f}"
        model_after.save_pretrained(folder, safe_serialization=True)
        for file in ckpt.sidecar_files():  # the tokenizer, taken from the original model as the seed did
            shutil.copy2(file, folder / file.name)
        del model_before, model_after, state_before
    return {"blended": blended}


class AnonPeak:
    """Samples RssAnon every 20 ms: the process's own memory, without memory-mapped file pages.

    ru_maxrss also counts the pages of memory-mapped input files that were touched (reclaimable
    page cache, up to the size of both models when reading through safetensors' mmap)."""

    def __init__(self):
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.02):
            self.sample()

    def sample(self):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.sample()
        return self.peak_kib / 1024


def run_worker(mode: str, before: str, after: str, alphas: str, out: Path, threads: int) -> dict:
    """Run one mode in a fresh interpreter; it reports its own wall time and peak memory."""
    cmd = [sys.executable, __file__, "--worker", mode, "--before", before, "--after", after,
           "--alphas", alphas, "--out", str(out), "--threads", str(threads)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def max_difference(ours: Path, theirs: Path) -> float:
    """Largest |difference| between two checkpoints' tensors of the same names."""
    from safetensors import safe_open

    def tensors(folder: Path):
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), "pt") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)

    mine = dict(tensors(ours))
    worst = 0.0
    for key, tensor in tensors(theirs):
        if key in mine:
            worst = max(worst, float((mine[key].float() - tensor.float()).abs().max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--alphas", default=DEFAULT_ALPHAS)
    parser.add_argument("--single-alpha", default="0.5", help="The alpha of the one-alpha run.")
    parser.add_argument("--workdir", default=None, help="Scratch folder (default: a temporary one, removed).")
    parser.add_argument("--json", default=None, help="Also write the results to this JSON file.")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (1 keeps timings stable on a shared machine).")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        import transformers  # noqa: F401  (imported before the clock starts, as both workers need it)

        import vadasm.blend  # noqa: F401
        alphas = [float(a) for a in args.alphas.split(",")]
        anon = AnonPeak()
        start = time.perf_counter()
        work = {"vadasm": worker_vadasm, "seed": worker_seed}[args.worker]
        info = work(args.before, args.after, alphas, Path(args.out))
        info["seconds"] = time.perf_counter() - start
        info["peak_anon_mib"] = anon.stop()
        info["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(info))
        return

    from vadasm.io import Checkpoint

    work = Path(args.workdir or tempfile.mkdtemp(prefix="blend_sweep_"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint.open(args.after)
    largest = max(ckpt.entries.values(), key=lambda e: e.end - e.begin)
    n_alphas = len(args.alphas.split(","))
    runs = {}
    try:
        runs["sweep"] = run_worker("vadasm", args.before, args.after, args.alphas, work / "sweep", args.threads)
        runs["single"] = run_worker("vadasm", args.before, args.after, args.single_alpha, work / "single", args.threads)
        runs["seed"] = run_worker("seed", args.before, args.after, args.alphas, work / "seed", args.threads)
        check_alpha = f"alpha_{float(args.alphas.split(',')[len(args.alphas.split(',')) // 2]):.1f}"
        difference = max_difference(work / "sweep" / check_alpha, work / "seed" / check_alpha)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    results = {
        "before": args.before, "after": args.after, "alphas": args.alphas, "threads": args.threads,
        "model_parameters": ckpt.num_parameters(), "largest_tensor_mib": (largest.end - largest.begin) / 2**20,
        "runs": runs,
        "sweep_over_single": runs["sweep"]["seconds"] / runs["single"]["seconds"],
        "seed_over_sweep": runs["seed"]["seconds"] / runs["sweep"]["seconds"],
        f"max_abs_diff_vs_seed_{check_alpha}": difference,
    }
    print(f"model: {args.after} ({ckpt.num_parameters() / 1e6:.0f}M parameters), "
          f"{runs['sweep']['blended']} weights blended, {args.threads} torch thread(s) per run")
    print(f"{'run':<34}{'seconds':>9}{'peak RSS MiB':>14}{'peak anon MiB':>15}")
    names = {"sweep": f"vadasm blend, {n_alphas} alphas", "single": "vadasm blend, 1 alpha",
             "seed": f"seed approach, {n_alphas} alphas"}
    for key, label in names.items():
        run = runs[key]
        print(f"{label:<34}{run['seconds']:>9.1f}{run['peak_rss_mib']:>14.0f}{run['peak_anon_mib']:>15.0f}")
    print(f"{n_alphas} alphas / 1 alpha: {results['sweep_over_single']:.2f}x (target <= 1.5x)")
    print(f"seed approach / vadasm: {results['seed_over_sweep']:.1f}x faster (target >= 4x)")
    print(f"max |vadasm - seed| at {check_alpha}: {difference:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
