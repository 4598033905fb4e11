"""Step 1 of the donor: a small CLIP vision tower pretrained as a colour/shape classifier.

Training the tower on its own is ~20x cheaper per step than training through the language model,
so it learns to see here. LLaVA hands the patch tokens (not CLS) to the language model, so every
patch is trained to name one word of the image: even patches its colour, odd patches its shape
(`patch_roles`). The projector can then put each image token on the LM's embedding of one word, and
the LM reads an image as " red circle red circle ...". A tower trained to put both on every patch
forces the projector to land on the sum of two word embeddings, which the LM never sees in text:
the donors trained that way answered yes/no questions from the wording (SPEC §8).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from vadasm.eval.easyvqa import COLORS, SHAPES, VqaItem, image_labels
from vadasm.testbed.rounds import Budget, Criterion, train_in_rounds


@dataclass
class TowerRecipe:
    image_size: int = 64
    patch_size: int = 16
    hidden_size: int = 256
    layers: int = 4
    heads: int = 4
    steps: int = 6000  # the budget; training stops earlier once the criterion holds
    round_steps: int = 2000  # one OneCycle schedule; the first round is the former fixed recipe
    eval_every: int = 250
    min_patch_accuracy: float = 0.95  # on val colour patches and on val shape patches; 0 disables
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0


def image_processor(image_size: int) -> CLIPImageProcessor:
    """CLIP preprocessing at the easy-vqa resolution (no resize needed, CLIP mean/std)."""
    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )


def load_pixels(items: tuple[VqaItem, ...], processor: CLIPImageProcessor) -> dict[Path, torch.Tensor]:
    """Preprocessed pixels of every distinct image in `items`, keyed by path (ids repeat across splits)."""
    paths = sorted({item.image_path for item in items})
    pixels: dict[Path, torch.Tensor] = {}
    for start in range(0, len(paths), 256):
        chunk = paths[start : start + 256]
        images = [Image.open(path).convert("RGB") for path in chunk]
        batch = processor(images=images, return_tensors="pt")["pixel_values"]
        pixels.update(zip(chunk, batch))
    return pixels


def tower_config(recipe: TowerRecipe) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        image_size=recipe.image_size,
        patch_size=recipe.patch_size,
        hidden_size=recipe.hidden_size,
        intermediate_size=4 * recipe.hidden_size,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        projection_dim=recipe.hidden_size,
    )


WORDS = COLORS + SHAPES  # the classes a patch names: a colour word or a shape word


def patch_roles(n_patches: int) -> torch.Tensor:
    """1 where a patch names the shape, 0 where it names the colour (alternating, colour first)."""
    return torch.arange(n_patches) % 2


def patch_word_targets(colors: torch.Tensor, shapes: torch.Tensor, n_patches: int) -> torch.Tensor:
    """Index into WORDS of the word each patch of each image should name: (images, patches)."""
    roles = patch_roles(n_patches)
    return torch.where(roles.bool(), shapes[:, None] + len(COLORS), colors[:, None])


class PatchClassifier(nn.Module):
    """Tower + one linear head over WORDS applied to every patch token of the last hidden layer."""

    def __init__(self, tower: CLIPVisionModel):
        super().__init__()
        self.tower = tower
        self.word_head = nn.Linear(tower.config.hidden_size, len(WORDS))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
        return self.word_head(hidden)


def labelled_images(items: tuple[VqaItem, ...], pixels: dict[Path, torch.Tensor]):
    """Pixels, colour index and shape index of every image whose labels the questions reveal (path order)."""
    labels = image_labels(items)
    ids = sorted(labels)
    x = torch.stack([pixels[i] for i in ids])
    colors = torch.tensor([COLORS.index(labels[i][0]) for i in ids])
    shapes = torch.tensor([SHAPES.index(labels[i][1]) for i in ids])
    return x, colors, shapes


@torch.no_grad()
def tower_accuracy(model: PatchClassifier, x: torch.Tensor, colors: torch.Tensor, shapes: torch.Tensor):
    """Per-patch accuracy of colour patches and of shape patches (every patch must be right)."""
    model.eval()
    hits = []
    for start in range(0, len(x), 256):
        logits = model(x[start : start + 256])
        targets = patch_word_targets(colors[start : start + 256], shapes[start : start + 256], logits.shape[1])
        hits.append(logits.argmax(-1) == targets)
    model.train()
    hit = torch.cat(hits).float()
    roles = patch_roles(hit.shape[1]).bool()
    return {"color": hit[:, ~roles].mean().item(), "shape": hit[:, roles].mean().item()}


def tower_criterion(recipe: TowerRecipe) -> Criterion:
    floor = recipe.min_patch_accuracy
    return Criterion(f"val patch accuracy >= {100 * floor:.0f}% on colour and on shape patches",
                     {"color": floor, "shape": floor})


def pretrain_tower(
    recipe: TowerRecipe,
    train: tuple[VqaItem, ...],
    val: tuple[VqaItem, ...],
    pixels: dict[Path, torch.Tensor],
) -> tuple[CLIPVisionModel, dict]:
    """Train the tower with flips as augmentation (colour and shape survive a flip; patch roles stay
    tied to positions, so the tower learns to name the colour at even positions whatever the flip),
    until `tower_criterion` holds on val or `recipe.steps` are spent (`metrics["rounds"].met`)."""
    torch.manual_seed(recipe.seed)
    model = PatchClassifier(CLIPVisionModel(tower_config(recipe)))
    x, colors, shapes = labelled_images(train, pixels)
    vx, vcolors, vshapes = labelled_images(val, pixels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.05)
    schedule: list[torch.optim.lr_scheduler.LRScheduler] = []
    generator = torch.Generator().manual_seed(recipe.seed)
    loss_fn = nn.CrossEntropyLoss()

    def start_round(_: int, length: int) -> None:
        schedule[:] = [torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=length)]

    def step(_: int) -> float:
        idx = torch.randint(len(x), (recipe.batch_size,), generator=generator)
        batch = x[idx]
        flip = torch.rand(2, generator=generator)
        if flip[0] < 0.5:
            batch = batch.flip(-1)
        if flip[1] < 0.5:
            batch = batch.flip(-2)
        logits = model(batch)
        targets = patch_word_targets(colors[idx], shapes[idx], logits.shape[1])
        loss = loss_fn(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule[0].step()
        return loss.item()

    start = time.time()
    criterion, budget = tower_criterion(recipe), Budget(recipe.steps, recipe.round_steps, recipe.eval_every)
    rounds = train_in_rounds(start_round, step, lambda: tower_accuracy(model, vx, vcolors, vshapes),
                             criterion, budget, "vision tower")
    metrics = {
        "recipe": asdict(recipe),
        "seconds": round(time.time() - start, 1),
        "train_images": len(x),
        "val_patch_accuracy": tower_accuracy(model, vx, vcolors, vshapes),
        "rounds": rounds,
        "criterion": criterion,
        "budget": budget,
    }
    return model.tower, metrics
