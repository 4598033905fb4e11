"""The donor's validation check: exact answers to a seeded sample of easy-vqa val questions.

One teacher-forced forward pass per batch tells whether greedy decoding would write each answer
(`sft.answer_hits`), so the LoRA can be checked every few steps for the cost of a few training steps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from vadasm.eval.easyvqa import VqaItem
from vadasm.testbed.donor_recipe import DonorRecipe, encode_item
from vadasm.testbed.rounds import Criterion
from vadasm.testbed.sft import Batch, exact_answer_accuracy


def donor_criterion(recipe: DonorRecipe) -> Criterion:
    return Criterion(f"exact answers to {recipe.val_questions} val questions (with the image) >= "
                     f"{100 * recipe.min_val_accuracy:.0f}%", {"all": recipe.min_val_accuracy})


def val_check(
    model: LlavaForConditionalGeneration,
    processor: LlavaProcessor,
    val: tuple[VqaItem, ...],
    pixels: dict[Path, torch.Tensor],
    recipe: DonorRecipe,
) -> Callable[[], dict[str, float]]:
    """Exact-answer accuracy (overall and per question type) on a seeded sample of val questions."""
    generator = torch.Generator().manual_seed(recipe.seed)
    sample = [val[i] for i in torch.randperm(len(val), generator=generator)[: recipe.val_questions].tolist()]
    encoded = [encode_item(processor, item.question, item.answers[0]) for item in sample]

    def forward(batch: Batch, idx: list[int]) -> torch.Tensor:
        pixel_values = torch.stack([pixels[sample[i].image_path] for i in idx])
        return model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           pixel_values=pixel_values).last_hidden_state

    def measure() -> dict[str, float]:
        model.eval()
        values = exact_answer_accuracy(forward, model.lm_head, encoded, [item.qtype for item in sample],
                                       processor.tokenizer.pad_token_id or 0, recipe.batch_size,
                                       processor.tokenizer.eos_token_id)
        model.train()
        return values

    return measure
