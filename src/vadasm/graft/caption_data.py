"""Images with text for the calibration-fitted projectors (`--projector closed-form`, `--map calibrated`).

Each item is an image and the words for what it shows. Two sources:
- `easyvqa`: the built-in task's **train** split (images 0-3599; never val, which tuning uses, nor test, which
  measurement uses); the text is the image's colour and shape ("red circle"), read off the questions asked
  about it (easy-vqa ships no labels);
- a JSONL file of `{"image": PATH, "text": WORDS}` records, image paths relative to the file.
Items are drawn by a seeded shuffle, so `limit` of them are a sample of the whole source, not its first rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from vadasm.errors import VadasmError
from vadasm.io.json_file import jsonl_records

BUILTIN_CAPTIONS = ("easyvqa",)


@dataclass(frozen=True)
class CaptionItem:
    image: Path
    text: str


def check_caption_source(source: str) -> None:
    """Refuse a source that is neither built in nor a file, before any model is opened."""
    if source not in BUILTIN_CAPTIONS and not Path(source).expanduser().is_file():
        raise VadasmError(f"{source}: --calibration-data must be a built-in source ({', '.join(BUILTIN_CAPTIONS)}) "
                          "or a JSONL file of {\"image\", \"text\"} records")


def caption_items(source: str, limit: int, seed: int = 0) -> list[CaptionItem]:
    """Up to `limit` (image, text) items from `source`, in a seeded random order."""
    check_caption_source(source)
    items = _easyvqa_items() if source == "easyvqa" else _jsonl_items(Path(source).expanduser())
    random.Random(f"captions-{seed}").shuffle(items)
    return items[:limit]


def _easyvqa_items() -> list[CaptionItem]:
    from vadasm.eval.easyvqa import image_labels, load_split

    labels = image_labels(load_split("train"))
    return [CaptionItem(path, f"{colour} {shape}") for path, (colour, shape) in sorted(labels.items())]


def _jsonl_items(path: Path) -> list[CaptionItem]:
    items = []
    for number, record in jsonl_records(path, ("image", "text")):
        image, text = record["image"], record["text"]
        if not isinstance(text, str) or not text.strip():
            raise VadasmError(f"{path}:{number}: \"text\" must be a non-empty string")
        image_path = path.parent / str(image)
        if not image_path.is_file():
            raise VadasmError(f"{path}:{number}: image {image!r} not found (paths are relative to the file)")
        items.append(CaptionItem(image_path, text.strip()))
    if not items:
        raise VadasmError(f"{path}: no calibration records")
    return items
