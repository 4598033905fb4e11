"""vLLM behind the harness's backend interface (generate, perplexity, log-likelihood), for GPUs.

Same requests, same prompts (the checkpoint's own chat template) and the same result format as the
transformers backend, so a table may mix them; the backend name is recorded in the results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from vadasm.errors import MissingExtraError, VadasmError
from vadasm.eval.backend_types import Decoding, Request, is_vision_checkpoint, render_prompt
from vadasm.io.hf_load import check_model_folder, load_with_transformers


def _vllm():
    try:
        import vllm
    except ImportError as err:
        raise MissingExtraError("vllm", "gpu", "The vLLM backend (--backend vllm)") from err
    return vllm


class VllmBackend:
    def __init__(self, path: str | Path, device: str = "cuda", gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = None):
        vllm = _vllm()
        from transformers import AutoProcessor, AutoTokenizer

        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise VadasmError(f"{self.path}: not a model folder (no config.json)")
        self.name = self.path.name
        self.sees_images = is_vision_checkpoint(self.path)
        check_model_folder(self.path)
        self.processor = (load_with_transformers(lambda: AutoProcessor.from_pretrained(self.path), self.path,
                                                 "processor") if self.sees_images else None)
        self.tokenizer = self.processor.tokenizer if self.processor else load_with_transformers(
            lambda: AutoTokenizer.from_pretrained(self.path), self.path, "tokenizer")
        self._vllm = vllm
        self.llm = vllm.LLM(model=str(self.path), gpu_memory_utilization=gpu_memory_utilization,
                            max_model_len=max_model_len, seed=0)

    def render(self, request: Request) -> str:
        """The transformers backend's prompt for the same request (one shared renderer)."""
        return render_prompt(request, self.path, self.processor, self.tokenizer)

    def generate(self, requests: Sequence[Request], decoding: Decoding, desc: str = "",
                 progress: bool = True) -> list[str]:
        from PIL import Image

        params = self._vllm.SamplingParams(
            max_tokens=decoding.max_new_tokens,
            temperature=decoding.temperature if decoding.do_sample else 0.0,
            top_p=decoding.top_p if decoding.do_sample else 1.0,
            seed=decoding.seed,
        )
        prompts = []
        for request in requests:
            prompt: dict = {"prompt": self.render(request)}
            if request.image is not None:
                prompt["multi_modal_data"] = {"image": Image.open(request.image).convert("RGB")}
            prompts.append(prompt)
        outputs = self.llm.generate(prompts, params, use_tqdm=progress)
        return [out.outputs[0].text for out in outputs]

    def _prompt_logprobs(self, token_lists: Sequence[list[int]]) -> list[list[float]]:
        """Log-probability of every prompt token after the first, one list per prompt."""
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        prompts = [{"prompt_token_ids": ids} for ids in token_lists]
        result = []
        for ids, out in zip(token_lists, self.llm.generate(prompts, params, use_tqdm=False)):
            per_token = out.prompt_logprobs[1:]
            result.append([entry[token].logprob for entry, token in zip(per_token, ids[1:])])
        return result

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        encoded = [(self.tokenizer(c).input_ids, self.tokenizer(x, add_special_tokens=False).input_ids)
                   for c, x in pairs]
        logprobs = self._prompt_logprobs([ctx + cont for ctx, cont in encoded])
        return [sum(lp[len(ctx) - 1 :]) for (ctx, _), lp in zip(encoded, logprobs)]

    def negative_log_likelihood(self, texts: Sequence[str], max_length: int) -> tuple[float, int]:
        ids = [self.tokenizer(t).input_ids[:max_length] for t in texts]
        ids = [i for i in ids if len(i) >= 2]
        logprobs = self._prompt_logprobs(ids)
        total = -sum(sum(lp) for lp in logprobs)
        if not math.isfinite(total):
            raise VadasmError(f"{self.path}: non-finite loss on the perplexity text")
        return total, sum(len(lp) for lp in logprobs)
