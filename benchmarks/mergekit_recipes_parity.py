"""Recipe and feature cases of `benchmarks/mergekit_parity.py`: whole recipes run by both tools, tensors compared.

`--recipes DIR` runs every recipe of DIR (tests/fixtures/mergekit_recipes: mergekit's documented
examples, rewritten onto tiny models from tests/mergekit_zoo.py) through `vadasm merge` / `vadasm moe
build` and through mergekit-yaml / mergekit-multi / mergekit-moe. `--features` runs slices,
tokenizer, chat-template and LoRA cases (first compared by hand in an earlier session) the same way.

Inputs are fp32 and every recipe's `dtype` is set to float32 in both tools (mergekit computes in the
recipe's dtype, vadasm always in fp32, so fp16 recipes would differ by fp16 rounding alone).
Vocabulary matrices (embed_tokens, lm_head) are compared row by token when both outputs have a
tokenizer with the same token set (a union may number its tokens differently: "same token ids" says).
Random parts are compared by statistics: DARE/DELLA merges by the fraction of entries changed from
the base and their mean |change|; `gate_mode: random` routers by their standard deviation.
Prompt-based routers (`hidden`, `cheap_embed`) are reported apart, by row cosine and max |diff|:
mergekit-moe runs the prompts through the base in bfloat16, vadasm in fp32. mergekit-moe writes
Mixtral experts fused (transformers 5's layout), vadasm per expert (the layout transformers converts
on load); the per-expert tensors are fused before comparing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mergekit_parity import kept_stats  # noqa: E402

from mergekit_zoo import build_zoo, render  # noqa: E402
from pico_models import SPECIAL_TOKENS, VOCAB, make_text_model, make_word_tokenizer  # noqa: E402

RANDOM_METHODS = {"dare_linear", "dare_ties", "della", "della_linear"}


def feature_recipes(m: dict[str, str]) -> dict[str, dict]:
    """Slices, tokenizer, chat template and LoRA recipes over the feature models `m` (see feature_models)."""
    a, b, big, c = m["a"], m["b"], m["big"], m["c"]
    tokens_block = {"source": "base", "pad_to_multiple_of": 64, "tokens": {
        "<extra>": {"source": {"kind": "zero"}},
        "w5": {"source": {"kind": "model_token", "model": big, "token": "x2"}, "force": True},
        "x1": {"source": big}}}
    cases = {
        "frankenmerge": {"merge_method": "passthrough", "slices": [
            {"sources": [{"model": a, "layer_range": [0, 3]}]},
            {"sources": [{"model": b, "layer_range": [1, 4], "parameters": {"scale": 0.5}}]}]},
        "multisource slices": {"merge_method": "linear", "parameters": {"weight": 1.0}, "slices": [
            {"sources": [{"model": a, "layer_range": [0, 2]}, {"model": b, "layer_range": [2, 4]}]},
            {"sources": [{"model": a, "layer_range": [3, 4]}, {"model": b, "layer_range": [0, 1]}],
             "parameters": {"weight": 0.5}}]},
        "slerp slices": {"merge_method": "slerp", "base_model": a, "parameters": {"t": [0.1, 0.9]}, "slices": [
            {"sources": [{"model": a, "layer_range": [0, 3]}, {"model": b, "layer_range": [1, 4]}]}]},
        "ties slices": {"merge_method": "ties", "base_model": a, "parameters": {"density": 0.5, "weight": 0.7},
                        "slices": [
                            {"sources": [{"model": a, "layer_range": [1, 3]}, {"model": b, "layer_range": [0, 2]}]},
                            {"sources": [{"model": a, "layer_range": [3, 4]}, {"model": b, "layer_range": [3, 4]}],
                             "parameters": {"density": 0.9}}]},
        "tokenizer_source union": {"merge_method": "linear", "base_model": a, "tokenizer_source": "union", "models": [
            {"model": a, "parameters": {"weight": 1.0}}, {"model": big, "parameters": {"weight": 1.0}},
            {"model": c, "parameters": {"weight": 1.0}}]},
        "ties union, base lacks tokens": {"merge_method": "ties", "base_model": a, "tokenizer_source": "union",
                                          "parameters": {"density": 0.6, "weight": 1.0},
                                          "models": [{"model": big}, {"model": c}]},
        "tokenizer_source MODEL": {"merge_method": "task_arithmetic", "base_model": a, "tokenizer_source": big,
                                   "models": [{"model": big, "parameters": {"weight": 0.7}},
                                              {"model": c, "parameters": {"weight": 0.3}}]},
        "tokenizer block": {"merge_method": "linear", "base_model": a, "tokenizer": tokens_block, "models": [
            {"model": a, "parameters": {"weight": 1.0}}, {"model": big, "parameters": {"weight": 1.0}}]},
        "tokenizer block union": {"merge_method": "linear", "base_model": a, "tokenizer": {
            **tokens_block, "source": "union",
            "tokens": {**tokens_block["tokens"], "w7": {"source": big, "force": True}}}, "models": [
            {"model": a, "parameters": {"weight": 1.0}}, {"model": big, "parameters": {"weight": 1.0}}]},
        "model+lora": {"merge_method": "task_arithmetic", "base_model": a, "models": [
            {"model": f"{b}+{m['lora']}", "parameters": {"weight": 0.6}},
            {"model": f"{a}+{m['lora']}", "parameters": {"weight": 0.4}}]},
    }
    for template in ("alpaca", "chatml", "llama3", "mistral", "exaone"):
        cases[f"chat_template {template}"] = {**cases["tokenizer_source MODEL"], "chat_template": template}
    return cases


def feature_models(root: Path) -> dict[str, str]:
    """4-layer Llamas with word tokenizers: a, b; big (4 more words); c (another word order); a LoRA of a."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    words = [f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS) - 1)]
    a = make_text_model(root / "a", "llama", seed=0, num_hidden_layers=4)
    b = make_text_model(root / "b", "llama", seed=1, num_hidden_layers=4)
    big = make_text_model(root / "big", "llama", seed=2, num_hidden_layers=4, vocab_size=100)
    c = make_text_model(root / "c", "llama", seed=3, num_hidden_layers=4, vocab_size=98)
    vocabularies = (words, words, words + ["x1", "x2", "x3", "x4"], ["x3", "x4"] + words[5:])
    for folder, vocab in zip((a, b, big, c), vocabularies):
        make_word_tokenizer(folder, vocab)
    torch.manual_seed(4)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(a), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    lora.save_pretrained(root / "lora")
    return {"a": str(a), "b": str(b), "big": str(big), "c": str(c), "lora": str(root / "lora")}


def run_recipes(folder: Path, mergekit_bin: Path, work: Path) -> list[dict]:
    """Every recipe of `folder` (placeholders filled from the zoo) through both tools."""
    zoo = build_zoo(work / "zoo")
    rows = []
    for recipe in sorted(folder.resolve().glob("*/*.yml")):
        case = f"{recipe.parent.name}/{recipe.name}"
        path = render(recipe, zoo, _fresh(work / "recipes" / case))
        path.write_text(re.sub(r"(?m)^dtype: .*$", "dtype: float32", path.read_text()))
        kind = "moe" if recipe.parent.name == "moe" else "multi" if "\n---" in path.read_text() else "yaml"
        rows.append(run_case(case, path, kind, mergekit_bin, work / "out" / case))
    return rows


def run_features(mergekit_bin: Path, work: Path) -> list[dict]:
    models = feature_models(work / "features")
    rows = []
    for case, raw in feature_recipes(models).items():
        folder = _fresh(work / "features-out" / case.replace(" ", "_"))
        path = folder / "recipe.yml"
        path.write_text(yaml.safe_dump({**raw, "dtype": "float32"}, sort_keys=False))
        rows.append(run_case(case, path, "yaml", mergekit_bin, folder))
    return rows


def run_case(case: str, recipe: Path, kind: str, mergekit_bin: Path, out: Path) -> dict:
    """Run one recipe through both tools and compare; a tool's refusal is reported, not raised."""
    ours, theirs = out / "vadasm", out / "mergekit"
    ours_stages, theirs_stages = out / "vadasm-stages", out / "mergekit-stages"
    vadasm = [sys.executable, "-m", "vadasm"]
    if kind == "moe":
        commands = ([*vadasm, "moe", "build", str(recipe), str(ours), "--quiet"],
                    [str(mergekit_bin / "mergekit-moe"), str(recipe), str(theirs),
                     "--i-understand-this-is-not-useful-without-training"])
    elif kind == "multi":
        commands = ([*vadasm, "merge", str(recipe), str(ours), "--quiet", "--intermediate-dir", str(ours_stages)],
                    [str(mergekit_bin / "mergekit-multi"), str(recipe), "--out-path", str(theirs),
                     "-I", str(theirs_stages)])
    else:
        commands = ([*vadasm, "merge", str(recipe), str(ours), "--quiet"],
                    [str(mergekit_bin / "mergekit-yaml"), str(recipe), str(theirs),
                     "--lora-merge-cache", str(out / "mergekit-lora-cache")])
    row = {"case": case}
    for tool, command in zip(("vadasm", "mergekit"), commands):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            row[tool] = "refused: " + (done.stderr.strip().splitlines() or ["(no message)"])[-1][:200]
    if "vadasm" in row or "mergekit" in row:
        return row
    documents = [d for d in yaml.safe_load_all(recipe.read_text()) if d]
    pairs = [(case, ours, theirs, documents[-1] if kind != "moe" else documents[0])]
    if kind == "multi":  # the named stages too
        pairs = [(f"{case} [{d['name']}]", ours_stages / d["name"], theirs_stages / d["name"], d)
                 for d in documents if d.get("name")] + [(case, ours, theirs, next(
                     d for d in documents if not d.get("name")))]
    row["parts"] = [compare(name, a, b, document) for name, a, b, document in pairs]
    return row


def compare(name: str, ours: Path, theirs: Path, document: dict) -> dict:
    """Tensor names, then max |difference| (or statistics for random parts), vocabulary and layer count."""
    a, b = _tensors(ours), _tensors(theirs)
    if any(".block_sparse_moe." in k for k in a) != any(".block_sparse_moe." in k for k in b):
        a, b = _fused_experts(a), _fused_experts(b)
    result = {"name": name, "tensors": len(a)}
    if set(a) != set(b):
        result["names differ"] = sorted(set(a) ^ set(b))[:4]
        return result
    vocab_a, vocab_b = _vocab(ours), _vocab(theirs)
    same_tokens = vocab_a is not None and vocab_b is not None and vocab_a.keys() == vocab_b.keys()
    if vocab_a is not None and vocab_b is not None:
        result["same tokens"] = same_tokens
        result["same token ids"] = vocab_a == vocab_b
    chat_a, chat_b = _rendered_chat(ours), _rendered_chat(theirs)
    if chat_a is not None or chat_b is not None:
        result["same chat template"] = chat_a == chat_b
    config_a, config_b = (json.loads((p / "config.json").read_text()) for p in (ours, theirs))
    result["same layer count"] = config_a.get("num_hidden_layers") == config_b.get("num_hidden_layers")
    random_gates = document.get("gate_mode") == "random"
    prompt_gates = document.get("gate_mode") in ("hidden", "cheap_embed")
    method = document.get("merge_method")
    if method in RANDOM_METHODS and _densities(document) != {1.0}:
        base = _tensors(Path(document["base_model"]))
        result["kept (fraction, mean |change|) vadasm / mergekit"] = (kept_stats(a, base), kept_stats(b, base))
        return result
    worst, gates = 0.0, []
    for key in a:
        x, y = a[key].float(), b[key].float()
        if random_gates and "gate.weight" in key:
            gates.append((float(x.std()), float(y.std())))
            continue
        if prompt_gates and "gate.weight" in key:  # mergekit runs the prompts in bfloat16 (moe/router.py)
            cosine = float(torch.nn.functional.cosine_similarity(x, y, dim=-1).min())
            result["router rows: min cosine, max |diff|"] = (
                min(cosine, result.get("router rows: min cosine, max |diff|", (1.0, 0.0))[0]),
                max(float((x - y).abs().max()), result.get("router rows: min cosine, max |diff|", (1.0, 0.0))[1]))
            continue
        if same_tokens and ("embed_tokens" in key or "lm_head" in key) and x.shape == y.shape:
            tokens = sorted(vocab_a)  # rows by token (union ids may be numbered differently), then padding rows
            rows_a = [vocab_a[t] for t in tokens] + list(range(len(tokens), x.shape[0]))
            rows_b = [vocab_b[t] for t in tokens] + list(range(len(tokens), y.shape[0]))
            x, y = x[rows_a], y[rows_b]
        if x.shape != y.shape:
            result.setdefault("shapes differ", []).append(key)
            continue
        worst = max(worst, float((x - y).abs().max()) if x.numel() else 0.0)
    result["max |diff|"] = worst
    if gates:
        result["router std vadasm / mergekit"] = (sum(g[0] for g in gates) / len(gates),
                                                  sum(g[1] for g in gates) / len(gates))
    return result


def report(rows: list[dict]) -> None:
    """Markdown table of the cases, then the counts."""
    print("| case | compared | result |")
    print("|---|---|---|")
    equal = refused = 0
    for row in rows:
        if "vadasm" in row or "mergekit" in row:
            refused += 1
            print(f"| {row['case']} | - | vadasm: {row.get('vadasm', 'ran')}; mergekit: {row.get('mergekit', 'ran')} |")
            continue
        ok = True
        for part in row["parts"]:
            details = {k: v for k, v in part.items() if k not in ("name", "tensors")}
            ok &= part.get("max |diff|", 0.0) <= 1e-4 and not any(k in part for k in ("names differ", "shapes differ"))
            ok &= part.get("same tokens") is not False and part.get("same layer count", True)
            ok &= part.get("same chat template") is not False
            print(f"| {part['name']} | {part['tensors']} tensors | {_fmt(details)} |")
        equal += ok
    print(f"\n{len(rows)} cases: {equal} equal within 1e-4 (random parts and prompt-based routers apart: read "
          "their statistics above), "
          f"{len(rows) - equal - refused} differ, {refused} refused by a tool")


def _fmt(details: dict) -> str:
    def one(value):
        if isinstance(value, float):
            return f"{value:.3g}"
        if isinstance(value, (tuple, list)):
            return "(" + ", ".join(one(v) for v in value) + ")"
        return str(value)
    return "; ".join(f"{k}: {one(v)}" for k, v in details.items())


def _fused_experts(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mixtral's per-expert layout (block_sparse_moe.experts.E.w1/w2/w3) as transformers 5 stores it
    (mlp.experts.gate_up_proj [E, 2I, H] = w1 then w3, down_proj [E, H, I]); other tensors unchanged."""
    out, experts = {}, {}
    for key, tensor in tensors.items():
        found = re.fullmatch(r"(.*)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight", key)
        if found:
            experts.setdefault(found[1], {}).setdefault(int(found[2]), {})[found[3]] = tensor
        else:
            out[key.replace(".block_sparse_moe.gate.", ".mlp.gate.")] = tensor
    for prefix, by_index in experts.items():
        ordered = [by_index[i] for i in sorted(by_index)]
        out[f"{prefix}.mlp.experts.gate_up_proj"] = torch.stack([torch.cat([e["w1"], e["w3"]]) for e in ordered])
        out[f"{prefix}.mlp.experts.down_proj"] = torch.stack([e["w2"] for e in ordered])
    return out


def _densities(document: dict) -> set[float]:
    values = {m.get("parameters", {}).get("density", 1.0) for m in document.get("models", [])}
    values.add(document.get("parameters", {}).get("density", 1.0))
    return {v for v in values if isinstance(v, (int, float))} or {0.0}


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


def _vocab(folder: Path) -> dict[str, int] | None:
    if not (folder / "tokenizer.json").exists():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).get_vocab()


def _rendered_chat(folder: Path) -> str | None:
    """A short conversation rendered by the folder's chat template (the templates' texts may differ in
    whitespace that transformers' Jinja settings trim); None without a template."""
    from transformers import AutoTokenizer

    if not (folder / "tokenizer.json").exists():
        return None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not tokenizer.chat_template:
        return None
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "w1 w2"},
            {"role": "assistant", "content": "w3"}, {"role": "user", "content": "w4"}]
    try:
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # a template may refuse a system turn; the refusal is what is compared then
        return f"refused: {err}"


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=False)
    return folder
