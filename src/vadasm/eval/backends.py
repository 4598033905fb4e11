"""Model backends behind one small interface, so vLLM or lm-eval can plug in later.

A backend answers two questions: "generate a reply to these chat prompts (with or without an image)"
and "how likely is this text". Tasks and controls are written against that interface only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from vadasm.errors import VadasmError
from vadasm.eval.backend_types import Backend, Decoding, Request, is_vision_checkpoint, render_prompt
from vadasm.io.hf_load import check_model_folder, load_with_transformers

# The shared types live in backend_types; importing them from here keeps working.
__all__ = ["Backend", "Decoding", "Request", "TransformersBackend", "load_backend"]


class TransformersBackend:
    """Any local transformers checkpoint: a `*ForCausalLM` or a LLaVA-style image-text model."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise VadasmError(f"{self.path}: not a model folder (no config.json)")
        self.name = self.path.name
        self.device = torch.device(device)
        check_model_folder(self.path)
        self.sees_images = is_vision_checkpoint(self.path)
        if self.sees_images:
            self.processor = load_with_transformers(lambda: AutoProcessor.from_pretrained(self.path), self.path,
                                                    "processor")
            self.tokenizer = self.processor.tokenizer
            model_class = AutoModelForImageTextToText
        else:
            self.processor = None
            self.tokenizer = load_with_transformers(lambda: AutoTokenizer.from_pretrained(self.path), self.path,
                                                    "tokenizer")
            model_class = AutoModelForCausalLM
        self.model = load_with_transformers(lambda: model_class.from_pretrained(self.path, dtype=dtype), self.path,
                                            "model")
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def render(self, request: Request) -> str:
        """The prompt string the model sees, through its own chat template when it has one."""
        return render_prompt(request, self.path, self.processor, self.tokenizer)

    def encode(self, batch: Sequence[Request], answers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Model inputs for a batch of prompts; with `answers`, each prompt is followed by its answer
        (teacher forcing, as when measuring what the model computes on a task)."""
        prompts = [self.render(r) for r in batch]
        if answers is not None:
            prompts = [prompt + answer for prompt, answer in zip(prompts, answers, strict=True)]
        # Chat templates already hold any BOS token; templateless prompts need the tokenizer's.
        has_template = getattr(self.processor or self.tokenizer, "chat_template", None) is not None
        images = [Image.open(r.image).convert("RGB") for r in batch if r.image is not None]
        if images and len(images) != len(batch):
            raise ValueError("a generation batch must be all-image or all-text")
        if self.processor is not None:
            inputs = self.processor(
                text=prompts,
                images=images or None,
                padding=True,
                return_tensors="pt",
                add_special_tokens=not has_template,
            )
        else:
            inputs = self.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=not has_template)
        return {k: v.to(self.device) for k, v in inputs.items()}

    @torch.no_grad()
    def generate(
        self, requests: Sequence[Request], decoding: Decoding, desc: str = "", progress: bool = True
    ) -> list[str]:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(decoding.seed)
        outputs: list[str] = []
        try:
            for start in tqdm(
                range(0, len(requests), decoding.batch_size),
                desc=desc or self.name,
                unit="batch",
                leave=False,
                disable=not progress,
            ):
                inputs = self.encode(requests[start : start + decoding.batch_size])
                sampling = (
                    {"do_sample": True, "temperature": decoding.temperature, "top_p": decoding.top_p}
                    if decoding.do_sample
                    else {"do_sample": False}
                )
                new = self.model.generate(
                    **inputs,
                    max_new_tokens=decoding.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    **sampling,
                )[:, inputs["input_ids"].shape[1] :]
                outputs.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
        finally:
            torch.random.set_rng_state(generator_state)
        return outputs

    @torch.no_grad()
    def negative_log_likelihood(self, texts: Sequence[str], max_length: int) -> tuple[float, int]:
        total, count = 0.0, 0
        for text in texts:
            ids = self.tokenizer(text, return_tensors="pt").input_ids[:, :max_length].to(self.device)
            if ids.shape[1] < 2:
                continue
            logits = self.model(input_ids=ids).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            if not math.isfinite(nll):
                raise VadasmError(f"{self.path}: non-finite loss on the perplexity text")
            total += nll
            count += ids.shape[1] - 1
        return total, count


def load_backend(path: str | Path, backend: str = "transformers", device: str = "cpu") -> Backend:
    """The one place that maps a backend name to an implementation."""
    if backend == "transformers":
        return TransformersBackend(path, device=device)
    if backend == "vllm":
        from vadasm.eval.benchmarks.vllm_backend import VllmBackend

        return VllmBackend(path, device=device)
    raise VadasmError(f"unknown backend {backend!r}; available: transformers, vllm")
