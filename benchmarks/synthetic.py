"""Synthetic Llama-shaped bf16 checkpoints for benchmarks: real names, real shapes, Hub-like shards.

Weights are random (no tokenizer, never meant to generate text); a "fine-tune" is the base plus
small seeded noise, so task vectors are dense and pruning has real work to do. Each tensor is
generated from a seed derived from its name and written with vadasm's streaming writer, so a
7B model is produced with one tensor in memory at a time and the same size always gives the
same bytes.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch

from vadasm.io import PlannedTensor, ShardedWriter, parse_size

# Shapes of public Llama-family models (model_type llama); names are the sizes users know them by.
SIZES: dict[str, dict] = {
    "135M": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),  # SmolLM2-135M
    "1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),  # Llama-3.2-1B
    "3B": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),  # Llama-3.2-3B
    "7B": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False),  # Mistral-7B layout
}
SHARD_SIZE = "2GB"
WEIGHT_STD = 0.02
NOISE_STD = 0.002  # fine-tune delta: 10% of the weight scale


def tensor_shapes(size: str) -> dict[str, tuple[int, ...]]:
    """Every tensor of a LlamaForCausalLM of this size, in checkpoint order."""
    c = SIZES[size]
    h, inter = c["hidden_size"], c["intermediate_size"]
    head_dim = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (c["vocab_size"], h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
        })
    shapes["model.norm.weight"] = (h,)
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (c["vocab_size"], h)
    return shapes


def num_parameters(size: str) -> int:
    return sum(torch.Size(s).numel() for s in tensor_shapes(size).values())


def largest_tensor_bytes(size: str, bytes_per_element: int = 2) -> int:
    return max(torch.Size(s).numel() for s in tensor_shapes(size).values()) * bytes_per_element


def make_model(folder: Path, size: str, variant: int = 0) -> Path:
    """Write the base (variant 0) or fine-tune number `variant` of a synthetic model of `size`."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = tensor_shapes(size)
    plan = [PlannedTensor(name, shape, torch.bfloat16) for name, shape in shapes.items()]
    writer = ShardedWriter(folder, plan, parse_size(SHARD_SIZE))
    for name, shape in shapes.items():
        writer.write(name, _weight(name, shape, variant))
    writer.close()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
              "head_dim": SIZES[size]["hidden_size"] // SIZES[size]["num_attention_heads"],
              "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 8192,
              "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, **SIZES[size]}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / ".complete").write_text("ok\n")
    return folder


def cached_model(root: Path, size: str, variant: int) -> Path:
    """The model from a previous run when complete, else a freshly written one."""
    folder = root / f"{size}-{'base' if variant == 0 else f'ft{variant}'}"
    if (folder / ".complete").is_file():
        return folder
    if folder.exists():
        for file in folder.iterdir():
            file.unlink()
    return make_model(folder, size, variant)


def _weight(name: str, shape: tuple[int, ...], variant: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    if len(shape) == 1:  # norms: around 1, like trained RMSNorm gains
        tensor = 1 + 0.1 * torch.randn(shape, generator=gen)
    else:
        tensor = WEIGHT_STD * torch.randn(shape, generator=gen)
    if variant:
        noise = torch.Generator().manual_seed(zlib.crc32(name.encode()) + 7919 * variant)
        tensor.add_(torch.randn(shape, generator=noise), alpha=NOISE_STD)
    return tensor.to(torch.bfloat16)

