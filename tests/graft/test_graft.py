"""End-to-end grafts on tiny random models: each output loads and generates with stock classes."""

import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor

from pico_models import make_llava_donor, make_png_images, make_text_recipient, perturbed_copy
from vadasm.errors import VadasmError
from vadasm.graft import GraftOptions, graft

WORDS = [f"w{i}" for i in range(91)]
RECIPIENT_WORDS = [f"w{i}" for i in range(15, 91)] + [f"v{i}" for i in range(15)]  # 76 shared words
FAST = dict(min_anchors=10, heldout=10, omp_k=8, progress=False)


def tensors(folder):
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def generate(folder, with_image=True):
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": "w20 w30"}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    image = Image.new("RGB", (16, 16), (200, 30, 30)) if with_image else None
    inputs = processor(text=[prompt], images=[image] if with_image else None, return_tensors="pt")
    if with_image:
        assert (inputs["input_ids"] == model.config.image_token_index).sum() == 4  # 2x2 patches, CLS dropped
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3
    return model, processor


@pytest.mark.parametrize("recipient_type", ["llama", "qwen2", "gemma3_text", "mistral"])
def test_class_c_graft_loads_and_generates(tmp_path, recipient_type):
    donor = make_llava_donor(tmp_path / "donor", "llama", words=WORDS)
    recipient = make_text_recipient(tmp_path / "recipient", recipient_type, words=RECIPIENT_WORDS, hidden_size=48)
    result = graft(donor, recipient, tmp_path / "out", GraftOptions.flat(**FAST))
    assert result.pair.label == "C" and result.kind == "llava"
    assert result.projector["hidden"]["exact"]  # 32 -> 48: dead units appended, exact
    assert {m.method for m in result.maps} == {"lstsq", "procrustes", "omp", "random_map", "shuffled_anchors",
                                               "mean_vector"}
    model, processor = generate(tmp_path / "out")
    assert model.config.text_config.model_type == recipient_type
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_index
    out, src = tensors(tmp_path / "out"), tensors(donor)
    for name, tensor in src.items():
        if name.startswith("vision_tower."):
            assert torch.equal(out[name], tensor)
    assert out["multi_modal_projector.linear_2.weight"].shape == (48, 48)
    provenance = json.loads((tmp_path / "out" / "vadasm_config.json").read_text())
    assert provenance["result"]["pair"]["label"] == "C" and provenance["inputs"]["donor"]["fingerprint"]


def test_narrower_recipient_cuts_projector_units_and_says_so(tmp_path):
    donor = make_llava_donor(tmp_path / "donor", "llama", words=WORDS, hidden_size=48)
    recipient = make_text_recipient(tmp_path / "recipient", "llama", words=RECIPIENT_WORDS)
    result = graft(donor, recipient, tmp_path / "out", GraftOptions.flat(**FAST))
    assert not result.projector["hidden"]["exact"] and any("cut 48 -> 32" in w for w in result.warnings)
    generate(tmp_path / "out")
    images = make_png_images(tmp_path / "images")
    calibrated = graft(donor, recipient, tmp_path / "out2", GraftOptions.flat(**FAST, calibration_images=str(images)))
    assert calibrated.projector["hidden"]["criterion"] == "activations"
    assert 0 <= calibrated.projector["resize_relative_error_on_calibration"] < 1
    assert all(m.projector_token_agreement is not None for m in calibrated.maps)


def class_a_models(tmp_path):
    """(base, recipient, donor): a recipient and a LLaVA donor fine-tuned (perturbed) from one base."""
    base = make_text_recipient(tmp_path / "base", "llama", words=WORDS + ["<image>"], num_hidden_layers=5)
    recipient = perturbed_copy(base, tmp_path / "recipient", seed=3)
    for f in base.glob("tok*"):
        (recipient / f.name).write_bytes(f.read_bytes())
    donor = make_llava_donor(tmp_path / "donor", "llama", words=WORDS, text_folder=base, lm_noise=0.01)
    return base, recipient, donor


def test_class_a_merges_language_delta_with_protected_layers(tmp_path):
    base, recipient, donor = class_a_models(tmp_path)
    result = graft(donor, recipient, tmp_path / "out", GraftOptions.flat(**FAST, base=str(base), beta=0.5))
    assert result.pair.label == "A" and "layers 0-0 protected" in result.language_model
    assert result.image_token.token == "<image>" and result.image_token.token_id == 95
    out, b, r, d = tensors(tmp_path / "out"), tensors(base), tensors(recipient), tensors(donor)
    name = "layers.3.mlp.up_proj.weight"
    expected = r["model." + name] + 0.5 * (d["language_model.model." + name] - b["model." + name])
    assert torch.allclose(out["language_model.model." + name], expected, atol=1e-6)
    protected = "layers.0.mlp.up_proj.weight"
    assert torch.equal(out["language_model.model." + protected], r["model." + protected])
    assert torch.equal(out["language_model.model.embed_tokens.weight"], r["model.embed_tokens.weight"])
    assert torch.equal(out["multi_modal_projector.linear_2.weight"], d["multi_modal_projector.linear_2.weight"])
    generate(tmp_path / "out")

    text_only = GraftOptions.flat(**FAST, base=str(base), beta=0.5, text_only=True)
    text = graft(donor, recipient, tmp_path / "text", text_only)
    assert text.kind == "llama" and torch.allclose(tensors(tmp_path / "text")["model." + name], expected, atol=1e-6)


def test_recipient_that_already_sees_keeps_its_vision(tmp_path):
    base = make_text_recipient(tmp_path / "base", "llama", words=WORDS + ["<image>"])
    donor = make_llava_donor(tmp_path / "donor", "llama", seed=1, words=WORDS, text_folder=base, lm_noise=0.01)
    seeing = make_llava_donor(tmp_path / "seeing", "llama", seed=2, words=WORDS, text_folder=base, lm_noise=0.01)
    result = graft(donor, seeing, tmp_path / "out", GraftOptions.flat(**FAST, base=str(base), protect_ratio=0))
    assert result.pair.label == "A"
    out, s = tensors(tmp_path / "out"), tensors(seeing)
    assert torch.equal(out["multi_modal_projector.linear_1.weight"], s["multi_modal_projector.linear_1.weight"])
    generate(tmp_path / "out")
    graft(donor, seeing, tmp_path / "out2", GraftOptions.flat(**FAST, base=str(base), vision_from="donor"))
    assert torch.equal(tensors(tmp_path / "out2")["multi_modal_projector.linear_1.weight"],
                       tensors(donor)["multi_modal_projector.linear_1.weight"])


def test_class_b_and_added_image_token(tmp_path):
    donor = make_llava_donor(tmp_path / "donor", "llama", words=WORDS)
    # Same tokenizer as the donor (it has '<image>'), different width: class B.
    recipient_b = make_text_recipient(tmp_path / "rb", "qwen2", words=WORDS + ["<image>"], hidden_size=40,
                                      num_attention_heads=4)
    assert graft(donor, recipient_b, tmp_path / "b", GraftOptions.flat(**FAST)).pair.label == "B"
    # A recipient whose vocabulary is full and has no reserved token: '<image>' is added, rows grow.
    recipient_c = make_text_recipient(tmp_path / "rc", "llama", words=[f"w{i}" for i in range(92)])
    result = graft(donor, recipient_c, tmp_path / "c", GraftOptions.flat(**FAST, projector_variance=0.9))
    assert result.image_token.token_id == 96 and any("resized 96 -> 97" in w for w in result.warnings)
    assert result.projector["svd_subspace_reduction"]["linear_2.weight"]["rank"] <= 32
    model, _ = generate(tmp_path / "c")
    assert model.config.text_config.vocab_size == 97


def test_bad_inputs_are_refused_with_one_line(tmp_path):
    donor = make_llava_donor(tmp_path / "donor", "llama", words=WORDS)
    text = make_text_recipient(tmp_path / "text", "llama", words=RECIPIENT_WORDS)
    with pytest.raises(VadasmError, match="has no vision tower"):
        graft(text, text, tmp_path / "o1", GraftOptions.flat(**FAST))
    with pytest.raises(VadasmError, match="share only .*need at least 1000"):
        graft(donor, text, tmp_path / "o2", GraftOptions.flat(progress=False))
    seeing = make_llava_donor(tmp_path / "seeing", "llama", words=RECIPIENT_WORDS, hidden_size=48)
    with pytest.raises(VadasmError, match="already sees"):
        graft(donor, seeing, tmp_path / "o3", GraftOptions.flat(**FAST))
    config = json.loads((donor / "config.json").read_text())
    config["model_type"] = "gemma3"
    (donor / "config.json").write_text(json.dumps(config))
    with pytest.raises(VadasmError, match="'gemma3' is not supported for grafting"):
        graft(donor, text, tmp_path / "o4", GraftOptions.flat(**FAST))
    with pytest.raises(VadasmError, match="a text-only merge needs a class A"):
        donor2 = make_llava_donor(tmp_path / "d2", words=WORDS)
        graft(donor2, text, tmp_path / "o5", GraftOptions.flat(**FAST, text_only=True))
    assert not any(p.name.startswith(("o", ".o")) for p in tmp_path.iterdir())  # nothing written


def test_llava_next_donor_gives_llava_next_graft_with_mapped_newline(tmp_path):
    from pico_models import make_llava_next_donor

    donor = make_llava_next_donor(tmp_path / "donor", words=WORDS)
    recipient = make_text_recipient(tmp_path / "recipient", "qwen2", words=RECIPIENT_WORDS, hidden_size=48)
    result = graft(donor, recipient, tmp_path / "out", GraftOptions.flat(**FAST))
    assert result.kind == "llava_next"
    out = tensors(tmp_path / "out")
    assert out["image_newline"].shape == (48,)
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "out").eval()
    assert type(model).__name__ == "LlavaNextForConditionalGeneration"
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "w20"}]}], add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[Image.new("RGB", (32, 16), (0, 90, 200))], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 2


def test_same_inputs_give_byte_identical_weights_and_api_name(tmp_path):
    from vadasm import VADASMMerger

    donor = make_llava_donor(tmp_path / "donor", words=WORDS)
    recipient = make_text_recipient(tmp_path / "recipient", "mistral", words=RECIPIENT_WORDS, hidden_size=48)
    merger = VADASMMerger(**FAST, map_method="omp")
    first = merger.merge(recipient, donor, tmp_path / "one")
    merger.merge(recipient, donor, tmp_path / "two")
    assert first.chosen_map == "omp"
    one, two = (tmp_path / name / "model.safetensors" for name in ("one", "two"))
    assert one.read_bytes() == two.read_bytes()
