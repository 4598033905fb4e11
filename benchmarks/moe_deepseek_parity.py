"""DeepSeek MoE output of `vadasm moe build` against mergekit-moe 0.1.5 on the same configs and tiny models.

Each case runs through both tools (`mergekit_recipes_parity.run_case`: tensor names, max |diff| of
every tensor, random routers by their std, prompt routers by row cosine), then config.json is compared
key by key. The DeepSeek output has no transformers class (deepseek-ai's remote code loads it), so
parity with mergekit is how the layout is checked beyond tests/moe/test_deepseek.py.

    python benchmarks/moe_deepseek_parity.py --mergekit-bin /tmp/mkvenv/bin --work /tmp/ds-parity \
        --out results/moe_deepseek_parity.json

(Reading the outputs' tokenizers, transformers asks whether to run the remote code their config.json
names; with no input it declines and reads the tokenizer anyway.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mergekit_recipes_parity import run_case  # noqa: E402

from pico_models import SPECIAL_TOKENS, VOCAB, make_text_model, make_word_tokenizer, perturbed_copy  # noqa: E402

WORDS = [f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS))]


def models(root: Path) -> dict[str, str]:
    """A Llama and a Mistral family (base with a tokenizer, two fine-tunes each), fp32."""
    out = {}
    for family in ("llama", "mistral"):
        base = make_text_model(root / family / "base", family)
        make_word_tokenizer(base, WORDS)
        out[family] = str(base)
        for i in (1, 2):
            out[f"{family}{i}"] = str(perturbed_copy(base, root / family / f"e{i}", scale=0.05, seed=i))
            make_word_tokenizer(Path(out[f"{family}{i}"]), WORDS)
    return out


def cases(m: dict[str, str]) -> dict[str, dict]:
    """Configs that select DeepSeek MoE: an ungated shared expert (auto), or `architecture: deepseek`."""
    prompted = [{"source_model": m["llama1"], "positive_prompts": ["w1 w2 w3"], "negative_prompts": ["w9"]},
                {"source_model": m["llama2"], "positive_prompts": ["w40 w41"]}]
    return {
        "shared expert, cheap_embed": {"base_model": m["llama"], "gate_mode": "cheap_embed", "experts": prompted,
                                       "shared_experts": [{"source_model": m["llama"], "residual_scale": 0.5}]},
        "shared expert, hidden": {"base_model": m["llama"], "gate_mode": "hidden", "experts": prompted,
                                  "shared_experts": [{"source_model": m["llama1"]}]},
        "architecture deepseek, no shared, random": {
            "base_model": m["llama"], "gate_mode": "random", "architecture": "deepseek", "experts_per_token": 1,
            "experts": [{"source_model": m["llama1"]}, {"source_model": m["llama2"]}, {"source_model": m["llama"]}]},
        "mistral, shared, residual_scale, top-1": {
            "base_model": m["mistral"], "gate_mode": "cheap_embed", "experts_per_token": 1,
            "experts": [{"source_model": m["mistral1"], "positive_prompts": ["w5 w6"], "residual_scale": 0.8},
                        {"source_model": m["mistral2"], "positive_prompts": ["w50"]}],
            "shared_experts": [{"source_model": m["mistral"]}]},
        "bfloat16 output": {"base_model": m["llama"], "gate_mode": "cheap_embed", "dtype": "bfloat16",
                            "experts": prompted, "shared_experts": [{"source_model": m["llama"]}]},
        "shared expert not among base/experts": {
            "base_model": m["llama"], "gate_mode": "random", "experts": [{"source_model": m["llama1"]},
                                                                         {"source_model": m["llama"]}],
            "shared_experts": [{"source_model": m["llama2"]}]},
    }


def compare_configs(ours: Path, theirs: Path) -> dict:
    """Keys only one tool writes, and keys both write with different values."""
    a, b = (json.loads((p / "config.json").read_text()) for p in (ours, theirs))
    return {"only vadasm": sorted(set(a) - set(b)), "only mergekit": sorted(set(b) - set(a)),
            "differ": {k: (a[k], b[k]) for k in sorted(set(a) & set(b)) if a[k] != b[k]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mergekit-bin", type=Path, default=Path("/tmp/mkvenv/bin"))
    parser.add_argument("--work", type=Path, required=True, help="an empty or new folder")
    parser.add_argument("--out", type=Path, help="also write the rows here as JSON")
    args = parser.parse_args()
    m = models(args.work / "models")
    rows = []
    for case, raw in cases(m).items():
        folder = args.work / "cases" / case.replace(" ", "_").replace(",", "").replace("/", "_")
        folder.mkdir(parents=True)
        recipe = folder / "moe.yml"
        recipe.write_text(yaml.safe_dump(raw, sort_keys=False))
        row = run_case(case, recipe, "moe", args.mergekit_bin, folder)
        if "vadasm" not in row and "mergekit" not in row:
            row["config"] = compare_configs(folder / "vadasm", folder / "mergekit")
        print(json.dumps(row, default=str))
        rows.append(row)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
