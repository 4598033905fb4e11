"""Tiny random vision and text models with real tokenizers and processors, built in tmp folders.

The LLaVA fixture goes through the testbed's own assembly code (`assemble_llava`, `build_processor`),
so these tests also check that what the testbed writes is a stock, reloadable checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from vadasm.eval import easyvqa
from vadasm.testbed.donor import QA_TEMPLATE, assemble_llava, build_processor
from vadasm.testbed.vision import TowerRecipe, image_processor, tower_config

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>", "<image>"]
_WORD_TEXT = """
what color shape is the there a an in image present does contain not no yes of Question Answer : ? + - * with
number only . red green blue black gray teal brown yellow circle rectangle triangle
"""
WORDS = _WORD_TEXT.split() + [str(n) for n in range(21)]
COLORS_RGB = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (230, 230, 20)}


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=["<image>"],
    )


def make_text_lm(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_llava(folder: Path, lm_dir: Path, seed: int = 0) -> tuple[Path, object, object]:
    """Tower (16x16 images, 4 patches) + projector + `lm_dir`, saved with a LlavaProcessor."""
    torch.manual_seed(seed)
    recipe = TowerRecipe(image_size=16, patch_size=8, hidden_size=16, layers=1, heads=2)
    tower = CLIPVisionModel(tower_config(recipe))
    model = assemble_llava(lm_dir, tower, "<image>")
    processor = build_processor(make_tokenizer(), image_processor(16), "<image>", QA_TEMPLATE, recipe.patch_size)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


def write_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rgb in COLORS_RGB.items():
        image = Image.new("RGB", (64, 64), (255, 255, 255))
        image.paste(rgb, (16, 16, 48, 48))
        paths[name] = folder / f"{name}.png"
        image.save(paths[name])
    return paths


def fake_vqa_items(image_paths: dict[str, Path]) -> tuple[easyvqa.VqaItem, ...]:
    """Questions in easy-vqa's wording about synthetic images (every image is a rectangle)."""
    items = []
    for n, (color, path) in enumerate(sorted(image_paths.items())):
        qs = [
            ("what color is the shape?", color),
            ("what shape is present?", "rectangle"),
            (f"is there a {color} shape?", "yes"),
            ("is there not a circle?", "yes"),
        ]
        for k, (question, answer) in enumerate(qs):
            items.append(
                easyvqa.VqaItem(f"fake-{n}-{k}", question, (answer,), path, n, easyvqa.question_type(question))
            )
    return tuple(items)
