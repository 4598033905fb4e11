"""A vision tower pretrained CLIP-style, with no reference to any language model's vocabulary.

The realistic donor (issue 15) needs patch features that are not tied to word embeddings, as in a
real LLaVA whose tower is OpenAI's CLIP. Here a small ViT (`CLIPVisionModel`, the testbed tower's
sizes) learns against a tiny `CLIPTextModel` with its own word-level vocabulary, on generated
captions of easy-vqa train images, by symmetric InfoNCE. Only the pooled CLS embedding is trained
against text; LLaVA later reads the patch tokens of the penultimate layer, which nothing here
ties to any word. Training stops as soon as zero-shot colour and shape accuracy on validation
images meet the recipe's thresholds, and fails loudly when the step budget runs out first; the
learning rate warms up and decays within each round (`rounds.py`), as in the testbed's other stages.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, CLIPVisionModel

from vadasm.eval.easyvqa import COLORS, SHAPES
from vadasm.testbed.rounds import Budget, Criterion, require_met, train_in_rounds

# Varied caption wordings; the first is the one zero-shot evaluation uses. easy-vqa backgrounds
# are light, noisy tints, so no template names a background colour.
CAPTION_TEMPLATES = (
    "a {color} {shape}",
    "a picture of a {color} {shape}",
    "the {shape} is {color}",
    "a {shape} that is {color}",
    "one {color} {shape} on a light background",
    "a drawing of a {color} {shape}",
    "{color} {shape}",
    "there is a {color} {shape} in the picture",
)
PAD, EOS = "<pad>", "<eos>"

Labelled = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # pixels, colour index, shape index


def caption_vocabulary() -> tuple[str, ...]:
    """The text encoder's own vocabulary: pad, eos, then every caption word (sorted)."""
    words = {w for t in CAPTION_TEMPLATES for w in t.split() if "{" not in w}
    return (PAD, EOS, *sorted(words | set(COLORS) | set(SHAPES)))


def caption(color: int, shape: int, template: int) -> str:
    return CAPTION_TEMPLATES[template].format(color=COLORS[color], shape=SHAPES[shape])


def encode_captions(captions: list[str], vocab: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Word ids + EOS (where the text encoder pools), right-padded; and the attention mask."""
    index = {w: i for i, w in enumerate(vocab)}
    rows = [[index[w] for w in text.split()] + [index[EOS]] for text in captions]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), index[PAD])
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    return ids, mask


def symmetric_info_nce(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, same: torch.Tensor):
    """CLIP's symmetric InfoNCE on unit embeddings, where every pair with the same label is a positive.

    With 24 colour/shape classes a batch of 64 holds many images of one class; calling those pairs
    negatives would push apart captions that say the same thing. `same` (images x texts, bool)
    spreads the target over all of them; with `same` the identity this is CLIP's loss exactly.
    """
    logits = scale * image @ text.T
    target = same.float()
    per_image = F.cross_entropy(logits, target / target.sum(1, keepdim=True))
    per_text = F.cross_entropy(logits.T, target.T / target.T.sum(1, keepdim=True))
    return (per_image + per_text) / 2


@dataclass
class ClipTowerRecipe:
    image_size: int = 64
    patch_size: int = 16
    hidden_size: int = 256
    layers: int = 4
    heads: int = 4
    text_hidden_size: int = 128
    text_layers: int = 2
    embed_dim: int = 128
    batch_size: int = 64
    lr: float = 5e-4
    max_steps: int = 6000  # the budget; training stops earlier once the criterion holds
    round_steps: int = 2000  # one OneCycle (warmup, cosine decay) schedule; the next round restarts it
    warmup_fraction: float = 0.1
    eval_every: int = 250
    min_val_color: float = 0.95
    min_val_shape: float = 0.95
    seed: int = 0


def clip_config(recipe: ClipTowerRecipe) -> CLIPConfig:
    vocab = caption_vocabulary()
    vision = CLIPVisionConfig(
        image_size=recipe.image_size, patch_size=recipe.patch_size, hidden_size=recipe.hidden_size,
        intermediate_size=4 * recipe.hidden_size, num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads, projection_dim=recipe.embed_dim,
    )
    text = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=recipe.text_hidden_size, intermediate_size=4 * recipe.text_hidden_size,
        num_hidden_layers=recipe.text_layers, num_attention_heads=max(1, recipe.text_hidden_size // 32),
        max_position_embeddings=16, projection_dim=recipe.embed_dim,
        pad_token_id=vocab.index(PAD), eos_token_id=vocab.index(EOS), bos_token_id=vocab.index(EOS),
    )
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=recipe.embed_dim)


def _embed(model: CLIPModel, pixels: torch.Tensor, captions: list[str]):
    ids, mask = encode_captions(captions, caption_vocabulary())
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    return out.image_embeds, out.text_embeds


@torch.no_grad()
def zero_shot_accuracy(model: CLIPModel, images: Labelled) -> dict[str, float]:
    """Pick, for each image, the best of the 24 captions "a {color} {shape}": how often colour,
    shape and both are right (caption retrieval over every label; chance 1/8, 1/3, 1/24)."""
    x, colors, shapes = images
    pairs = [(c, s) for c in range(len(COLORS)) for s in range(len(SHAPES))]
    was_training = model.training
    model.eval()
    ids, mask = encode_captions([caption(c, s, 0) for c, s in pairs], caption_vocabulary())
    text = F.normalize(model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output, dim=-1)
    best = []
    for start in range(0, len(x), 256):
        image = model.get_image_features(pixel_values=x[start : start + 256]).pooler_output
        best.append((F.normalize(image, dim=-1) @ text.T).argmax(-1))
    model.train(was_training)
    chosen = torch.tensor(pairs)[torch.cat(best)]
    color_hit, shape_hit = chosen[:, 0] == colors, chosen[:, 1] == shapes
    return {"color": color_hit.float().mean().item(), "shape": shape_hit.float().mean().item(),
            "both": (color_hit & shape_hit).float().mean().item()}


def tower_criterion(recipe: ClipTowerRecipe) -> Criterion:
    return Criterion(f"val zero-shot colour >= {100 * recipe.min_val_color:.0f}% and shape >= "
                     f"{100 * recipe.min_val_shape:.0f}%",
                     {"color": recipe.min_val_color, "shape": recipe.min_val_shape})


def train_clip_tower(recipe: ClipTowerRecipe, train: Labelled, val: Labelled) -> tuple[CLIPVisionModel, dict]:
    """Contrastive pretraining in rounds (`rounds.train_in_rounds`: one OneCycle warmup-cosine schedule
    per `round_steps`) until the zero-shot criterion holds on `val`, checked every `eval_every` steps;
    CriterionNotMet (a VadasmError) if `max_steps` pass without it. A constant learning rate stalled
    at val shape 0.946 after 3,000 steps; the decay lets the last steps settle. Flips as augmentation."""
    torch.manual_seed(recipe.seed)
    model = CLIPModel(clip_config(recipe)).train()
    x, colors, shapes = train
    labels = colors * len(SHAPES) + shapes
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.05)
    schedule: list[torch.optim.lr_scheduler.LRScheduler] = []
    generator = torch.Generator().manual_seed(recipe.seed)
    losses: list[float] = []

    def start_round(_: int, length: int) -> None:
        schedule[:] = [torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=length,
                                                           pct_start=recipe.warmup_fraction)]

    def step(_: int) -> float:
        idx = torch.randint(len(x), (recipe.batch_size,), generator=generator)
        batch = x[idx]
        flip = torch.rand(2, generator=generator)
        batch = batch.flip(-1) if flip[0] < 0.5 else batch
        batch = batch.flip(-2) if flip[1] < 0.5 else batch
        templates = torch.randint(len(CAPTION_TEMPLATES), (len(idx),), generator=generator).tolist()
        texts = [caption(int(colors[i]), int(shapes[i]), t) for i, t in zip(idx, templates)]
        image, text = _embed(model, batch, texts)
        same = labels[idx][:, None] == labels[idx][None, :]
        loss = symmetric_info_nce(F.normalize(image, dim=-1), F.normalize(text, dim=-1),
                                  model.logit_scale.exp().clamp(max=100), same)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule[0].step()
        losses.append(loss.item())
        return losses[-1]

    start = time.time()
    criterion = tower_criterion(recipe)
    budget = Budget(recipe.max_steps, recipe.round_steps, recipe.eval_every)
    rounds = train_in_rounds(start_round, step, lambda: zero_shot_accuracy(model, val), criterion, budget,
                             "clip tower")
    require_met("clip-tower", rounds, criterion, budget, "the recipe's max_steps")
    tower: CLIPVisionModel = model.vision_model  # a stock CLIPVisionModel inside CLIPModel
    metrics = {"recipe": asdict(recipe), "steps": rounds.steps_used, "seconds": round(time.time() - start, 1),
               "train_images": len(x), "first_loss": round(sum(losses[:20]) / len(losses[:20]), 4),
               "final_loss": rounds.final_loss, "val_zero_shot": zero_shot_accuracy(model, val),
               "rounds": rounds, "criterion": criterion, "budget": budget}
    return tower.eval(), metrics
