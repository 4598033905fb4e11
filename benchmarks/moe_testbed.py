"""Dense <-> MoE on real testbed weights: a Branch-Train-MiX MoE of SmolLM2 and its arithmetic fine-tune.

    python benchmarks/moe_testbed.py [--limit 200] [--out results/moe_testbed.json]
    python benchmarks/moe_testbed.py --moes-only out/moes    # just the two MoEs, for `vadasm moe ...`

No small MoE ships offline, so this builds one from real weights the way Branch-Train-MiX does
(Sukhbaatar et al., 2024): a Mixtral-style model whose two experts per layer are the MLPs of SmolLM2
(expert 0) and of its arithmetic fine-tune `smollm2-arith` (expert 1), every other tensor the mean
of the two models. BTX then trains the router; here it is closed form (`vadasm moe build`'s
`router_input` gate mode): expert e's row is the mean MLP input (measured in SmolLM2) of domain e's
tokens, held-out validation prose for expert 0 and arithmetic *train* prompts for expert 1, minus the
mean of the two; each token goes to its top-1 expert. An upcycled MoE (both experts copies of
SmolLM2's MLP, same router) is the dense -> MoE recipient. Both MoEs are written by
`vadasm.moe.build` (the BTX one from a linear merge of the two models as its base).

MoE -> dense (`moe_into_dense`, dense recipient and base smollm2): the BTX experts aggregated
`uniform`, `norm_avg`, and top-1 by router usage measured on arithmetic *validation* prompts, beside
zero delta (smollm2), a random delta of matched norm, and the MoE itself.
Dense -> MoE (`dense_into_moe`, delta smollm2-arith - smollm2, into the upcycled MoE): scales none /
usage / norm, beside zero delta (the upcycled MoE itself), a random delta of matched norm and the
dense fine-tune. Everything is scored on held-out arithmetic (test split) and test-prose perplexity.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from moe_synthetic import random_control

from vadasm.align.activations import validation_token_ids
from vadasm.eval.arith import problems
from vadasm.eval.backends import load_backend
from vadasm.eval.harness import evaluate
from vadasm.eval.report import format_table
from vadasm.io import Checkpoint
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge
from vadasm.moe import dense_into_moe, moe_into_dense
from vadasm.moe.build import build_moe as build_moe_from_config
from vadasm.moe.build_config import MoeBuildConfig, MoeExpert
from vadasm.moe.gates import prompt_gate_rows, signal_function
from vadasm.testbed.paths import artefact_dir, is_built
from vadasm.testbed.recipient import encode_problem


def arith_prompts(tokenizer_dir: Path, split: str, n: int) -> list[torch.Tensor]:
    """Chat-formatted arithmetic problems with their answers, as the recipient was trained on them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return [torch.tensor([encode_problem(tokenizer, p.question, str(p.answer)).ids])
            for p in problems(split, n, seed=1)]


def prototype_router(model: Path, domains: list[list[torch.Tensor]]) -> torch.Tensor:
    """[layers, experts, hidden]: row e = mean MLP input over domain e's tokens minus the mean of all rows
    (the `router_input` gate mode of `vadasm moe build`, fed token ids instead of prompt strings)."""
    signal = signal_function("router_input", model)
    batches = [([{"input_ids": ids, "attention_mask": torch.ones_like(ids)} for ids in domain], [])
               for domain in domains]
    return prompt_gate_rows(signal, batches, "router_input", routed=len(domains))


def build_moe(experts: list[Path], shared_from: list[Path], routers: torch.Tensor, out: Path, work: Path) -> Path:
    """A Mixtral checkpoint (`vadasm moe build`): expert e of every layer = experts[e]'s MLP; other tensors =
    the mean over shared_from (a linear merge first when there are several), top-1 routing."""
    base = shared_from[0]
    if len(shared_from) > 1:
        base = work / f"mean-of-{len(shared_from)}-{out.name}"
        recipe = recipe_from_dict({"merge_method": "linear", "dtype": "float32",
                                   "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in shared_from]})
        run_merge(recipe, base, MergeOptions(progress=False))
    config = MoeBuildConfig(base_model=str(base), experts=[MoeExpert(source_model=str(e)) for e in experts],
                            gate_mode="router_input", dtype="float32", experts_per_token=1)
    build_moe_from_config(config, out, routers=routers, progress=False)
    return out


def _copy_tokenizer(source: Path, out: Path) -> None:
    for file in Checkpoint.open(source).sidecar_files():
        shutil.copy2(file, out / file.name)


def control(recipient: Path, changed: Path, out: Path) -> Path:
    """recipient + a Gaussian delta with the norm of (changed - recipient), tensor by tensor."""
    random_control(recipient, changed, out)
    _copy_tokenizer(recipient, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=200, help="arithmetic test problems per model")
    parser.add_argument("--router-prompts", type=int, default=200, help="arithmetic train prompts for the router")
    parser.add_argument("--out", default="results/moe_testbed.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--moes-only", default=None, metavar="DIR",
                        help="only build the two MoEs into DIR (btx/, upcycled/, arith_val_prompts.txt) for "
                             "`vadasm moe ...`, and stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    missing = [a for a in ("smollm2", "smollm2-arith") if not is_built(a)]
    if missing:
        raise SystemExit(f"testbed artefacts not built: {', '.join(missing)} (run `vadasm testbed build`)")
    base, tuned = artefact_dir("smollm2"), artefact_dir("smollm2-arith")
    work = Path(tempfile.mkdtemp(prefix="vadasm-moe-testbed-"))
    started = time.time()
    try:
        domains = [validation_token_ids(base), arith_prompts(base, "train", args.router_prompts)]
        routers = prototype_router(base, domains)
        moes = Path(args.moes_only) if args.moes_only else work
        btx = build_moe([base, tuned], [base, tuned], routers, moes / "btx", work)
        upcycled = build_moe([base, base], [base], routers, moes / "upcycled", work)
        if args.moes_only:
            texts = [problem.question for problem in problems("val", 100, seed=1)]
            (moes / "arith_val_prompts.txt").write_text("\n".join(texts) + "\n")
            print(f"wrote {btx}, {upcycled} and {moes / 'arith_val_prompts.txt'}")
            return
        usage_inputs = arith_prompts(base, "val", 100)
        arms = {"smollm2 (zero delta, MoE->dense)": base, "smollm2-arith (dense fine-tune)": tuned,
                "BTX MoE": btx}
        into_dense = {}
        for name, kwargs in (("uniform", {"method": "uniform"}), ("norm_avg", {"method": "norm_avg"}),
                             ("top1_by_usage", {"method": "uniform", "top_k": 1})):
            into_dense[name] = moe_into_dense(base, btx, work / f"dense-{name}", input_ids=usage_inputs,
                                              **kwargs).to_dict()
            arms[f"MoE->dense {name}"] = work / f"dense-{name}"
        arms["MoE->dense random delta (norm of uniform)"] = control(base, work / "dense-uniform", work / "dense-rand")
        arms["upcycled MoE (zero delta, dense->MoE)"] = upcycled
        into_moe = {}
        for scale in ("none", "usage", "norm"):
            into_moe[scale] = dense_into_moe(upcycled, base, tuned, work / f"moe-{scale}", scale=scale,
                                             input_ids=usage_inputs).to_dict()
            arms[f"dense->MoE scale {scale}"] = work / f"moe-{scale}"
        arms["dense->MoE random delta (norm of scale none)"] = control(upcycled, work / "moe-none", work / "moe-rand")
        report = evaluate([(name, lambda p=path: load_backend(p)) for name, path in arms.items()],
                          ["arith", "perplexity"], split="test", limit=args.limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(format_table(report))
    record = {
        "command": f"python benchmarks/moe_testbed.py --limit {args.limit} --router-prompts {args.router_prompts}",
        "seconds": round(time.time() - started, 1),
        "scores": {model: record_score(report, model) for model in report.models},
        "router_usage_on_arith_val": {k: v["layers"] for k, v in into_dense.items() if k == "top1_by_usage"},
        "dense_to_moe_scales": {k: v["layers"] for k, v in into_moe.items() if k != "none"},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


def record_score(report, model: str) -> dict:
    arith, ppl = report.get(model, "arith", "text"), report.get(model, "perplexity", "text")
    return {"arith": round(arith.value, 4), "arith_n": arith.n,
            "arith_by_kind": {g: round(v["value"], 4) for g, v in arith.groups.items()},
            "perplexity": round(ppl.value, 3)}


if __name__ == "__main__":
    main()
