"""Answer-only supervised fine-tuning pieces shared by the donor and the recipient.

Only the answer tokens carry loss, and logits are computed only at the positions that predict them:
on a 49k-262k vocabulary, full-sequence logits would cost more than the rest of the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Encoded:
    """Prompt + answer token ids; the answer starts at `answer_start`."""

    ids: list[int]
    answer_start: int


def encode_chat(tokenizer, prompt: str, full: str, expand=lambda text: text) -> Encoded:
    """Tokenise a rendered prompt and its rendered continuation, cutting the answer after EOS."""
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently with and without an answer")
    prompt_ids = tokenizer(expand(prompt), add_special_tokens=False).input_ids
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False).input_ids
    eos = tokenizer.eos_token_id
    if eos in answer_ids:
        answer_ids = answer_ids[: answer_ids.index(eos) + 1]
    return Encoded(prompt_ids + answer_ids, len(prompt_ids))


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor  # (row, column) of each position whose next token is an answer token
    cols: torch.Tensor
    targets: torch.Tensor


def collate(seqs: list[Encoded], pad_id: int) -> Batch:
    """Right-padded batch plus the gather indices of the answer-predicting positions."""
    width = max(len(s.ids) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    rows, cols, targets = [], [], []
    for r, seq in enumerate(seqs):
        input_ids[r, : len(seq.ids)] = torch.tensor(seq.ids)
        attention[r, : len(seq.ids)] = 1
        for pos in range(seq.answer_start, len(seq.ids)):
            rows.append(r)
            cols.append(pos - 1)
            targets.append(seq.ids[pos])
    return Batch(input_ids, attention, torch.tensor(rows), torch.tensor(cols), torch.tensor(targets))


def answer_loss(hidden: torch.Tensor, lm_head: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Cross-entropy on answer tokens, with the LM head applied to those positions only."""
    logits = lm_head(hidden[batch.rows, batch.cols])
    return F.cross_entropy(logits.float(), batch.targets)


def linear_warmup_decay(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / steps)
    )


def answer_hits(
    hidden: torch.Tensor, lm_head: torch.nn.Module, batch: Batch, end_id: int | None = None
) -> torch.Tensor:
    """Per row: is every answer token the argmax of its position's logits? Exactly then greedy decoding
    begins with the answer, so a validation check needs one forward pass. Targets equal to `end_id` are
    not checked: the eval harness reads the reply's first line, so ending it with a newline counts too.
    For a model trained on the answer format it equals the harness score (SmolLM2 after 30 arithmetic
    steps: 7.0% both, every operation equal, same 128 val problems); for others it is a lower bound
    (SmolLM2 base, 256 val problems: 0.0% with the end token, 0.4% without, harness 5.1%, since the
    base replies "83 + 30 = 113" and the harness takes the line's last number)."""
    wrong = lm_head(hidden[batch.rows, batch.cols]).argmax(-1) != batch.targets
    if end_id is not None:
        wrong &= batch.targets != end_id
    wrong = wrong.float()
    misses = torch.zeros(hidden.shape[0]).index_add_(0, batch.rows, wrong)
    return misses == 0



@torch.no_grad()
def exact_answer_accuracy(
    forward: Callable[[Batch, list[int]], torch.Tensor],
    lm_head: torch.nn.Module,
    encoded: list[Encoded],
    groups: list[str],
    pad_id: int,
    batch_size: int = 32,
    end_id: int | None = None,
) -> dict[str, float]:
    """Share of validation items whose answer greedy decoding would write ("all", and per group; see
    `answer_hits`): `forward(batch, item_indices)` returns the last hidden states of the trained model."""
    hits = []
    for start in range(0, len(encoded), batch_size):
        idx = list(range(start, min(start + batch_size, len(encoded))))
        batch = collate([encoded[i] for i in idx], pad_id)
        hits.append(answer_hits(forward(batch, idx), lm_head, batch, end_id))
    hit = torch.cat(hits).float()
    values = {"all": hit.mean().item()}
    for group in sorted(set(groups)):
        values[group] = hit[torch.tensor([g == group for g in groups])].mean().item()
    return values
