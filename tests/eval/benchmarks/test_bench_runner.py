"""The benchmark runner on fixture data with scripted backends: controls, samples, log-likelihoods."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vadasm.errors import MissingExtraError, VadasmError
from vadasm.eval.backends import Decoding
from vadasm.eval.benchmarks.loglik import transformers_loglikelihoods
from vadasm.eval.benchmarks.runner import run_benchmarks

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "benchmarks"
COLORS = {"red_square.png": "red", "blue_square.png": "blue", "green_square.png": "green"}


class ScriptedBackend:
    """Answers from a function of the request; log-likelihoods from another."""

    def __init__(self, name, reply, sees_images=True, loglik=None):
        self.name, self.reply, self.sees_images, self.loglik = name, reply, sees_images, loglik

    def generate(self, requests, decoding, desc="", progress=True):
        return [self.reply(r, k) for k, r in enumerate(requests)]

    def loglikelihood(self, pairs):
        return [self.loglik(c, x) for c, x in pairs]


def sighted(request, k):
    """Names the colour of the image it is shown; answers yes/no questions from it; blind: no idea."""
    if request.image is None:
        return "no idea"
    color = COLORS[request.image.name]
    if request.text.startswith("Is the square"):
        return "yes" if color in request.text else "no"
    return color


def run(backends, tasks, data, tmp_path, **kwargs):
    return run_benchmarks([(b.name, lambda b=b: b) for b in backends], tasks, data, progress=False,
                          image_cache=tmp_path / "img", **kwargs)


def test_vision_benchmark_runs_image_blind_and_shuffled(tmp_path):
    report = run([ScriptedBackend("vlm", sighted), ScriptedBackend("text-only", sighted, sees_images=False)],
                 ["vqav2"], {"vqav2": str(FIXTURES / "vqav2.jsonl")}, tmp_path)
    assert report.get("vlm", "vqav2", "image").value == 1.0
    assert report.get("vlm", "vqav2", "blind").value == 0.0
    # shuffled: colours are always wrong; "Is the square green?" gets "no", which 1 of 10 said -> 0.3
    assert report.get("vlm", "vqav2", "shuffled").value == pytest.approx(0.1)
    assert report.get("text-only", "vqav2", "image") is None
    assert report.get("text-only", "vqav2", "blind").value == 0.0


def test_mmlu_by_loglikelihood(tmp_path):
    pytest.importorskip("pyarrow")
    right = {"What is 2 + 2?": " B", "Which planet": " C"}  # knows two of the three questions

    def loglik(context, continuation):
        if any(q in context and continuation == a for q, a in right.items()):
            return 0.0
        return -0.5 if continuation == " D" else -1.0  # otherwise guesses D

    report = run([ScriptedBackend("m", sighted, loglik=loglik)], ["mmlu"],
                 {"mmlu": str(FIXTURES / "mmlu.parquet")}, tmp_path)
    score = report.get("m", "mmlu", "text")
    assert score.value == pytest.approx(2 / 3) and score.n == 3
    assert score.groups["astronomy"]["value"] == 1.0 and score.groups["high_school_chemistry"]["value"] == 0.0


def test_math_samples_give_pass_at_1_pass_at_n_and_mean_score(tmp_path):
    def alternating(request, k):  # every other sample is right
        answer = "24" if "2^{10}" in request.text else "0"
        return f"\\boxed{{{answer}}}" if k % 2 == 0 else "I am not sure."

    report = run([ScriptedBackend("m", alternating)], ["aime24"], {"aime24": str(FIXTURES / "aime24.jsonl")},
                 tmp_path, samples=4, decoding=Decoding(do_sample=True, seed=3))
    score = report.get("m", "aime24", "text")
    assert score.metric == "pass@1" and score.value == 0.5
    assert score.extra["pass@4"] == 1.0 and score.extra["mean_score"] == 0.0 and score.extra["boxed_rate"] == 0.5
    assert report.decoding["samples"] == 4


def test_several_samples_without_sampling_is_refused(tmp_path):
    with pytest.raises(VadasmError, match="add --sample"):
        run([ScriptedBackend("m", sighted)], ["aime24"], {"aime24": str(FIXTURES / "aime24.jsonl")}, tmp_path,
            samples=4)


def test_missing_data_names_the_flag_and_the_hub_id(tmp_path):
    with pytest.raises(VadasmError, match=r"--data math500=FILE.jsonl \(or HuggingFaceH4/MATH-500 from the Hub\)"):
        run([ScriptedBackend("m", sighted)], ["math500"], {}, tmp_path)


def test_vllm_backend_names_the_extra_when_missing(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails as if not installed
    from vadasm.eval.benchmarks.vllm_backend import VllmBackend

    with pytest.raises(MissingExtraError, match=r"pip install 'vadasm\[gpu\]'"):
        VllmBackend(tmp_path)


class CharTokenizer:
    """One token per character (ids 3..), BOS=1, pad=0: enough to check the log-likelihood indexing."""

    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        ids = [3 + (ord(c) % 90) for c in text]
        return type("Enc", (), {"input_ids": ([1] if add_special_tokens else []) + ids})()


def test_loglikelihood_matches_a_direct_computation_and_ignores_padding(tmp_path):
    from transformers import AutoModelForCausalLM

    from pico_models import make_text_model

    model = AutoModelForCausalLM.from_pretrained(make_text_model(tmp_path / "m")).eval()
    tok = CharTokenizer()
    pairs = [("Answer:", " B"), ("A much longer context here:", " yes"), ("Q", "x")]
    batched = transformers_loglikelihoods(model, tok, pairs, batch_size=3)
    for (context, continuation), got in zip(pairs, batched):
        ids = tok(context).input_ids + tok(continuation, add_special_tokens=False).input_ids
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        start = len(tok(context).input_ids)
        want = sum(logprobs[p - 1, ids[p]].item() for p in range(start, len(ids)))
        assert got == pytest.approx(want, abs=1e-4)
