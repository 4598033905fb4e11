"""--projector closed-form and --map calibrated end to end on tiny models: stock LLaVA outputs that load,
reproduce the fitted map, record the fit, and refuse bad inputs in one line."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image
from test_graft import FAST, RECIPIENT_WORDS, WORDS, generate, tensors
from transformers import AutoModelForImageTextToText

from pico_models import make_llava_donor, make_llava_next_donor, make_text_recipient
from vadasm.cli import main
from vadasm.errors import VadasmError
from vadasm.graft import GraftOptions, graft
from vadasm.graft.options import CALIBRATION_FIT, check_options

COLOURS = {"w20": (200, 30, 30), "w21": (30, 200, 30), "w22": (30, 30, 200), "w23": (220, 220, 30)}


def calibration_jsonl(folder, count=60, seed=0):
    """Noisy solid-colour 16x16 images, each captioned by its colour's word (shared by both vocabularies)."""
    gen = torch.Generator().manual_seed(seed)
    (folder / "img").mkdir(parents=True)
    lines = []
    for i in range(count):
        word = list(COLOURS)[i % len(COLOURS)]
        pixels = torch.tensor(COLOURS[word]).float() + 25 * torch.randn(16, 16, 3, generator=gen)
        Image.fromarray(pixels.clamp(0, 255).to(torch.uint8).numpy()).save(folder / "img" / f"{i}.png")
        lines.append(json.dumps({"image": f"img/{i}.png", "text": word}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "captions.jsonl"


@pytest.fixture
def pair(tmp_path):
    donor = make_llava_donor(tmp_path / "donor", "llama", words=WORDS)
    recipient = make_text_recipient(tmp_path / "recipient", "llama", words=RECIPIENT_WORDS, hidden_size=48)
    return donor, recipient, calibration_jsonl(tmp_path / "data")


def test_closed_form_projector_is_a_linear_llava_that_reproduces_the_map_exactly(tmp_path, pair):
    donor, recipient, data = pair
    result = graft(donor, recipient, tmp_path / "out",
                   GraftOptions.flat(**FAST, projector_mode="closed-form", calibration_data=str(data)))
    fit = result.projector["closed_form"]
    assert fit["items"] == 60 and fit["input_width"] == 24 and fit["heldout_items"] == 6
    assert fit["heldout"]["relative_residual"] < 0.5 < fit["heldout_control"]["relative_residual"]
    assert fit["heldout"]["label_hit"] > fit["heldout_control"]["label_hit"]
    assert not result.maps  # no anchor map: the donor's projector is not used
    model, _ = generate(tmp_path / "out")
    assert model.config.projector_hidden_act == "linear" and model.config.multimodal_projector_bias
    out = tensors(tmp_path / "out")
    assert torch.equal(out["multi_modal_projector.linear_2.weight"], torch.eye(48))
    features, projector = torch.randn(7, 24), model.model.multi_modal_projector
    weight, bias = out["multi_modal_projector.linear_1.weight"], out["multi_modal_projector.linear_1.bias"]
    with torch.no_grad():
        assert torch.equal(projector(features), projector.linear_1(features))  # linear_2 and the act change nothing
        assert torch.allclose(projector(features), features @ weight.T + bias, atol=1e-6)
    provenance = json.loads((tmp_path / "out" / "vadasm_config.json").read_text())
    assert provenance["recipe"]["projector_mode"] == "closed-form"
    assert set(CALIBRATION_FIT) <= provenance["recipe"].keys()
    assert provenance["result"]["projector"]["closed_form"]["fit"]["relative_residual"] < 0.5


@pytest.mark.parametrize("donor_hidden", [32, 64])  # recipient 48: wider (dead units) and narrower (refit)
def test_calibrated_map_refits_linear_2_and_loads(tmp_path, donor_hidden):
    donor = make_llava_donor(tmp_path / "donor", "llama", words=WORDS, hidden_size=donor_hidden)
    recipient = make_text_recipient(tmp_path / "recipient", "llama", words=RECIPIENT_WORDS, hidden_size=48)
    data = calibration_jsonl(tmp_path / "data", count=donor_hidden + 6)
    result = graft(donor, recipient, tmp_path / "out",
                   GraftOptions.flat(**FAST, map_method="calibrated", calibration_data=str(data)))
    assert result.chosen_map == "calibrated" and not result.maps
    fit, hidden = result.projector["calibrated_map"], result.projector["hidden"]
    assert fit["input_width"] == min(donor_hidden, 48) and fit["per_token"]
    assert fit["heldout"]["relative_residual"] < fit["heldout_control"]["relative_residual"]
    assert hidden["exact"] == (donor_hidden <= 48) and hidden["new_width"] == 48
    out, src = tensors(tmp_path / "out"), tensors(donor)
    kept = out["multi_modal_projector.linear_1.weight"][:min(donor_hidden, 48)]
    donor_rows = {tuple(r.tolist()) for r in src["multi_modal_projector.linear_1.weight"]}
    assert all(tuple(r.tolist()) in donor_rows for r in kept)  # linear_1 is the donor's (a subset of its units)
    model, _ = generate(tmp_path / "out")
    assert model.config.projector_hidden_act == "gelu"


def test_default_recipe_leaves_the_calibration_options_out():
    assert not set(CALIBRATION_FIT) & GraftOptions().recipe().keys()
    used = GraftOptions.flat(calibration_data="easyvqa", map_method="calibrated")
    assert set(CALIBRATION_FIT) <= used.recipe().keys()


@pytest.mark.parametrize(("values", "message"), [
    ({"projector_mode": "closed-form"}, "--projector closed-form needs --calibration-data"),
    ({"map_method": "calibrated"}, "--map calibrated needs --calibration-data"),
    ({"projector_mode": "mlp"}, "--projector: 'mlp' unknown"),
    ({"projector_mode": "closed-form", "calibration_data": "easyvqa", "text_only": True}, "not with --text-only"),
    ({"map_method": "calibrated", "calibration_data": "nowhere.jsonl"}, "nowhere.jsonl: --calibration-data must"),
])
def test_bad_calibration_options_are_one_line(values, message):
    with pytest.raises(VadasmError, match=message) as err:
        check_options(GraftOptions.flat(**values))
    assert "\n" not in str(err.value)


class Cli:
    """`vadasm graft ...` through the console entry point: (exit code, stderr)."""

    def __init__(self, monkeypatch, capsys):
        self.monkeypatch, self.capsys = monkeypatch, capsys

    def __call__(self, *args) -> tuple[int, str]:
        argv = ["vadasm", "graft", *map(str, args), "--min-anchors", "10", "--heldout", "10", "--quiet"]
        self.monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as stop:
            main()
        return stop.value.code, self.capsys.readouterr().err


@pytest.fixture
def run_cli(monkeypatch, capsys):
    return Cli(monkeypatch, capsys)


def test_too_few_items_say_how_many_are_needed(tmp_path, pair, run_cli):
    donor, recipient, _ = pair
    data = calibration_jsonl(tmp_path / "few", count=10)
    code, err = run_cli(donor, recipient, tmp_path / "out", "--projector", "closed-form", "--calibration-data", data)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "10 calibration items" in err and "needs at least 25" in err
    code, err = run_cli(donor, recipient, tmp_path / "out", "--map", "calibrated", "--calibration-data", data,
                        "--calibration-samples", "5")
    assert code == 2 and "5 calibration items" in err and "needs at least 33" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("line", "message"), [
    ('{"image": "img/missing.png", "text": "w20"}', "image 'img/missing.png' not found"),
    ('{"picture": "img/0.png"}', 'expected a JSON object with "image" and "text"'),
    ('{"image": "img/0.png", "text": ""}', '"text" must be a non-empty string'),
])
def test_bad_calibration_records_name_the_line(tmp_path, pair, run_cli, line, message):
    donor, recipient, data = pair
    data.write_text(data.read_text() + line + "\n")
    code, err = run_cli(donor, recipient, tmp_path / "out", "--projector", "closed-form", "--calibration-data", data)
    assert code == 2 and err.startswith(f"error: {data}:61: ") and message in err and err.count("\n") == 1


def test_donors_without_a_fixed_token_grid_or_projector_are_refused(tmp_path, pair, run_cli):
    _, recipient, data = pair
    donor = make_llava_next_donor(tmp_path / "next", "llama", words=WORDS)
    code, err = run_cli(donor, recipient, tmp_path / "out", "--map", "calibrated", "--calibration-data", data)
    assert code == 2 and "needs a llava donor" in err
    plain = make_llava_donor(tmp_path / "plain", "llama", words=WORDS)
    from safetensors.torch import load_file, save_file

    weights = load_file(plain / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "projector" not in k}, plain / "model.safetensors",
              metadata={"format": "pt"})
    code, err = run_cli(plain, recipient, tmp_path / "out", "--map", "calibrated", "--calibration-data", data)
    assert code == 2 and "no projector tensors" in err


def test_loaded_closed_form_graft_answers_from_the_image(tmp_path, pair):
    """The mapped image tokens of a red image sit nearest the recipient's embedding of its caption word."""
    donor, recipient, data = pair
    graft(donor, recipient, tmp_path / "out",
          GraftOptions.flat(**FAST, projector_mode="closed-form", calibration_data=str(data)))
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "out").eval()
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    hits = 0
    for word, colour in COLOURS.items():
        pixels = processor.image_processor(images=[Image.new("RGB", (16, 16), colour)], return_tensors="pt")
        with torch.no_grad():
            tokens = model.model.get_image_features(pixel_values=pixels["pixel_values"])
        tokens = torch.cat(list(tokens.pooler_output if hasattr(tokens, "pooler_output") else tokens))
        embeddings = model.get_input_embeddings().weight
        nearest = torch.nn.functional.normalize(tokens.mean(0), dim=0) @ torch.nn.functional.normalize(
            embeddings, dim=1).T
        hits += processor.tokenizer.convert_ids_to_tokens(int(nearest.argmax())) == word
    assert hits >= 3
