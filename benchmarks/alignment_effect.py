"""Does Hungarian alignment change a merge? Measured on the testbed, with a null model.

    python benchmarks/alignment_effect.py [--limit 200] [--out results/alignment.json]

Pair: SmolLM2-135M-Instruct (base, testbed `smollm2`) and its arithmetic fine-tune (`smollm2-arith`).
1. Alignment of the fine-tune to the base by weights and by activations (held-out validation
   prose): how many units move, distance to the base before/after.
2. TIES merge (density 0.5, weight 1) of base + fine-tune, plain and with --align: relative
   weight difference between the two merges; both scored if they differ.
3. Null model: the fine-tune with every MLP neuron and head randomly permuted (same function:
   logits compared). Merging it without alignment, and with --align, beside base, fine-tune and
   the plain merge, on held-out arithmetic (test split) and perplexity (test prose). Arms whose
   weights equal an already scored arm's are not scored again (identical weights, identical scores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vadasm.align import align_checkpoints, random_alignment, write_permuted
from vadasm.arch import architecture_for
from vadasm.eval.backends import TransformersBackend
from vadasm.eval.harness import evaluate
from vadasm.io import Checkpoint
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge
from vadasm.testbed.paths import artefact_dir, is_built


def ties(base: Path, model: Path) -> object:
    return recipe_from_dict({"merge_method": "ties", "base_model": str(base),
                             "models": [{"model": str(model), "parameters": {"weight": 1.0, "density": 0.5}}]})


def relative_difference(a: Path, b: Path) -> dict:
    ca, cb = Checkpoint.open(a), Checkpoint.open(b)
    num = den = 0.0
    changed = 0
    for name in ca.keys():
        x, y = ca.get(name).float(), cb.get(name).float()
        num += float((x - y).pow(2).sum())
        den += float(x.pow(2).sum())
        changed += not torch.equal(x, y)
    return {"relative_frobenius": (num / den) ** 0.5 if den else 0.0, "tensors_differing": changed,
            "tensors": len(ca.keys())}


@torch.no_grad()
def max_logit_difference(a: Path, b: Path) -> float:
    """Largest |logit| difference between two models on held-out validation prose."""
    from transformers import AutoModelForCausalLM

    from vadasm.align.activations import validation_token_ids

    ids = validation_token_ids(a, max_tokens=512)
    worst = 0.0
    models = [AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval() for p in (a, b)]
    for batch in ids:
        worst = max(worst, float((models[0](input_ids=batch).logits - models[1](input_ids=batch).logits).abs().max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=100, help="arithmetic test problems per model")
    parser.add_argument("--work", default="/tmp/vadasm-alignment")
    parser.add_argument("--out", default="results/alignment.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-eval", action="store_true", help="weights and logits only, no task scores")
    args = parser.parse_args()
    missing = [a for a in ("smollm2", "smollm2-arith") if not is_built(a)]
    if missing:
        raise SystemExit(f"testbed artefacts not built: {', '.join(missing)} (run `vadasm testbed build`)")
    started = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base_dir, tuned_dir = artefact_dir("smollm2"), artefact_dir("smollm2-arith")
    base, tuned = Checkpoint.open(base_dir), Checkpoint.open(tuned_dir)
    arch = architecture_for(base.config, base.keys())
    record: dict = {"base": str(base_dir), "fine_tune": str(tuned_dir), "limit": args.limit, "seed": args.seed}

    for kind in ("weights", "activations"):
        t = time.time()
        report = align_checkpoints(base, [tuned], arch, kind)[tuned.path].report
        record[f"align_{kind}"] = {**report.summary(), "seconds": round(time.time() - t, 1),
                                   "groups_moved": [g.group for g in report.groups if g.moved]}
        print(kind, record[f"align_{kind}"])

    quiet = MergeOptions(progress=False, force=True)
    merges = {"merge_plain": work / "merge_plain", "merge_aligned": work / "merge_aligned"}
    run_merge(ties(base_dir, tuned_dir), merges["merge_plain"], quiet)
    run_merge(ties(base_dir, tuned_dir), merges["merge_aligned"], MergeOptions(progress=False, force=True,
                                                                              align="weights"))
    record["plain_vs_aligned_merge"] = relative_difference(merges["merge_plain"], merges["merge_aligned"])
    print("plain vs aligned merge", record["plain_vs_aligned_merge"])

    shuffled = work / "fine_tune_shuffled"
    null = random_alignment(tuned, arch, seed=args.seed)
    write_permuted(tuned, null, shuffled, {"null_model": "random permutation of every group"}, force=True,
                   progress=False)
    run_merge(ties(base_dir, shuffled), work / "merge_shuffled_plain", quiet)
    run_merge(ties(base_dir, shuffled), work / "merge_shuffled_aligned",
              MergeOptions(progress=False, force=True, align="weights"))
    record["null_model"] = {
        "moved_fraction": null.report.moved_fraction,
        "shuffled_aligned_vs_plain_merge": relative_difference(merges["merge_plain"],
                                                               work / "merge_shuffled_aligned"),
        "shuffled_unaligned_vs_plain_merge": relative_difference(merges["merge_plain"], work / "merge_shuffled_plain"),
    }
    print("null model", record["null_model"])

    record["null_model"]["shuffled_vs_fine_tune_max_logit_difference"] = max_logit_difference(tuned_dir, shuffled)
    # Identical weights give identical scores: only arms whose weights differ from a scored arm are scored.
    arms = {"base (smollm2)": base_dir, "fine-tune (smollm2-arith)": tuned_dir, "merge": merges["merge_plain"],
            "merge with shuffled, no align": work / "merge_shuffled_plain"}
    if record["null_model"]["shuffled_aligned_vs_plain_merge"]["tensors_differing"]:
        arms["merge with shuffled, --align"] = work / "merge_shuffled_aligned"
    if record["plain_vs_aligned_merge"]["tensors_differing"]:
        arms["merge --align"] = merges["merge_aligned"]
    record["seconds_before_eval"] = round(time.time() - started, 1)
    if args.no_eval:
        arms = {}
    report = evaluate([(name, lambda p=path: TransformersBackend(p)) for name, path in arms.items()],
                      ["arith", "perplexity"], split="test", limit=args.limit, seed=args.seed)
    record["scores"] = [{"model": s.model, "task": s.task, "metric": s.metric, "value": s.value, "n": s.n,
                         "groups": s.groups} for s in report.scores]
    for s in report.scores:
        print(f"{s.model:>40} {s.task:>10} {s.metric} {s.value:.4f} (n={s.n})")
    record["seconds"] = round(time.time() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
