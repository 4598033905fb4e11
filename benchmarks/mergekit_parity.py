"""Do `vadasm merge` and mergekit produce the same tensors for the same recipe?

Builds a small random Llama base and two seeded "fine-tunes" in a temp folder, runs each
supported method through both tools, and prints the largest absolute difference per method.
mergekit runs from its own environment (it pins its own dependencies), given by --mergekit.

    python benchmarks/mergekit_parity.py --mergekit /path/to/venv/bin/mergekit-yaml

DARE's and DELLA's random masks come from different generators in the two tools, so they are
compared at density 1 (no dropping), where both reduce to the deterministic part of the
computation, and, with dropping on, by the statistics of what one pruned fine-tune keeps
(cases with "stats": fraction of entries changed from the base, mean |change| of those).
`--methods a,b` runs only those cases. `--recipes DIR` (mergekit's documented recipes, e.g.
tests/fixtures/mergekit_recipes) and `--features` (slices, tokenizer, chat template, LoRA) run whole
recipes through both tools instead: see benchmarks/mergekit_recipes_parity.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pico_models import make_text_model, perturbed_copy  # noqa: E402
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge  # noqa: E402

RECIPES = {
    "linear": {"parameters": {}, "model_params": [{"weight": 0.3}, {"weight": 0.7}]},
    "task_arithmetic": {"parameters": {"lambda": 0.9}, "model_params": [{"weight": 0.6}, {"weight": 0.4}]},
    "ties": {"parameters": {"normalize": True}, "model_params": [{"weight": 0.6, "density": 0.4},
                                                                 {"weight": 0.5, "density": 0.7}]},
    "dare_linear": {"parameters": {}, "model_params": [{"weight": 0.6, "density": 1.0},
                                                       {"weight": 0.4, "density": 1.0}]},
    "dare_ties": {"parameters": {}, "model_params": [{"weight": 0.6, "density": 1.0},
                                                     {"weight": 0.4, "density": 1.0}]},
    "slerp": {"parameters": {"t": [{"filter": "self_attn", "value": [0.0, 0.5, 1.0]}, {"value": 0.3}]},
              "model_params": [{}]},
    "model_stock": {"parameters": {}, "model_params": [{}, {}]},
    "model_stock filter_wise": {"method": "model_stock", "parameters": {"filter_wise": True},
                                "model_params": [{}, {}]},
    "sce": {"parameters": {"select_topk": 0.4}, "model_params": [{}, {}]},
    "breadcrumbs": {"parameters": {}, "model_params": [{"weight": 0.6, "density": 0.7, "gamma": 0.05},
                                                       {"weight": 0.4, "density": 0.5, "gamma": 0.02}]},
    "breadcrumbs_ties": {"parameters": {"rescale": True}, "model_params": [
        {"weight": 0.6, "density": 0.7, "gamma": 0.05}, {"weight": 0.4, "density": 0.5, "gamma": 0.02}]},
    "della density 1": {"method": "della", "parameters": {"lambda": 0.9},
                        "model_params": [{"weight": 0.6, "density": 1.0}, {"weight": 0.4, "density": 1.0}]},
    "della_linear density 1": {"method": "della_linear", "parameters": {},
                               "model_params": [{"weight": 0.6, "density": 1.0}, {"weight": 0.4, "density": 1.0}]},
    "della": {"stats": True, "parameters": {}, "model_params": [{"weight": 1.0, "density": 0.6, "epsilon": 0.3}]},
    "della_linear": {"stats": True, "parameters": {"rescale": False},
                     "model_params": [{"weight": 1.0, "density": 0.3, "epsilon": 0.2}]},
    "dare_linear density 0.4": {"method": "dare_linear", "stats": True, "parameters": {},
                                "model_params": [{"weight": 1.0, "density": 0.4}]},
    # methods part 2 ("base": False: the recipe names no base_model)
    "nuslerp": {"parameters": {}, "model_params": [{"weight": 0.3}, {"weight": 0.7}]},
    "nuslerp rows no base": {"method": "nuslerp", "base": False, "parameters": {"nuslerp_flatten": False},
                              "model_params": [{"weight": 1.0}, {"weight": 3.0}]},
    "nuslerp row_wise no base": {"method": "nuslerp", "base": False, "parameters": {
        "nuslerp_flatten": False, "nuslerp_row_wise": True}, "model_params": [{"weight": 2.0}, {"weight": 1.0}]},
    "multislerp": {"parameters": {}, "model_params": [{"weight": 0.4}, {"weight": 0.6}]},
    "multislerp no base": {"method": "multislerp", "base": False, "parameters": {},
                           "model_params": [{"weight": 2.0}, {"weight": 1.0}]},
    "karcher": {"base": False, "parameters": {}, "model_params": [{}, {}]},
    "karcher base joins": {"method": "karcher", "parameters": {"max_iter": 20}, "model_params": [{}, {}]},
    "nearswap": {"parameters": {"t": 0.01}, "model_params": [{}]},
    "arcee_fusion": {"parameters": {}, "model_params": [{}]},
    "ram": {"parameters": {"epsilon": 0.01}, "model_params": [{}, {}]},
    "ramplus_tl": {"parameters": {"epsilon": 0.01, "r": 0.5, "alpha": 0.5}, "model_params": [{}, {}]},
    "slerp ignored weight": {"method": "slerp", "parameters": {"t": 0.3}, "model_params": [{"weight": 0.7}]},
    # above 1M entries (embeddings of 4200 x 256) both tools take arcee_fusion's quantiles from a random sample
    "arcee_fusion sampled": {"method": "arcee_fusion", "stats": True, "vocab": 4200, "parameters": {},
                             "model_params": [{}]},
}


def recipe(case: str, base: Path, models: list[Path]) -> dict:
    """The same recipe for both tools; slerp interpolates the base with the first fine-tune."""
    spec = RECIPES[case]
    method = spec.get("method", case)
    entries = [{"model": str(m), "parameters": p} for m, p in zip(models, spec["model_params"])]
    raw = {"merge_method": method, "models": entries, "parameters": spec["parameters"], "dtype": "float32"}
    if method != "linear" and spec.get("base", True):
        raw["base_model"] = str(base)
    if method == "slerp":
        raw["models"] = [{"model": str(base)}] + entries
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mergekit", required=True, help="path to the mergekit-yaml executable")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--methods", help="comma-separated cases of RECIPES to run (default: all)")
    parser.add_argument("--recipes", metavar="DIR", help="instead: run every recipe of DIR (e.g. "
                        "tests/fixtures/mergekit_recipes) through both tools (benchmarks/mergekit_recipes_parity.py)")
    parser.add_argument("--features", action="store_true", help="instead: slices, tokenizer, chat template and "
                        "LoRA cases (benchmarks/mergekit_recipes_parity.py); with --recipes, both")
    args = parser.parse_args()
    if args.recipes or args.features:
        from mergekit_recipes_parity import report, run_features, run_recipes

        work, tools = Path(tempfile.mkdtemp(prefix="vadasm-parity-")), Path(args.mergekit).parent
        report((run_recipes(Path(args.recipes), tools, work) if args.recipes else [])
               + (run_features(tools, work) if args.features else []))
        return
    cases = args.methods.split(",") if args.methods else list(RECIPES)
    unknown = set(cases) - set(RECIPES)
    if unknown:
        raise SystemExit(f"unknown case(s) {sorted(unknown)}; known: {', '.join(RECIPES)}")
    work = Path(tempfile.mkdtemp(prefix="vadasm-parity-"))
    shape = dict(hidden_size=args.hidden, intermediate_size=args.hidden * 2, num_hidden_layers=args.layers,
                 num_attention_heads=8, num_key_value_heads=4)
    base = make_text_model(work / "base", "llama", **shape)
    models = [perturbed_copy(base, work / f"ft{i}", scale=0.02, seed=i) for i in (1, 2)]
    print("| method | tensors | max abs diff vadasm vs mergekit | max |merged - base| |")
    print("|---|---|---|---|")
    worst = 0.0
    stats_rows = []
    for method in cases:
        case_base, case_models = base, models
        if "vocab" in RECIPES[method]:  # its own models, with a larger vocabulary
            vocab = RECIPES[method]["vocab"]
            case_base = make_text_model(work / f"base-v{vocab}", "llama", vocab_size=vocab, **shape)
            case_models = [perturbed_copy(case_base, work / f"ft{i}-v{vocab}", scale=0.02, seed=i) for i in (1, 2)]
        raw = recipe(method, case_base, case_models)
        (work / f"{method}.yaml").write_text(yaml.safe_dump(raw))
        ours, theirs = work / f"ours-{method}", work / f"theirs-{method}"
        run_merge(recipe_from_dict(raw), ours, MergeOptions(progress=False))
        subprocess.run([args.mergekit, str(work / f"{method}.yaml"), str(theirs), "--no-copy-tokenizer"],
                       check=True, capture_output=True)
        a = load_file(ours / "model.safetensors")
        b = {}
        for shard in theirs.glob("*.safetensors"):
            b.update(load_file(shard))
        base_w = load_file(case_base / "model.safetensors")
        missing = set(a) ^ set(b)
        if missing:
            raise SystemExit(f"{method}: tensor names differ: {sorted(missing)[:5]}")
        if RECIPES[method].get("stats"):
            stats_rows.append((method, kept_stats(a, base_w), kept_stats(b, base_w)))
            continue
        diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        moved = max((a[k].float() - base_w[k].float()).abs().max().item() for k in a)
        worst = max(worst, diff)
        print(f"| {method} | {len(a)} | {diff:.3g} | {moved:.3g} |")
    print(f"\nworst difference {worst:.3g} ({'within fp32 rounding' if worst < 1e-5 else 'NOT EQUAL'})")
    if stats_rows:
        print("\nrandom pruning (or sampled thresholds) of one fine-tune, different generators: "
              "what the merge keeps of its delta")
        print("| case | fraction changed vadasm / mergekit | mean abs change vadasm / mergekit | ratio |")
        print("|---|---|---|---|")
        for case, (f_a, m_a), (f_b, m_b) in stats_rows:
            print(f"| {case} | {f_a:.4f} / {f_b:.4f} | {m_a:.4g} / {m_b:.4g} | {m_a / m_b:.4f} |")


def kept_stats(merged: dict, base: dict) -> tuple[float, float]:
    """Over all tensors: the fraction of entries that differ from the base, and their mean |difference|."""
    changed, total, size = 0, 0, 0.0
    for name, tensor in merged.items():
        delta = tensor.float() - base[name].float()
        kept = delta != 0
        changed += int(kept.sum())
        total += delta.numel()
        size += float(delta[kept].abs().sum())
    return changed / total, size / max(1, changed)


if __name__ == "__main__":
    main()
