"""RegMean in the class A graft: Gram matrices from each model's own task, and the merge they drive."""

import json

import pytest
import torch
from test_graft import FAST, class_a_models, generate, tensors

from pico_models import make_png_images
from vadasm.errors import VadasmError
from vadasm.graft import GraftOptions, graft
from vadasm.graft.grams import calibration_items, layer_relative_name, linear_input_grams
from vadasm.methods.regmean import regmean


@pytest.fixture
def class_a_pair(tmp_path):
    base, recipient, donor = class_a_models(tmp_path)
    images = make_png_images(tmp_path / "data" / "images", count=4)
    vision = tmp_path / "data" / "vision.jsonl"
    vision.write_text("".join(json.dumps({"text": f"w{20 + i} w30", "answer": "w40", "image": f"images/img{i}.png"})
                              + "\n" for i in range(4)))
    text = tmp_path / "data" / "text.jsonl"
    text.write_text("".join(json.dumps({"text": f"w{50 + i} w51", "answer": "w60"}) + "\n" for i in range(4)))
    assert images.is_dir()
    return base, recipient, donor, vision, text


def regmean_options(base, vision, text, **extra):
    return GraftOptions.flat(**FAST, base=str(base), merge_method="regmean", donor_data=str(vision),
                        recipient_data=str(text), **extra)


def test_grams_cover_every_decoder_linear_and_are_symmetric(class_a_pair):
    base, recipient, donor, vision, text = class_a_pair
    donor_grams = linear_input_grams(donor, calibration_items(str(vision), 4), progress=False)
    recipient_grams = linear_input_grams(recipient, calibration_items(str(text), 4), progress=False)
    linears = {layer_relative_name(k) for k, v in tensors(recipient).items()
               if v.ndim == 2 and layer_relative_name(k) is not None}
    # The LLaVA donor and the causal LM name their layers differently; both land on the same keys.
    assert set(donor_grams) == set(recipient_grams) == linears
    for g in donor_grams.values():
        assert torch.allclose(g, g.T, atol=1e-5) and torch.linalg.eigvalsh(g.double()).min() > -1e-6


def test_regmean_graft_solves_linears_and_keeps_task_arithmetic_elsewhere(class_a_pair, tmp_path):
    base, recipient, donor, vision, text = class_a_pair
    result = graft(donor, recipient, tmp_path / "rm", regmean_options(base, vision, text, regmean_donor_weight=3.0))
    assert "regmean" in result.language_model and "donor weight 3.0" in result.language_model
    out, b, r, d = tensors(tmp_path / "rm"), tensors(base), tensors(recipient), tensors(donor)
    donor_grams = linear_input_grams(donor, calibration_items(str(vision), 128), progress=False)
    recipient_grams = linear_input_grams(recipient, calibration_items(str(text), 128), progress=False)
    name = "layers.3.mlp.up_proj.weight"
    expected = regmean([r["model." + name], d["language_model.model." + name]],
                       [recipient_grams[name], donor_grams[name]], model_weight=[1.0, 3.0], alpha=0.9)
    assert torch.allclose(out["language_model.model." + name], expected, atol=1e-5)
    norm = "layers.3.post_attention_layernorm.weight"  # not a linear: task arithmetic
    assert torch.allclose(out["language_model.model." + norm],
                          r["model." + norm] + d["language_model.model." + norm] - b["model." + norm], atol=1e-6)
    provenance = json.loads((tmp_path / "rm" / "vadasm_config.json").read_text())
    assert provenance["recipe"]["merge_method"] == "regmean" and provenance["recipe"]["donor_data"] == str(vision)
    assert provenance["recipe"]["protect_ratio"] == 0.0 and "protected" not in result.language_model  # its default
    generate(tmp_path / "rm")


def test_regmean_with_beta_zero_is_the_recipient_language_model(class_a_pair, tmp_path):
    base, recipient, donor, vision, text = class_a_pair
    graft(donor, recipient, tmp_path / "zero", regmean_options(base, vision, text, beta=0.0))
    out, r = tensors(tmp_path / "zero"), tensors(recipient)
    name = "model.layers.2.self_attn.q_proj.weight"
    assert torch.allclose(out["language_model." + name], r[name], atol=1e-6)


def test_regmean_needs_both_tasks_and_valid_records(class_a_pair, tmp_path):
    base, recipient, donor, vision, text = class_a_pair
    with pytest.raises(VadasmError, match="--donor-data and --recipient-data"):
        graft(donor, recipient, tmp_path / "a", GraftOptions.flat(**FAST, base=str(base), merge_method="regmean"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "w1"}\n{"question": "w2"}\n')
    with pytest.raises(VadasmError, match=r"bad.jsonl:2: expected a JSON object"):
        calibration_items(str(bad), 10)
    with pytest.raises(VadasmError, match="built-in task"):
        calibration_items(str(tmp_path / "missing.jsonl"), 10)
    with pytest.raises(VadasmError, match="does not see"):
        linear_input_grams(recipient, calibration_items(str(vision), 2), progress=False)
    assert not (tmp_path / "a").exists()
