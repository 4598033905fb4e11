"""Tiny llama-named model folders written by hand (config + safetensors), for reader tests that need
no transformers model: milliseconds each, with every tensor name and shape under the test's control."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

LAYERS, HIDDEN, VOCAB = 2, 4, 10


def tiny_llama_tensors(layers: int = LAYERS) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    tensors = {"model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN, generator=gen),
               "model.norm.weight": torch.randn(HIDDEN, generator=gen),
               "lm_head.weight": torch.randn(VOCAB, HIDDEN, generator=gen)}
    for layer in range(layers):
        tensors[f"model.layers.{layer}.self_attn.q_proj.weight"] = torch.randn(HIDDEN, HIDDEN, generator=gen)
        tensors[f"model.layers.{layer}.input_layernorm.weight"] = torch.randn(HIDDEN, generator=gen)
    return tensors


def tiny_llama_config(**changes) -> dict:
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": LAYERS,
              "hidden_size": HIDDEN, "vocab_size": VOCAB, "intermediate_size": 8, "num_attention_heads": 2,
              "num_key_value_heads": 2}
    config.update(changes)
    return config


def write_tiny_llama(folder: Path, shards: int = 1, **config_changes) -> Path:
    """A folder with config.json and the tensors of `tiny_llama_tensors`, in `shards` files (+ index)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(tiny_llama_config(**config_changes)))
    tensors = tiny_llama_tensors()
    if shards == 1:
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        return folder
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i::shards]}
        save_file(part, folder / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder
