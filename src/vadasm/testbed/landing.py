"""Where a LLaVA donor's image tokens land in its language model's input space.

The graft maps of classes B/C are fitted on word embeddings, so they carry image tokens well only
if those tokens sit near words. The testbed's first donor puts them on words by construction; a
real LLaVA does not. These numbers say which case a donor is: the norm of image tokens relative to
word embeddings, the cosine to the nearest vocabulary row, and how often that nearest row is the
first token of the image's colour or shape word (issue 15). Scanned in chunks, so a 262k-row
vocabulary never needs a second copy in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from vadasm.errors import VadasmError


def landing_numbers(tokens: torch.Tensor, vocabulary: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    color_ids: Sequence[frozenset[int]], shape_ids: Sequence[frozenset[int]]) -> dict:
    """Landing numbers of image `tokens` (n, d) against vocabulary chunks of (ids, embedding rows).

    `color_ids[i]` / `shape_ids[i]`: the ids that count as token i's colour / shape word.
    """
    unit = F.normalize(tokens, dim=-1)
    best = torch.full((len(tokens),), -2.0)
    best_id = torch.full((len(tokens),), -1, dtype=torch.long)
    norm_sum, rows = 0.0, 0
    for ids, embeddings in vocabulary:
        norm_sum += embeddings.norm(dim=-1).sum().item()
        rows += len(ids)
        cosine = unit @ F.normalize(embeddings, dim=-1).T
        value, where = cosine.max(-1)
        better = value > best
        best = torch.where(better, value, best)
        best_id = torch.where(better, ids[where], best_id)
    nearest = best_id.tolist()
    color = [n in c for n, c in zip(nearest, color_ids)]
    shape = [n in s for n, s in zip(nearest, shape_ids)]
    token_norm = tokens.norm(dim=-1).mean().item()
    return {
        "image_tokens": len(tokens),
        "vocabulary_rows": rows,
        "token_norm": token_norm,
        "word_norm": norm_sum / rows,
        "norm_ratio": token_norm / (norm_sum / rows),
        "nearest_cosine": best.mean().item(),
        "nearest_is_color": sum(color) / len(color),
        "nearest_is_shape": sum(shape) / len(shape),
        "nearest_is_either": sum(c or s for c, s in zip(color, shape)) / len(color),
        "nearest_ids": Counter(nearest).most_common(5),
    }


def label_token_ids(tokenizer, word: str) -> frozenset[int]:
    """First-token ids of the spellings a caption could use: " red", "red", " Red", "Red"."""
    spellings = (" " + word, word, " " + word.capitalize(), word.capitalize())
    ids = {tokenizer(s, add_special_tokens=False).input_ids[0] for s in spellings}
    return frozenset(ids - {tokenizer.unk_token_id})


def word_rows(model: LlavaForConditionalGeneration, tokenizer, chunk: int = 8192
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Input embeddings (scale included, as the LM sees them) of ordinary vocabulary tokens, in chunks:
    special and added tokens (e.g. Gemma's <unusedN>) and the image token are left out."""
    embed = model.get_input_embeddings()
    skip = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder) | {model.config.image_token_index}
    keep = torch.tensor([i for i in range(min(len(tokenizer), embed.num_embeddings)) if i not in skip])
    with torch.no_grad():
        for start in range(0, len(keep), chunk):
            ids = keep[start : start + chunk]
            yield ids, embed(ids).float()


def landing_report(folder: Path, images: Sequence[tuple[Path, str, str]]) -> dict:
    """Landing numbers of the image tokens a LLaVA folder makes of `images` ((path, colour, shape) each)."""
    if not images:
        raise VadasmError(f"{folder}: landing needs at least one image")
    if not (Path(folder) / "config.json").is_file():
        raise VadasmError(f"{folder}: no config.json; landing needs a LLaVA model folder")
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder)
    tokenizer = processor.tokenizer
    pixels = processor.image_processor(images=[Image.open(p).convert("RGB") for p, _, _ in images],
                                       return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        features = torch.stack(model.model.get_image_features(pixel_values=pixels).pooler_output).float()
    per_image = features.shape[1]
    colors = [label_token_ids(tokenizer, c) for _, c, _ in images for _ in range(per_image)]
    shapes = [label_token_ids(tokenizer, s) for _, _, s in images for _ in range(per_image)]
    numbers = landing_numbers(features.flatten(0, 1), word_rows(model, tokenizer), colors, shapes)
    numbers["nearest_words"] = [(tokenizer.convert_ids_to_tokens(i), n) for i, n in numbers.pop("nearest_ids")]
    return {"folder": str(folder), "images": len(images), **numbers}


def easyvqa_images(split: str, count: int) -> list[tuple[Path, str, str]]:
    """The first `count` labelled images of an easy-vqa split, as (path, colour, shape)."""
    from vadasm.eval.easyvqa import image_labels, load_split

    labels = sorted(image_labels(load_split(split)).items())[:count]
    return [(path, color, shape) for path, (color, shape) in labels]
