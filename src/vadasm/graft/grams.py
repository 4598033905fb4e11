"""What each language-model linear layer sees on a model's own task: the Gram matrices RegMean needs.

A model is run (teacher-forced: prompt followed by its reference answer) on calibration items of the
task it was fine-tuned for, and every linear layer inside the decoder layers records the mean
`x x^T` of its inputs. Items come from a built-in task's **train** split (never val or test, which
tuning and measurement use) or from a JSONL file of `{"text", "answer", "image"}` records.

Cost: one [in, in] fp32 matrix per linear layer (for SmolLM2-135M about 0.5 GB per model); the model
itself is loaded once for the forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from vadasm.arch.capture import capture_inputs
from vadasm.errors import VadasmError
from vadasm.eval.backends import Request, TransformersBackend
from vadasm.io.json_file import jsonl_records


@dataclass(frozen=True)
class CalibrationItem:
    request: Request
    answer: str


def calibration_items(source: str, samples: int, seed: int = 0) -> list[CalibrationItem]:
    """Up to `samples` items from a built-in task's train split (`easyvqa`, `arith`) or a JSONL file."""
    from vadasm.eval.tasks import GENERATIVE_TASKS

    if source in GENERATIVE_TASKS:
        items = GENERATIVE_TASKS[source].items("train", samples, seed)
        return [CalibrationItem(Request(item.text, item.image), item.references[0]) for item in items]
    path = Path(source)
    if not path.is_file():
        raise VadasmError(f"{source}: calibration data must be a built-in task ({', '.join(GENERATIVE_TASKS)}) "
                          "or a JSONL file of {\"text\", \"answer\", \"image\"} records")
    items = []
    for number, record in jsonl_records(path, ("text",)):
        text = record["text"]
        image = record.get("image")
        image_path = (path.parent / image) if image else None
        if image_path is not None and not image_path.is_file():
            raise VadasmError(f"{path}:{number}: image {image!r} not found")
        items.append(CalibrationItem(Request(text, image_path), str(record.get("answer", ""))))
        if len(items) == samples:
            break
    if not items:
        raise VadasmError(f"{path}: no calibration records")
    return items


def layer_relative_name(name: str) -> str | None:
    """'model.layers.3.mlp.down_proj.weight' -> 'layers.3.mlp.down_proj.weight': the part every
    layout (a causal LM, a LLaVA's language model) shares; None outside the decoder layers."""
    start = name.find("layers.")
    return name[start:] if start >= 0 else None


@torch.no_grad()
def linear_input_grams(model_path: str | Path, items: list[CalibrationItem], device: str = "cpu",
                       progress: bool = True) -> dict[str, torch.Tensor]:
    """{layer-relative weight name: mean x x^T of that linear layer's inputs} over the items' tokens."""
    backend = TransformersBackend(model_path, device=device)
    if any(item.request.image is not None for item in items) and not backend.sees_images:
        raise VadasmError(f"{model_path}: calibration items have images but the model does not see")
    decoder = backend.model.get_decoder()
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def record(key: str, _module: torch.nn.Module, x: torch.Tensor) -> None:
        sums[key] = sums.get(key, 0) + x.T @ x
        counts[key] = counts.get(key, 0) + x.shape[0]

    linears = {f"{name}.weight": module for name, module in decoder.named_modules()
               if isinstance(module, torch.nn.Linear) and name.startswith("layers.")}
    if not linears:
        raise VadasmError(f"{model_path}: found no linear layers under the language model's 'layers.'")
    with capture_inputs(linears, record):
        for item in tqdm(items, desc=f"regmean grams {Path(model_path).name}", unit="item", disable=not progress):
            backend.model(**backend.encode([item.request], [item.answer]))
    return {key: (total / counts[key]).cpu() for key, total in sums.items()}


_RECENT: dict[tuple, dict[str, torch.Tensor]] = {}


def cached_grams(model_path: str, fingerprint: str, source: str, samples: int, seed: int, device: str = "cpu",
                 progress: bool = True) -> dict[str, torch.Tensor]:
    """linear_input_grams, remembered for the last two (model, data) pairs: a tuning run builds many
    grafts of one donor and one recipient in one process."""
    key = (model_path, fingerprint, source, samples, seed, device)
    if key not in _RECENT:
        if len(_RECENT) >= 2:
            _RECENT.pop(next(iter(_RECENT)))
        _RECENT[key] = linear_input_grams(model_path, calibration_items(source, samples, seed), device, progress)
    return _RECENT[key]
