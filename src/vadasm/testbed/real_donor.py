"""Entry points of the realistic LLaVA donor (issue 15): the CLIP-style tower, then the donor itself.

`build_clip_tower` makes the tower artefact (shared by both donors); `build_real_donor` assembles a
stock LLaVA from a converted LM and that tower, runs LLaVA-1.5's two stages and records where its
image tokens land. Both return the fields of a testbed `BuildRecord` (recipe, inputs, scores), so
`vadasm testbed build` can wrap them as opt-in artefacts; neither touches the easy-vqa test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from transformers import AutoTokenizer, CLIPVisionModel

from vadasm.errors import VadasmError
from vadasm.eval.easyvqa import VqaItem, load_split
from vadasm.testbed.clip_tower import ClipTowerRecipe, train_clip_tower
from vadasm.testbed.donor import IMAGE_TOKENS, TEMPLATES, assemble_llava, build_processor
from vadasm.testbed.landing import easyvqa_images, landing_report
from vadasm.testbed.llava_stages import StagesRecipe, feature_alignment, instruction_tuning
from vadasm.testbed.vision import image_processor, labelled_images, load_pixels

DATA = "easy-vqa train split (images 0-3599); criteria on val (images 3600-3999)"


def build_clip_tower(out: Path, recipe: ClipTowerRecipe | None = None) -> dict:
    """Train the contrastive tower to its validation criterion and save it (+ image processor) in `out`;
    the returned `training` entry holds the criterion, steps used of the budget and the validation curve."""
    recipe = recipe or ClipTowerRecipe()
    train, val = load_split("train"), load_split("val")
    pixels = load_pixels(train + val, image_processor(recipe.image_size))
    tower, metrics = train_clip_tower(recipe, labelled_images(train, pixels), labelled_images(val, pixels))
    tower.save_pretrained(out)
    image_processor(recipe.image_size).save_pretrained(out)
    rounds, criterion, budget = metrics.pop("rounds"), metrics.pop("criterion"), metrics.pop("budget")
    return {"recipe": metrics.pop("recipe"), "inputs": {"data": DATA + ", captions generated from labels"},
            "scores": metrics, "training": rounds.record(criterion, budget)}


def build_real_donor(out: Path, lm_folder: Path, tower_folder: Path, base: str,
                     recipe: StagesRecipe | None = None,
                     items: tuple[tuple[VqaItem, ...], tuple[VqaItem, ...]] | None = None,
                     landing_images: Sequence[tuple[Path, str, str]] | None = None) -> dict:
    """A stock LLaVA on `lm_folder` (a converted `base`: smollm2 or gemma3-270m) and the CLIP tower,
    through feature alignment and instruction tuning, saved in `out`. `items` (train, val) default
    to easy-vqa's; `landing_images` to the first 64 labelled val images."""
    if base not in IMAGE_TOKENS:
        raise VadasmError(f"real donor: unknown base {base!r}; choose one of {', '.join(IMAGE_TOKENS)}")
    for folder, what in ((lm_folder, "language model"), (tower_folder, "CLIP tower")):
        if not (Path(folder) / "config.json").is_file():
            raise VadasmError(f"{folder}: no config.json; build the {what} artefact first")
    recipe = recipe or StagesRecipe()
    tower = CLIPVisionModel.from_pretrained(tower_folder)
    model = assemble_llava(lm_folder, tower, IMAGE_TOKENS[base])
    processor = build_processor(AutoTokenizer.from_pretrained(lm_folder), image_processor(tower.config.image_size),
                                IMAGE_TOKENS[base], TEMPLATES[base], tower.config.patch_size)
    train, val = items or (load_split("train"), load_split("val"))
    pixels = load_pixels(train + val, processor.image_processor)
    training = feature_alignment(model, processor, train, val, pixels, recipe)
    training |= instruction_tuning(model, processor, train, val, pixels, recipe)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    landing = landing_report(out, landing_images if landing_images is not None else easyvqa_images("val", 64))
    return {"recipe": {"base": base, **asdict(recipe)},
            "inputs": {"language_model": str(lm_folder), "vision_tower": str(tower_folder), "data": DATA},
            "scores": {"training": training, "landing_val": landing}}
