"""easy-vqa as a task: questions, images, question types and the splits we keep apart.

easy-vqa ships only a train and a test split. We carve a validation split out of train by image
(images 3600-3999), so donors are fitted on `train`, merge coefficients are tuned on `val`, and
`test` is only ever used for reporting. No image labels ship with the data; `image_labels` derives
each image's colour and shape from the questions asked about it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from vadasm.errors import MissingExtraError, VadasmError

COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES = ("circle", "rectangle", "triangle")
SPLITS = ("train", "val", "test")
QUESTION_TYPES = (
    "what_shape",
    "what_color",
    "yesno_shape",
    "yesno_color",
    "yesno_shape_neg",
    "yesno_color_neg",
)
VAL_FIRST_IMAGE = 3600  # train images with id >= this form the validation split


@dataclass(frozen=True)
class VqaItem:
    """One question about one image; `answers` holds the reference answers (one for easy-vqa)."""

    qid: str
    question: str
    answers: tuple[str, ...]
    image_path: Path
    image_id: int
    qtype: str


def question_type(question: str) -> str:
    """Which of the six easy-vqa question families a question belongs to."""
    words = question.lower().rstrip("?").split()
    if words[0] == "what":
        return "what_color" if "color" in words else "what_shape"
    about = "color" if any(w in COLORS for w in words) else "shape"
    negated = "not" in words or "no" in words
    return f"yesno_{about}" + ("_neg" if negated else "")


def _easy_vqa():
    try:
        return importlib.import_module("easy_vqa")
    except ImportError as err:
        raise MissingExtraError("easy-vqa", "eval", "The easyvqa task") from err


@lru_cache(maxsize=4)
def load_split(split: str) -> tuple[VqaItem, ...]:
    """All questions of one split, in the package's order."""
    if split not in SPLITS:
        raise VadasmError(f"unknown easy-vqa split {split!r}; choose one of {', '.join(SPLITS)}")
    ev = _easy_vqa()
    if split == "test":
        texts, answers, image_ids = ev.get_test_questions()
        paths = ev.get_test_image_paths()
    else:
        texts, answers, image_ids = ev.get_train_questions()
        paths = ev.get_train_image_paths()
    items = []
    for n, (text, answer, image_id) in enumerate(zip(texts, answers, image_ids)):
        in_val = image_id >= VAL_FIRST_IMAGE
        if split != "test" and in_val != (split == "val"):
            continue
        items.append(
            VqaItem(
                qid=f"{split}-{n}",
                question=text,
                answers=(answer,),
                image_path=Path(paths[image_id]),
                image_id=image_id,
                qtype=question_type(text),
            )
        )
    return tuple(items)


def image_labels(items: tuple[VqaItem, ...]) -> dict[Path, tuple[str, str]]:
    """(colour, shape) of every image, read off the questions and answers about it."""
    colors: dict[Path, str] = {}
    shapes: dict[Path, str] = {}
    for item in items:
        words = item.question.lower().rstrip("?").split()
        answer = item.answers[0]
        named_color = next((w for w in words if w in COLORS), None)
        named_shape = next((w for w in words if w in SHAPES), None)
        negated = "not" in words or "no" in words
        if item.qtype == "what_color":
            colors[item.image_path] = answer
            if named_shape:
                shapes[item.image_path] = named_shape
        elif item.qtype == "what_shape":
            shapes[item.image_path] = answer
            if named_color:
                colors[item.image_path] = named_color
        elif (answer == "yes") != negated:  # a yes/no question that asserts presence
            if named_color:
                colors[item.image_path] = named_color
            if named_shape:
                shapes[item.image_path] = named_shape
    return {i: (colors[i], shapes[i]) for i in colors.keys() & shapes.keys()}
