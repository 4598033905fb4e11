"""Checks on the real testbed artefacts (slow; skipped until `vadasm testbed build` has run)."""

from functools import partial

import pytest
import torch

from vadasm.eval.backends import load_backend
from vadasm.eval.harness import evaluate
from vadasm.testbed.paths import artefact_dir, is_built
from vadasm.testbed.record import read_record

pytestmark = pytest.mark.slow


def _need(name: str):
    if not is_built(name):
        pytest.skip(f"testbed artefact {name} not built (run: vadasm testbed build)")
    return artefact_dir(name)


@pytest.mark.parametrize("name", ["smollm2", "gemma3-270m", "smollm2-arith"])
def test_text_models_are_plain_checkpoints(name):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _need(name)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert getattr(model.config, "quantization_config", None) is None
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["llava-smollm2", "llava-gemma3"])
def test_donors_load_with_stock_auto_classes(name):
    from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration, LlavaProcessor

    folder = _need(name)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    assert isinstance(model, LlavaForConditionalGeneration) and isinstance(processor, LlavaProcessor)
    record = read_record(folder)
    assert record["recipe"]["steps"] > 0 and "test_easyvqa" in record["scores"]


@pytest.mark.parametrize("name", ["llava-smollm2", "llava-gemma3"])
def test_donors_see_the_image(name):
    """On validation questions (never used to build or score the donor), images must help."""
    folder = _need(name)
    report = evaluate([(name, partial(load_backend, folder))], ["easyvqa"], split="val", limit=120, seed=7,
                      progress=False)
    image, blind, shuffled = (report.get(name, "easyvqa", c).value for c in ("image", "blind", "shuffled"))
    assert image > blind + 0.1
    assert image > shuffled + 0.1


def test_donor_language_model_differs_from_its_base_in_its_top_half():
    """The LoRA trained on the LM's top half is merged back; the bottom half stays the base's."""
    import json

    from safetensors import safe_open

    donor, base = _need("llava-smollm2"), _need("smollm2")
    layers = json.loads((base / "config.json").read_text())["num_hidden_layers"]
    with safe_open(donor / "model.safetensors", "pt") as d, safe_open(base / "model.safetensors", "pt") as b:
        def donor_and_base(layer: int) -> tuple[torch.Tensor, torch.Tensor]:
            suffix = f"layers.{layer}.self_attn.q_proj.weight"  # the donor's LM may be saved in either layout
            name = next(k for k in d.keys() if "language_model" in k and k.endswith(suffix))
            return d.get_tensor(name), b.get_tensor(f"model.{suffix}")

        top, bottom = donor_and_base(layers - 1), donor_and_base(0)
    assert top[0].shape == top[1].shape and not torch.equal(*top)
    assert torch.equal(*bottom)


def test_recipient_beats_smollm2_on_arithmetic():
    recipient, base = _need("smollm2-arith"), _need("smollm2")
    report = evaluate(
        [("recipient", partial(load_backend, recipient)), ("base", partial(load_backend, base))],
        ["arith"], split="val", limit=100, seed=7, progress=False,
    )
    assert report.get("recipient", "arith", "text").value >= report.get("base", "arith", "text").value + 0.2
