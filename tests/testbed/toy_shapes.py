"""Tiny drawn images of coloured shapes (easy-vqa's label names), for the realistic-donor tests."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from vadasm.eval.easyvqa import COLORS, SHAPES
from vadasm.testbed.vision import image_processor

RGB = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "black": (10, 10, 10)}


def draw(color: str, shape: str, size: int = 16, shift: int = 0) -> Image.Image:
    """A `color` `shape` on a light background, moved `shift` pixels right."""
    image = Image.new("RGB", (size, size), (245, 240, 235))
    pen = ImageDraw.Draw(image)
    box = (2 + shift, 2, size - 3 + shift, size - 3)
    if shape == "circle":
        pen.ellipse(box, fill=RGB[color])
    elif shape == "rectangle":
        pen.rectangle(box, fill=RGB[color])
    else:
        pen.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=RGB[color])
    return image


def toy_set(shifts: tuple[int, ...] = (0, 1, -1)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels, colour index and shape index of every colour x shape x shift (4 x 3 x len(shifts))."""
    labels = [(c, s, d) for c in RGB for s in SHAPES for d in shifts]
    pixels = image_processor(16)(images=[draw(c, s, shift=d) for c, s, d in labels], return_tensors="pt")
    colors = torch.tensor([COLORS.index(c) for c, _, _ in labels])
    shapes = torch.tensor([SHAPES.index(s) for _, s, _ in labels])
    return pixels["pixel_values"], colors, shapes


def save_toy_images(folder: Path, shifts: tuple[int, ...] = (0,)) -> list[tuple[Path, str, str]]:
    """Write the toy set as PNGs: (path, colour, shape) of each."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for c in RGB:
        for s in SHAPES:
            for d in shifts:
                path = folder / f"{c}_{s}_{d}.png"
                draw(c, s, shift=d).save(path)
                out.append((path, c, s))
    return out
