"""Tiny stand-ins for the Hub models that mergekit's documented recipes name (see
tests/fixtures/mergekit_recipes/README.md), shared by tests/merge/test_mergekit_recipes.py and
benchmarks/mergekit_parity.py --recipes.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template

import torch
from safetensors.torch import load_file, save_file

from pico_models import SPECIAL_TOKENS, VOCAB, make_text_model, make_word_tokenizer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mergekit_recipes"

WORDS = [f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS))]  # 96 tokens, 96 rows
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA_13B = dict(num_hidden_layers=40, hidden_size=16, intermediate_size=24, num_attention_heads=2,
                 num_key_value_heads=1)
LLAMA_13B_FAMILY = ["orca_mini_v3_13b", "Platypus2_13B", "WizardLM_13B_V1_2", "WizardMath_13B_V1_0"]
MISTRAL_FAMILY = ["Mistral_7B_Instruct_v0_2", "BioMistral_7B", "Hermes_2_Pro_Mistral_7B", "OpenHermes_2_5_Mistral_7B",
                  "BioMistral_7B_DARE", "Dans_AdventurousWinds_7b", "SauerkrautLM_7b_HerO", "model_a", "model_b",
                  "path_to_self_attn_donor", "expert_model_1", "expert_model_2"]
ADDED_TOKENS = {"chatml_model": ["<|im_start|>", "<|im_end|>"],
                "llama3_model": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                "path_to_model": ["<|special|>", "<|original_token|>"]}
ALIASES = {"path_to_chatml_model": "chatml_model"}


def fine_tune(src: Path, dst: Path, seed: int, new_tokens: tuple[str, ...] = (), chat_template: str | None = None,
              words: list[str] | None = None) -> Path:
    """A copy of `src` plus seeded noise, with rows (and tokenizer entries) for `new_tokens` appended."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {name: t + 0.01 * torch.randn(t.shape, generator=gen)
               for name, t in load_file(src / "model.safetensors").items()}
    config = json.loads((src / "config.json").read_text())
    if new_tokens:
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            rows = 0.02 * torch.randn(len(new_tokens), tensors[name].shape[1], generator=gen)
            tensors[name] = torch.cat([tensors[name], rows])
        config["vocab_size"] += len(new_tokens)
    dst.mkdir(parents=True)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(config))
    if words is not None:
        make_word_tokenizer(dst, words + list(new_tokens), chat_template)
    return dst


def build_zoo(root: Path) -> dict[str, str]:
    """Placeholder -> tiny model folder under `root` (about 6 s on one core)."""
    llama = make_text_model(root / "Llama_2_13B_fp16", "llama", **LLAMA_13B)
    mistral = make_text_model(root / "Mistral_7B_v0_1", "mistral")
    make_word_tokenizer(mistral, WORDS)
    smol = make_text_model(root / "smol_llama_220M_GQA", "llama", seed=3)
    make_word_tokenizer(smol, WORDS)
    models = {"Llama_2_13B_fp16": llama, "Mistral_7B_v0_1": mistral, "smol_llama_220M_GQA": smol}
    for seed, name in enumerate(LLAMA_13B_FAMILY, 1):
        models[name] = fine_tune(llama, root / name, seed)
    for seed, name in enumerate(MISTRAL_FAMILY, 10):
        models[name] = fine_tune(mistral, root / name, seed, words=WORDS,
                                 chat_template=CHATML if "Hermes" in name else None)
    for seed, (name, tokens) in enumerate(ADDED_TOKENS.items(), 30):
        models[name] = fine_tune(mistral, root / name, seed, tuple(tokens), words=WORDS)
    for alias, name in ALIASES.items():
        models[alias] = models[name]
    return {name: str(path) for name, path in models.items()}


def render(recipe: str | Path, zoo: dict[str, str], folder: Path) -> Path:
    """The fixture (a path relative to FIXTURES, or any file) with its placeholders replaced by the zoo's folders."""
    source = FIXTURES / recipe
    path = folder / source.name
    path.write_text(Template(source.read_text()).substitute(zoo))
    return path
