"""`smollm2-reader`: the class C recipient, SmolLM2 taught one-word answers on generic reading comprehension.

Why: a class C graft shows a gain only on a recipient that answers when told the image's content in
words (the text oracle); SmolLM2-Instruct scores ~0% there, it writes sentences. The recipe: answer-only
loss (`sft.py`) on `reader_items` (generated scenes and questions, no easy-vqa image or question
template), prompts through the model's chat template as the eval backend renders them, half with
LLaVA-1.5's short-answer suffix. Only the top `train_layers` decoder layers (and the final norm) are
trained: the tied embeddings stay those of SmolLM2, so the anchor-token maps of a graft still read its
vocabulary, and a step costs a forward pass plus a short backward one (the build machine has 2 cores).
Training stops when exact answers to held-out generated items reach the criterion, within a step budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vadasm.errors import VadasmError
from vadasm.testbed.reader_items import reader_items
from vadasm.testbed.recipient import encode_problem
from vadasm.testbed.rounds import Criterion, fitted, require_met, stage_record, timed_rounds
from vadasm.testbed.sft import Batch, answer_loss, collate, exact_answer_accuracy, linear_warmup_decay

if TYPE_CHECKING:
    from vadasm.testbed.build import BuildOptions
    from vadasm.testbed.record import BuildRecord

ARTEFACT = "smollm2-reader"


@dataclass
class ReaderRecipe:
    # Not yet shown to meet its criterion (results/class_c_recipient/README.md). Best measured: 200 steps of
    # batch 8 (lr 3e-4, top 8 layers, 60% of draws contrastive yes/no pairs, 35% of them negated): val 62.5%,
    # easy-vqa text oracle 61.0% (positive yes/no 79% colour / 74% shape, negated 25% / 33%), blind ~39%.
    # A second round with half the pairs negated (run 6) brought the 'yes' bias back (oracle 62.2% on 111).
    # The budget and the later rounds' shares below are a guess, not a measurement.
    steps: int = 600  # the budget; training stops earlier once the criterion holds
    round_steps: int = 200  # one warmup-decay schedule
    eval_every: int = 50
    min_val_accuracy: float = 0.9  # exact answers to `val_items` held-out generated items; 0 disables
    val_items: int = 64
    train_layers: int = 8  # top decoder layers trained (of SmolLM2's 30)
    batch_size: int = 8  # even: a contrastive pair's twins share a batch
    lr: float = 3e-4
    suffix_share: float = 0.5  # prompts that end with the short-answer suffix, in training and val
    yes_no_share: float = 0.6  # draws that are contrastive yes/no twins (`reader_items`; ~72% of items)
    negated_share: float = 0.5  # yes/no pairs that ask about absence (val, and rounds after the first)
    first_round_negated_share: float | None = 0.35  # the first round's (None: negated_share): presence first
    seed: int = 0


def reader_criterion(recipe: ReaderRecipe) -> Criterion:
    return Criterion(f"exact answers to {recipe.val_items} held-out generated reading items >= "
                     f"{100 * recipe.min_val_accuracy:.0f}%", {"all": recipe.min_val_accuracy})


def trainable_top(model: PreTrainedModel, layers: int) -> list[torch.nn.Parameter]:
    """Freeze everything but the top `layers` decoder layers and the final norm; return what trains."""
    blocks = model.model.layers
    if not 1 <= layers <= len(blocks):
        raise VadasmError(f"reader recipe: train_layers must be 1-{len(blocks)} for this model (got {layers})")
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for block in blocks[-layers:] for p in block.parameters()] + list(model.model.norm.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def train_reader(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, recipe: ReaderRecipe) -> dict:
    """Train on distinct generated items (`batch_size` a step) until `reader_criterion` holds on val items
    or `recipe.steps` are spent (`metrics["rounds"].met`); the caller decides what a miss means."""
    torch.manual_seed(recipe.seed)
    shares = recipe.suffix_share, recipe.yes_no_share, recipe.negated_share
    first = min(recipe.round_steps, recipe.steps) * recipe.batch_size
    first_negated = recipe.negated_share if recipe.first_round_negated_share is None else \
        recipe.first_round_negated_share
    data = reader_items(first, recipe.seed, "train", *shares[:2], first_negated)
    data += reader_items(recipe.steps * recipe.batch_size - first, recipe.seed, "train-later", *shares)
    val = reader_items(recipe.val_items, recipe.seed, "val", *shares)
    encoded = [encode_problem(tokenizer, item.prompt, item.answer) for item in data]
    val_encoded = [encode_problem(tokenizer, item.prompt, item.answer) for item in val]
    params = trainable_top(model, recipe.train_layers)
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    schedule: list[torch.optim.lr_scheduler.LRScheduler] = []

    def start_round(_: int, length: int) -> None:
        schedule[:] = [linear_warmup_decay(optimizer, length)]

    def forward(batch: Batch, _: list[int] | None = None) -> torch.Tensor:
        return model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state

    def step(global_step: int) -> float:
        batch = collate(encoded[global_step * recipe.batch_size : (global_step + 1) * recipe.batch_size],
                        tokenizer.pad_token_id)
        loss = answer_loss(forward(batch), model.lm_head, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule[0].step()
        return loss.item()

    def measure() -> dict[str, float]:
        model.eval()
        values = exact_answer_accuracy(forward, model.lm_head, val_encoded, [item.group for item in val],
                                       tokenizer.pad_token_id, recipe.batch_size)
        model.train()
        return values

    criterion = reader_criterion(recipe)
    model.train()
    rounds, budget, start = timed_rounds(recipe, start_round, step, measure, criterion, ARTEFACT)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return stage_record(recipe, start, "items_seen", rounds, criterion, budget,
                        examples=[asdict(item) for item in data[:3]])


def build_reader(out: Path, options: BuildOptions, recipe: ReaderRecipe | None = None) -> BuildRecord:
    """Builder of the `smollm2-reader` artefact, `(out_dir, BuildOptions) -> BuildRecord` as in `build.BUILDERS`:
    train from the built `smollm2` artefact, raise `CriterionNotMet` (nothing written) on a miss, else save.
    The default recipe takes the build's seed, criteria switch and smoke step cap (`rounds.fitted`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vadasm.testbed.paths import artefact_dir, is_built
    from vadasm.testbed.record import BuildRecord

    if not is_built("smollm2"):
        raise VadasmError(f"{ARTEFACT} needs the smollm2 testbed artefact: run `vadasm testbed build --only smollm2`")
    base = artefact_dir("smollm2")
    recipe = recipe or fitted(ReaderRecipe(), options, ("steps", "round_steps", "eval_every"), ("min_val_accuracy",))
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    metrics = train_reader(model, tokenizer, recipe)
    rounds, criterion, budget = metrics.pop("rounds"), metrics.pop("criterion"), metrics.pop("budget")
    require_met(ARTEFACT, rounds, criterion, budget, "the reader recipe's steps")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return BuildRecord(
        artefact=ARTEFACT,
        recipe=metrics.pop("recipe"),
        inputs={"base": str(base), "data": "vadasm.testbed.reader_items: generated scenes and questions "
                "(no easy-vqa image or question template), train stream; a val stream for the criterion"},
        scores={"training": metrics},
        training=rounds.record(criterion, budget),
    )

