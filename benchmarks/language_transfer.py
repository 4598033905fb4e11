"""Cross-size language transfer Gemma-3-270M -> SmolLM2-135M, beside its two controls.

    python benchmarks/language_transfer.py [--betas 0.02 0.05 0.1] [--limit 200] [--out results/language_transfer.json]

For each beta: `vadasm transfer --language-transfer` (difference mode: the donor's MLP neurons,
mapped into SmolLM2's residual coordinates and matched to SmolLM2's neurons, minus SmolLM2's), and
its random delta of matched norm. All arms and the zero delta (SmolLM2 itself) are scored in one
run on the same held-out items: arithmetic (test split) and perplexity (test prose). Widths differ
(640 vs 576), depths differ (18 vs 30 layers), MLP widths differ (2048 vs 1536).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vadasm.eval.backends import TransformersBackend
from vadasm.eval.harness import evaluate
from vadasm.testbed.paths import artefact_dir, is_built
from vadasm.transfer import TransferOptions, TransferResult, language_transfer, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--betas", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    parser.add_argument("--limit", type=int, default=200, help="arithmetic test problems per model")
    parser.add_argument("--map-method", default="lstsq")
    parser.add_argument("--work", default="/tmp/vadasm-language-transfer")
    parser.add_argument("--out", default="results/language_transfer.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="reuse transfers already written under --work")
    args = parser.parse_args()
    missing = [a for a in ("smollm2", "gemma3-270m") if not is_built(a)]
    if missing:
        raise SystemExit(f"testbed artefacts not built: {', '.join(missing)} (run `vadasm testbed build`)")
    started = time.time()
    work = Path(args.work)
    recipient, donor = artefact_dir("smollm2"), artefact_dir("gemma3-270m")
    arms = {"zero_delta": recipient}
    record: dict = {"recipient": str(recipient), "donor": str(donor), "limit": args.limit, "seed": args.seed,
                    "map_method": args.map_method, "transfers": {}}
    for beta in args.betas:
        out = work / f"beta{beta}"
        if args.reuse and (out / "vadasm_config.json").is_file():
            result = TransferResult(**json.loads((out / "vadasm_config.json").read_text())["result"])
        else:
            result = language_transfer(recipient, donor, out, options=TransferOptions(
                beta=beta, map_method=args.map_method, seed=args.seed, force=True, progress=False))
        layers = result.layers
        record["transfers"][str(beta)] = {
            "seconds": result.seconds, "maps": result.maps, "controls": result.controls,
            "mean_matched_cosine": sum(x["matched_cosine"] for x in layers) / len(layers),
            "mean_null_matched_cosine": sum(x["null_matched_cosine"] for x in layers) / len(layers),
            "mean_relative_delta": {r: sum(x[f"{r}_relative_delta"] for x in layers) / len(layers)
                                    for r in ("mlp_gate", "mlp_up", "mlp_down")},
            "layers": layers,
        }
        print(beta, {k: v for k, v in record["transfers"][str(beta)].items() if k != "layers"})
        arms[f"transfer beta={beta}"] = out
        arms[f"random delta beta={beta}"] = Path(result.control)
    report = evaluate([(name, lambda p=path: TransformersBackend(p)) for name, path in arms.items()],
                      ["arith", "perplexity"], split="test", limit=args.limit, seed=args.seed)
    scores = [{"arm": s.model, "task": s.task, "metric": s.metric, "value": s.value, "n": s.n, "groups": s.groups}
              for s in report.scores]
    record["scores"] = scores
    for s in scores:
        print(f"{s['arm']:>28} {s['task']:>10} {s['metric']} {s['value']:.4f} (n={s['n']})")
    record["verdicts"] = {}
    for beta in args.betas:
        rename = {"zero_delta": "zero_delta", f"transfer beta={beta}": "transfer",
                  f"random delta beta={beta}": "random_delta"}
        record["verdicts"][str(beta)] = verdict([{**s, "arm": rename[s["arm"]]} for s in scores if s["arm"] in rename])
        print(f"beta {beta}: {record['verdicts'][str(beta)]}")
    record["seconds"] = round(time.time() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
