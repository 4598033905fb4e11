"""The text-skill recipient: SmolLM2 fully fine-tuned on generated arithmetic (train split only).

A full fine-tune (not LoRA) gives a dense task vector over SmolLM2, which is what task arithmetic,
TIES/DARE and the SVD sigma blend are meant for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vadasm.eval.arith import problems
from vadasm.testbed.rounds import Criterion, stage_record, timed_rounds
from vadasm.testbed.sft import (
    Batch,
    Encoded,
    answer_loss,
    collate,
    encode_chat,
    exact_answer_accuracy,
    linear_warmup_decay,
)


@dataclass
class RecipientRecipe:
    steps: int = 300  # the budget; training stops earlier once the criterion holds
    round_steps: int = 150  # one warmup-decay schedule; the first round is the former fixed recipe
    eval_every: int = 150  # round ends only, as for the donor: its task vector is what grafts merge
    # exact answers to `val_problems` val problems; SmolLM2 scores 8% on test, the recipe's target is
    # +20 points over it; 0 disables
    min_val_accuracy: float = 0.28
    val_problems: int = 256
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0


def encode_problem(tokenizer: PreTrainedTokenizerBase, question: str, answer: str) -> Encoded:
    user = {"role": "user", "content": question}
    prompt = tokenizer.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template([user, {"role": "assistant", "content": answer}], tokenize=False)
    return encode_chat(tokenizer, prompt, full)


def recipient_criterion(recipe: RecipientRecipe) -> Criterion:
    return Criterion(f"exact answers to {recipe.val_problems} val arithmetic problems >= "
                     f"{100 * recipe.min_val_accuracy:.0f}%", {"all": recipe.min_val_accuracy})


def train_recipient(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, recipe: RecipientRecipe) -> dict:
    """Fine-tune every weight on answer tokens of distinct train problems (`batch_size` a step) until
    `recipient_criterion` holds on val problems or `recipe.steps` are spent (`metrics["rounds"].met`)."""
    torch.manual_seed(recipe.seed)
    data = problems("train", recipe.steps * recipe.batch_size, seed=recipe.seed)
    encoded = [encode_problem(tokenizer, p.question, str(p.answer)) for p in data]
    val = problems("val", recipe.val_problems, seed=recipe.seed)
    val_encoded = [encode_problem(tokenizer, p.question, str(p.answer)) for p in val]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    schedule: list[torch.optim.lr_scheduler.LRScheduler] = []

    def start_round(_: int, length: int) -> None:
        schedule[:] = [linear_warmup_decay(optimizer, length)]

    def step(global_step: int) -> float:
        chunk = encoded[global_step * recipe.batch_size : (global_step + 1) * recipe.batch_size]
        batch = collate(chunk, tokenizer.pad_token_id)
        hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        loss = answer_loss(hidden, model.lm_head, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule[0].step()
        return loss.item()

    def forward(batch: Batch, _: list[int]) -> torch.Tensor:
        return model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state

    def measure() -> dict[str, float]:
        model.eval()
        values = exact_answer_accuracy(forward, model.lm_head, val_encoded, [p.kind for p in val],
                                       tokenizer.pad_token_id, recipe.batch_size, tokenizer.eos_token_id)
        model.train()
        return values

    criterion = recipient_criterion(recipe)
    model.train()
    rounds, budget, start = timed_rounds(recipe, start_round, step, measure, criterion, "smollm2-arith")
    model.eval()
    return stage_record(recipe, start, "problems_seen", rounds, criterion, budget)
