"""The realistic donor's entry point end to end on a tiny LM and tower (easy-vqa replaced by fakes)."""

import pytest
import torch
from tiny_vlm import fake_vqa_items, make_text_lm, write_images
from transformers import AutoProcessor, CLIPVisionModel, LlavaForConditionalGeneration

from vadasm.errors import VadasmError
from vadasm.testbed import real_donor
from vadasm.testbed.donor import QA_TEMPLATE
from vadasm.testbed.llava_stages import StagesRecipe
from vadasm.testbed.vision import TowerRecipe, tower_config


def test_build_real_donor_writes_a_stock_llava_and_its_record(tmp_path, monkeypatch):
    monkeypatch.setitem(real_donor.IMAGE_TOKENS, "tiny", "<image>")
    monkeypatch.setitem(real_donor.TEMPLATES, "tiny", QA_TEMPLATE)
    lm = make_text_lm(tmp_path / "lm")
    torch.manual_seed(0)
    tower = tmp_path / "tower"
    CLIPVisionModel(tower_config(TowerRecipe(image_size=16, patch_size=8, hidden_size=16, layers=2, heads=2))
                    ).save_pretrained(tower)
    paths = write_images(tmp_path / "images")
    items = fake_vqa_items(paths)
    recipe = StagesRecipe(batch_size=4, align_max_steps=2, align_eval_every=2, align_min_val=0.0,
                          tune_max_steps=2, tune_eval_every=2, tune_min_val=0.0, tune_min_val_what=0.0,
                          val_questions=8)
    out = tmp_path / "donor"
    record = real_donor.build_real_donor(out, lm, tower, "tiny", recipe, items=(items, items),
                                         landing_images=[(p, c, "rectangle") for c, p in paths.items()])
    model = LlavaForConditionalGeneration.from_pretrained(out)
    assert model.config.vision_feature_layer == -2
    assert AutoProcessor.from_pretrained(out).image_token == "<image>"
    assert record["recipe"]["base"] == "tiny"
    assert record["scores"]["training"]["align_steps"] == 2 and record["scores"]["training"]["tune_steps"] == 2
    assert record["scores"]["landing_val"]["image_tokens"] == 4 * 4


def test_build_real_donor_refuses_an_unknown_base_or_a_missing_artefact(tmp_path):
    with pytest.raises(VadasmError, match="unknown base 'llama'"):
        real_donor.build_real_donor(tmp_path / "out", tmp_path, tmp_path, "llama")
    with pytest.raises(VadasmError, match="build the language model artefact first"):
        real_donor.build_real_donor(tmp_path / "out", tmp_path / "none", tmp_path, "smollm2")
