"""LLaVA-1.5's two training stages on a stock `LlavaForConditionalGeneration` (issue 15's realistic donor).

Unlike `donor.py` (projector fitted onto word embeddings), nothing here tells the projector where
image tokens should land: (1) feature alignment trains a randomly initialised `mlp2x_gelu`
projector ALONE through the frozen LM's next-token loss on image captions; (2) instruction tuning
trains a LoRA on every linear layer of the LM plus the projector on easy-vqa train questions under
varied instructions (the bare question, LLaVA-1.5's short-answer suffix, a few rephrasings), loss
on answer tokens only, and merges the LoRA back. Each stage stops as soon as its validation
criterion holds (checked every `*_eval_every` steps) and raises a one-line VadasmError when its
step budget is spent first.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from vadasm.errors import MissingExtraError, VadasmError
from vadasm.eval.easyvqa import COLORS, SHAPES, VqaItem, image_labels
from vadasm.testbed.donor import balanced_order
from vadasm.testbed.donor_recipe import encode_item
from vadasm.testbed.sft import Batch, Encoded, answer_loss, collate

# A subset of LLaVA's stage-1 "brief description" instructions; the first is used for validation.
CAPTION_PROMPTS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
)
LM_CAPTIONS = ("A {color} {shape}.", "The image shows a {color} {shape}.", "A {shape}, colored {color}.",
               "There is a {color} {shape} on a light background.")
SHORT_ANSWER = "Answer the question using a single word or phrase."  # LLaVA-1.5's VQA suffix
# Instruction formats of stage 2: bare, LLaVA-1.5's suffix, and rephrased wrappers written here.
INSTRUCTIONS = ("{q}", "{q}\n" + SHORT_ANSWER, "{q} Reply with one word.", "Look at the image and answer: {q}",
                "Question about the picture: {q}\nGive a short answer.")
VAL_FORMATS = {"bare": INSTRUCTIONS[0], "short_answer": INSTRUCTIONS[1]}


@dataclass
class StagesRecipe:
    vision_feature_layer: int = -2  # LLaVA-1.5 reads the penultimate layer's patch tokens
    batch_size: int = 16
    align_lr: float = 1e-3
    align_max_steps: int = 600
    align_eval_every: int = 100
    align_min_val: float = 0.9  # caption's colour and shape word chosen right among the candidates
    tune_lr_lora: float = 5e-4
    tune_lr_projector: float = 1e-4
    lora_rank: int = 16
    lora_alpha: int = 32
    tune_max_steps: int = 600
    tune_eval_every: int = 100  # a check (480 questions) costs ~10 steps
    tune_min_val: float = 0.92  # overall, in every validation format
    tune_min_val_what: float = 0.95  # what-colour and what-shape, in every validation format
    val_images: int = 200
    val_questions: int = 240
    bf16: bool = True  # training forwards in bfloat16 autocast where the CPU has native bf16 (`bf16_autocast`)
    seed: int = 0


def first_token_ids(tokenizer, words: tuple[str, ...]) -> list[int]:
    """Id of the first token of " word" for each word; they must differ to tell the words apart."""
    ids = [tokenizer(" " + w, add_special_tokens=False).input_ids[0] for w in words]
    if len(set(ids)) != len(ids):
        raise VadasmError(f"llava stages: the tokenizer starts several of {', '.join(words)} with one token")
    return ids


def caption_example(processor: LlavaProcessor, color: str, shape: str, prompt: int, template: int) -> Encoded:
    return encode_item(processor, CAPTION_PROMPTS[prompt], LM_CAPTIONS[template].format(color=color, shape=shape))


def _forward(model: LlavaForConditionalGeneration, batch: Batch, pixels: torch.Tensor) -> torch.Tensor:
    return model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values=pixels
                       ).last_hidden_state


def bf16_autocast(wanted: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for a training step's forward when `wanted` and the CPU has native bf16
    matmuls (measured 2.3x faster than float32 on this project's 2-core AMD EPYC); a no-op otherwise,
    since emulated bf16 is slower. Weights and optimizer state stay float32, as in LLaVA-1.5's bf16
    mixed precision; validation checks run in float32, on the model exactly as it will be saved."""
    if wanted and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def row_all_right(rows: torch.Tensor, correct: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Per row, whether every answer position of that row is right (greedy decoding would say it)."""
    wrong = torch.zeros(n_rows, dtype=torch.long).index_add_(0, rows, (~correct).long())
    return wrong == 0


@torch.no_grad()
def caption_word_accuracy(model, processor, images: tuple[torch.Tensor, list[str], list[str]]) -> dict[str, float]:
    """Teacher-forced "A {color} {shape}." after the first caption prompt: how often the LM ranks the
    right colour word first among the colours, and the right shape word among the shapes."""
    x, colors, shapes = images
    color_ids, shape_ids = first_token_ids(processor.tokenizer, COLORS), first_token_ids(processor.tokenizer, SHAPES)
    hits = {"color": 0, "shape": 0}
    for start in range(0, len(x), 32):
        chunk = range(start, min(start + 32, len(x)))
        encoded = [caption_example(processor, colors[i], shapes[i], 0, 0) for i in chunk]
        hidden = _forward(model, collate(encoded, processor.tokenizer.pad_token_id or 0), x[start : start + 32])
        for row, (i, enc) in enumerate(zip(chunk, encoded)):
            for kind, ids, truth in (("color", color_ids, COLORS.index(colors[i])),
                                     ("shape", shape_ids, SHAPES.index(shapes[i]))):
                if ids[truth] not in enc.ids[enc.answer_start :]:
                    raise VadasmError(f"llava stages: the caption of a {colors[i]} {shapes[i]} does not contain "
                                      f"the first token of ' {(colors[i], shapes[i])[kind == 'shape']}'")
                pos = enc.ids.index(ids[truth], enc.answer_start)
                choice = model.lm_head(hidden[row, pos - 1])[ids].argmax().item()
                hits[kind] += int(choice == truth)
    return {k: v / len(x) for k, v in hits.items()}


def labelled_pixels(items: tuple[VqaItem, ...], pixels: dict[Path, torch.Tensor], limit: int | None = None):
    """(pixels, colour names, shape names) of the labelled images of `items` (path order, first `limit`)."""
    labels = sorted(image_labels(items).items())[:limit]
    return (torch.stack([pixels[p] for p, _ in labels]), [c for _, (c, _) in labels], [s for _, (_, s) in labels])


def _check_budget(met: bool, stage: str, step: int, scores: dict, needed: str) -> None:
    if not met:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
        raise VadasmError(f"llava {stage}: validation {shown} short of {needed} after the whole budget of {step} "
                          "steps; raise the step budget or try another seed")


def _freeze(model: torch.nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(False)


@dataclass
class _StageRun:
    steps: int
    scores: dict
    met: bool
    history: list[dict]
    first_loss: float
    start: float  # time.time() when training began


def _train_stage(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_at: Callable[[int], torch.Tensor],
                 check: Callable[[], tuple[dict, dict, bool]], max_steps: int, eval_every: int, desc: str) -> _StageRun:
    """Both stages' loop: step on `loss_at(step)` (steps from 1) until `check()` -> (scores, values for the
    history, met) says met, checked every `eval_every` steps and at `max_steps`."""
    start, losses, history = time.time(), [], []
    model.train()
    for step in tqdm(range(1, max_steps + 1), desc=desc, unit="step"):
        loss = loss_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == max_steps:
            model.eval()
            scores, shown, met = check()
            model.train()
            history.append({"step": step, "loss": round(sum(losses[-20:]) / len(losses[-20:]), 4), **shown})
            if met:
                break
    return _StageRun(step, scores, met, history, round(sum(losses[:20]) / len(losses[:20]), 4), start)


def feature_alignment(model: LlavaForConditionalGeneration, processor: LlavaProcessor,
                      train: tuple[VqaItem, ...], val: tuple[VqaItem, ...], pixels: dict[Path, torch.Tensor],
                      recipe: StagesRecipe) -> dict:
    """Stage 1: the projector alone learns from the frozen LM's loss on captions of train images."""
    torch.manual_seed(recipe.seed)
    model.config.vision_feature_layer = recipe.vision_feature_layer
    _freeze(model)
    projector = model.model.multi_modal_projector
    projector.requires_grad_(True)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=recipe.align_lr, weight_decay=0.0)
    x, colors, shapes = labelled_pixels(train, pixels)
    val_images = labelled_pixels(val, pixels, recipe.val_images)
    generator = torch.Generator().manual_seed(recipe.seed)
    pad = processor.tokenizer.pad_token_id or 0

    def loss_at(_: int) -> torch.Tensor:
        idx = torch.randint(len(x), (recipe.batch_size,), generator=generator).tolist()
        prompts = torch.randint(len(CAPTION_PROMPTS), (len(idx),), generator=generator).tolist()
        templates = torch.randint(len(LM_CAPTIONS), (len(idx),), generator=generator).tolist()
        batch = collate([caption_example(processor, colors[i], shapes[i], p, t)
                         for i, p, t in zip(idx, prompts, templates)], pad)
        with bf16_autocast(recipe.bf16):
            return answer_loss(_forward(model, batch, x[idx]), model.lm_head, batch)

    def check() -> tuple[dict, dict, bool]:
        scores = caption_word_accuracy(model, processor, val_images)
        return scores, scores, min(scores.values()) >= recipe.align_min_val

    run = _train_stage(model, optimizer, loss_at, check, recipe.align_max_steps, recipe.align_eval_every,
                       "feature alignment")
    model.eval()
    _freeze(model)
    _check_budget(run.met, "feature alignment", run.steps, run.scores, f"{recipe.align_min_val} on colour and shape")
    return {"align_steps": run.steps, "align_seconds": round(time.time() - run.start, 1),
            "align_first_loss": run.first_loss, "align_val": run.scores, "align_history": run.history}


def instruction(item: VqaItem, form: str) -> str:
    return form.format(q=item.question)


@torch.no_grad()
def answer_accuracy(model, processor, items: tuple[VqaItem, ...], pixels: dict[Path, torch.Tensor],
                    form: str) -> dict[str, float]:
    """Share of `items` whose whole answer (and end of turn) greedy decoding would produce, under the
    instruction format `form`, overall and per question type (teacher-forced, one forward per batch)."""
    right: list[bool] = []
    pad = processor.tokenizer.pad_token_id or 0
    for start in range(0, len(items), 32):
        chunk = items[start : start + 32]
        batch = collate([encode_item(processor, instruction(i, form), i.answers[0]) for i in chunk], pad)
        hidden = _forward(model, batch, torch.stack([pixels[i.image_path] for i in chunk]))
        correct = model.lm_head(hidden[batch.rows, batch.cols]).argmax(-1) == batch.targets
        right += row_all_right(batch.rows, correct, len(chunk)).tolist()
    scores = {"all": sum(right) / len(right)}
    for qtype in sorted({i.qtype for i in items}):
        hits = [r for r, i in zip(right, items) if i.qtype == qtype]
        scores[qtype] = sum(hits) / len(hits)
    return scores


def _tuning_met(scores: dict[str, dict[str, float]], recipe: StagesRecipe) -> bool:
    return all(s["all"] >= recipe.tune_min_val and
               all(s.get(t, 1.0) >= recipe.tune_min_val_what for t in ("what_color", "what_shape"))
               for s in scores.values())


def _lora(model: LlavaForConditionalGeneration, recipe: StagesRecipe):
    try:
        from peft import LoraConfig, LoraModel
    except ImportError as err:
        raise MissingExtraError("peft", "testbed", "Training the realistic LLaVA donor") from err
    config = LoraConfig(r=recipe.lora_rank, lora_alpha=recipe.lora_alpha, lora_dropout=0.0,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    return LoraModel(model.model.language_model, config, "default")


def instruction_tuning(model: LlavaForConditionalGeneration, processor: LlavaProcessor,
                       train: tuple[VqaItem, ...], val: tuple[VqaItem, ...], pixels: dict[Path, torch.Tensor],
                       recipe: StagesRecipe) -> dict:
    """Stage 2: LoRA on every LM linear layer plus the projector, answer tokens only, LoRA merged back."""
    torch.manual_seed(recipe.seed)
    _freeze(model)
    lora = _lora(model, recipe)
    model.model.language_model = lora.model
    lora_params = [p for n, p in lora.named_parameters() if "lora_" in n]
    projector = list(model.model.multi_modal_projector.parameters())
    for param in lora_params + projector:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW([{"params": lora_params, "lr": recipe.tune_lr_lora},
                                   {"params": projector, "lr": recipe.tune_lr_projector}], weight_decay=0.0)
    order = balanced_order(train, recipe.tune_max_steps * recipe.batch_size, recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    forms = torch.randint(len(INSTRUCTIONS), (len(order),), generator=generator).tolist()
    pick = torch.randperm(len(val), generator=generator)[: recipe.val_questions].tolist()
    val_items = tuple(val[i] for i in sorted(pick))
    pad = processor.tokenizer.pad_token_id or 0

    def loss_at(step: int) -> torch.Tensor:
        span = range((step - 1) * recipe.batch_size, step * recipe.batch_size)
        items = [train[order[k]] for k in span]
        batch = collate([encode_item(processor, instruction(item, INSTRUCTIONS[forms[k]]), item.answers[0])
                         for item, k in zip(items, span)], pad)
        with bf16_autocast(recipe.bf16):
            return answer_loss(_forward(model, batch, torch.stack([pixels[i.image_path] for i in items])),
                               model.lm_head, batch)

    def check() -> tuple[dict, dict, bool]:
        scores = {name: answer_accuracy(model, processor, val_items, pixels, form)
                  for name, form in VAL_FORMATS.items()}
        return scores, {name: round(s["all"], 4) for name, s in scores.items()}, _tuning_met(scores, recipe)

    run = _train_stage(model, optimizer, loss_at, check, recipe.tune_max_steps, recipe.tune_eval_every,
                       "instruction tuning")
    model.model.language_model = lora.merge_and_unload()
    model.eval()
    _freeze(model)
    worst = {f"{name} {key}": value for name, s in run.scores.items() for key, value in s.items()
             if key in ("all", "what_color", "what_shape")}
    _check_budget(run.met, "instruction tuning", run.steps, worst,
                  f"{recipe.tune_min_val} overall and {recipe.tune_min_val_what} on what-colour/what-shape")
    return {"tune_steps": run.steps, "tune_seconds": round(time.time() - run.start, 1),
            "tune_first_loss": run.first_loss, "tune_val": run.scores,
            "tune_val_questions": len(val_items), "tune_history": run.history}
