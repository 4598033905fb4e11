"""What the LLaVA donor trains on: its recipe and how one question is encoded.

Kept apart from `donor.py` so that the donor's validation check (`donor_checks.py`) encodes questions
exactly as training does without importing the trainer (no import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import LlavaProcessor

from vadasm.testbed.sft import Encoded, encode_chat


@dataclass
class DonorRecipe:
    base: str
    align_steps: int = 300
    steps: int = 500  # the LoRA's budget; training stops earlier once the criterion holds
    round_steps: int = 250  # one warmup-decay schedule; the first round is the former fixed recipe
    # checked at round ends only: a donor that passes its first round is exactly the recorded recipe
    # (graft results depend on the size of its LoRA delta), not one stopped early on a lucky check
    eval_every: int = 250
    min_val_accuracy: float = 0.95  # exact answers on `val_questions` val questions, with the image; 0 disables
    val_questions: int = 192
    batch_size: int = 16
    lr_lora: float = 1e-3
    lora_rank: int = 16
    lora_alpha: int = 32
    # LoRA only on the top half of the LM, projector kept as aligned: the backward pass then stops
    # halfway up, which is most of the saving on CPU (the bottom half runs without a graph).
    lora_top_fraction: float = 0.5
    seed: int = 0


def image_seq_length(processor: LlavaProcessor) -> int:
    """How many image tokens the processor writes per image (patches + extra - dropped CLS)."""
    crop = processor.image_processor.crop_size
    patches = (crop["height"] // processor.patch_size) * (crop["width"] // processor.patch_size)
    dropped = 1 if processor.vision_feature_select_strategy == "default" else 0
    return patches + processor.num_additional_image_tokens - dropped


def encode_item(processor: LlavaProcessor, question: str, answer: str, with_image: bool = True) -> Encoded:
    """Token ids of prompt + answer exactly as `processor` renders them, image tokens expanded."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    user = {"role": "user", "content": content}
    prompt = processor.apply_chat_template([user], add_generation_prompt=True)
    full = processor.apply_chat_template([user, {"role": "assistant", "content": answer}])
    n_image = image_seq_length(processor)
    token = processor.image_token
    return encode_chat(processor.tokenizer, prompt, full, lambda text: text.replace(token, token * n_image))
