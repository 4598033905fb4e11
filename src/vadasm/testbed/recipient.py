"""The text-skill recipient: SmolLM2 fully fine-tuned on generated arithmetic (train split only).

A full fine-tune (not LoRA) gives a dense task vector over SmolLM2, which is what task arithmetic,
TIES/DARE and the SVD sigma blend are meant for.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vadasm.eval.arith import problems
from vadasm.testbed.sft import Encoded, answer_loss, collate, encode_chat, linear_warmup_decay


@dataclass
class RecipientRecipe:
    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0


def encode_problem(tokenizer: PreTrainedTokenizerBase, question: str, answer: str) -> Encoded:
    user = {"role": "user", "content": question}
    prompt = tokenizer.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template([user, {"role": "assistant", "content": answer}], tokenize=False)
    return encode_chat(tokenizer, prompt, full)


def train_recipient(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, recipe: RecipientRecipe) -> dict:
    """Fine-tune every weight on answer tokens of `steps * batch_size` distinct train problems."""
    torch.manual_seed(recipe.seed)
    data = problems("train", recipe.steps * recipe.batch_size, seed=recipe.seed)
    encoded = [encode_problem(tokenizer, p.question, str(p.answer)) for p in data]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    schedule = linear_warmup_decay(optimizer, recipe.steps)
    model.train()
    losses: list[float] = []
    start = time.time()
    progress = tqdm(range(recipe.steps), desc="smollm2-arith", unit="step")
    for step in progress:
        batch = collate(encoded[step * recipe.batch_size : (step + 1) * recipe.batch_size], tokenizer.pad_token_id)
        hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        loss = answer_loss(hidden, model.lm_head, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 10 == 0:
            progress.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    model.eval()
    return {
        "recipe": asdict(recipe),
        "train_seconds": round(time.time() - start, 1),
        "problems_seen": len(encoded),
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
    }
