"""What every model backend shares: requests, decoding settings, the interface and the prompt text.

Both backends (transformers here in `backends.py`, vLLM in `benchmarks/vllm_backend.py`) import
from this module only, so neither imports the other and their prompts cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vadasm.errors import VadasmError

# Base models without a chat template get plain question/answer turns (the testbed's Gemma format).
PLAIN_QA = "Question: {question}\nAnswer:"


@dataclass(frozen=True)
class Request:
    """One prompt: a user question and, for vision models, an optional image placed before it."""

    text: str
    image: Path | None = None


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 16


class Backend(Protocol):
    name: str
    sees_images: bool

    def generate(
        self, requests: Sequence[Request], decoding: Decoding, desc: str = "", progress: bool = True
    ) -> list[str]: ...

    def negative_log_likelihood(self, texts: Sequence[str], max_length: int) -> tuple[float, int]:
        """Summed NLL (nats) of the texts' tokens after the first, and how many tokens were scored."""
        ...


def is_vision_checkpoint(path: Path) -> bool:
    """A checkpoint is an image-text model when its config has a vision part (LLaVA-style)."""
    config = json.loads((path / "config.json").read_text())
    return "vision_config" in config


def render_prompt(request: Request, path: Path, processor: Any, tokenizer: Any) -> str:
    """The prompt string a model sees, through its own chat template when it has one.

    `processor` is None for a text-only model; every backend renders through here, so the same
    request gives the same prompt whichever backend runs it.
    """
    if request.image is not None and processor is None:
        raise VadasmError(f"{path}: a text-only model was asked about an image")
    template_owner = processor if processor is not None else tokenizer
    if getattr(template_owner, "chat_template", None) is None:
        return PLAIN_QA.format(question=request.text)
    content: list[dict] | str
    if processor is not None:
        content = ([{"type": "image"}] if request.image is not None else []) + [
            {"type": "text", "text": request.text}
        ]
    else:
        content = request.text
    return template_owner.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
