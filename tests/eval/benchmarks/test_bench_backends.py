"""The optional backends' wiring, checked against stand-ins for vllm, lm-eval and ray (none installed here)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from eval.tiny_vlm import make_text_lm
from vadasm.eval.backends import Decoding, Request, load_backend
from vadasm.eval.benchmarks.lm_eval_bridge import run_lm_eval


class FakeLLM:
    """vLLM's LLM: echoes prompts; prompt log-probs are -0.5 per token."""

    def __init__(self, model, **kwargs):
        self.kwargs = kwargs
        self.seen = []

    def generate(self, prompts, params, use_tqdm=True):
        self.seen.append((prompts, params))
        outs = []
        for prompt in prompts:
            if "prompt_token_ids" in prompt:
                ids = prompt["prompt_token_ids"]
                logprobs = [None] + [{tok: types.SimpleNamespace(logprob=-0.5)} for tok in ids[1:]]
                outs.append(types.SimpleNamespace(prompt_logprobs=logprobs, outputs=[]))
            else:
                text = f"echo {len(prompt['prompt'])} image={'multi_modal_data' in prompt}"
                outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(text=text)]))
        return outs


def test_vllm_backend_same_prompts_and_result_format(tmp_path, monkeypatch):
    fake = types.SimpleNamespace(LLM=FakeLLM, SamplingParams=lambda **kw: kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    lm = make_text_lm(tmp_path / "lm")
    backend = load_backend(lm, "vllm", "cuda")
    replies = backend.generate([Request("What is 2 + 3?")], Decoding(max_new_tokens=7, seed=4))
    assert replies[0].startswith("echo ") and replies[0].endswith("image=False")
    prompts, params = backend.llm.seen[-1]
    assert params == {"max_tokens": 7, "temperature": 0.0, "top_p": 1.0, "seed": 4}  # greedy
    assert prompts[0]["prompt"] == load_backend(lm).render(Request("What is 2 + 3?"))  # identical prompt
    context, continuation = "Question : what is 2", " 3"
    n_cont = len(backend.tokenizer(continuation, add_special_tokens=False).input_ids)
    assert backend.loglikelihood([(context, continuation)]) == [pytest.approx(-0.5 * n_cont)]
    total, count = backend.negative_log_likelihood(["what is the color of the shape"], 64)
    assert total == pytest.approx(0.5 * count) and count > 0


def test_lm_eval_bridge_maps_results(monkeypatch):
    calls = {}

    def simple_evaluate(**kwargs):
        calls.update(kwargs)
        return {"results": {"mmlu": {"acc,none": 0.41, "acc_stderr,none": 0.02},
                            "gsm8k": {"exact_match,flexible-extract": 0.12, "exact_match,strict-match": 0.1}},
                "n-samples": {"mmlu": {"effective": 100}, "gsm8k": {"effective": 50}}}

    monkeypatch.setitem(sys.modules, "lm_eval", types.SimpleNamespace(simple_evaluate=simple_evaluate))
    scores = run_lm_eval("m", Path("/models/m"), ["mmlu", "gsm8k"], 100, "cpu", 8)
    assert calls["model_args"] == "pretrained=/models/m" and calls["tasks"] == ["mmlu", "gsm8k"]
    assert [(s.task, s.value, s.n) for s in scores] == [("mmlu", 0.41, 100), ("gsm8k", 0.12, 50)]
    assert scores[1].extra["exact_match,strict-match"] == 0.1 and scores[0].extra["backend"] == "lm-eval"


def test_tune_runs_candidates_as_ray_tasks(monkeypatch):
    from fake_ray import FakeRay
    from synthetic_objectives import Quadratic
    from vadasm.tune import make_optimizer, space_from_specs, tune

    ray = FakeRay(cpus=4)
    monkeypatch.setitem(sys.modules, "ray", ray)
    space = space_from_specs(["beta=0:1@0.5", "density=0:1@0.5"])
    result = tune(Quadratic(), space, make_optimizer("grid", space, grid_points=3), ray_address="ray://head:10001",
                  progress=False)
    assert ray.init_kwargs["address"] == "ray://head:10001" and not ray.initialized  # joined, then closed
    assert ray.tasks_run == len([t for t in result.trials if not t.cached])  # every evaluation, the recipient too
    assert result.best.params == {"beta": 0.5, "density": 0.5}
