"""LLaVA-1.5's two stages on a tiny random LLaVA: what each stage may change, merge, reload, budgets."""

import pytest
import torch
from tiny_vlm import fake_vqa_items, make_text_lm, make_tiny_llava, make_tokenizer, write_images
from transformers import LlavaForConditionalGeneration

from vadasm.errors import VadasmError
from vadasm.testbed.llava_stages import (
    StagesRecipe,
    bf16_autocast,
    feature_alignment,
    first_token_ids,
    instruction_tuning,
    row_all_right,
)
from vadasm.testbed.vision import image_processor, load_pixels


@pytest.fixture
def tiny(tmp_path):
    lm = make_text_lm(tmp_path / "lm")
    _, model, processor = make_tiny_llava(tmp_path / "vlm", lm)
    items = fake_vqa_items(write_images(tmp_path / "images"))
    return model, processor, items, load_pixels(items, image_processor(16))


def _copy(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_row_is_right_only_when_every_answer_position_is():
    rows = torch.tensor([0, 0, 1, 1, 2])
    correct = torch.tensor([True, True, True, False, True])
    assert row_all_right(rows, correct, 3).tolist() == [True, False, True]


def test_words_that_share_a_first_token_are_refused():
    tokenizer = make_tokenizer()
    assert len(first_token_ids(tokenizer, ("red", "blue"))) == 2
    with pytest.raises(VadasmError, match="with one token"):
        first_token_ids(tokenizer, ("zzz", "qqq"))  # both unknown: <unk>


def test_feature_alignment_changes_the_projector_only(tiny):
    model, processor, items, pixels = tiny
    before = _copy(model)
    recipe = StagesRecipe(batch_size=4, align_lr=1e-2, align_max_steps=4, align_eval_every=2, align_min_val=0.0)
    metrics = feature_alignment(model, processor, items, items, pixels, recipe)
    assert metrics["align_steps"] == 2  # criterion met at the first check
    assert model.model.config.vision_feature_layer == -2
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("multi_modal_projector" in k for k in changed)
    assert set(after) == set(before)
    assert 0.0 <= metrics["align_val"]["color"] <= 1.0 and 0.0 <= metrics["align_val"]["shape"] <= 1.0


def test_instruction_tuning_merges_lora_into_a_stock_reloadable_llava(tiny, tmp_path):
    model, processor, items, pixels = tiny
    before = _copy(model)
    recipe = StagesRecipe(batch_size=4, tune_max_steps=3, tune_eval_every=3, tune_lr_lora=1e-2,
                          tune_min_val=0.0, tune_min_val_what=0.0, val_questions=8)
    metrics = instruction_tuning(model, processor, items, items, pixels, recipe)
    assert metrics["tune_steps"] == 3 and set(metrics["tune_val"]) == {"bare", "short_answer"}
    model.save_pretrained(tmp_path / "donor")
    reloaded = LlavaForConditionalGeneration.from_pretrained(tmp_path / "donor")
    state = reloaded.state_dict()
    assert set(state) == set(before) and not any("lora" in k for k in state)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    changed = {k for k in before if not torch.equal(before[k], state[k])}
    for layer in (0, 1):  # LoRA on every layer of the tiny LM, merged
        assert any(f"language_model.layers.{layer}.mlp.down_proj" in k for k in changed)
    assert any("multi_modal_projector" in k for k in changed)
    assert not any("vision_tower" in k for k in changed)


def test_a_spent_stage_budget_fails_with_one_line(tiny):
    model, processor, items, pixels = tiny
    recipe = StagesRecipe(batch_size=4, align_max_steps=2, align_eval_every=2, align_min_val=1.01)
    with pytest.raises(VadasmError, match="feature alignment: validation .* budget of 2 steps") as err:
        feature_alignment(model, processor, items, items, pixels, recipe)
    assert "\n" not in str(err.value)


def test_bf16_autocast_only_when_asked_and_native():
    x, w = torch.randn(4, 8), torch.randn(3, 8)
    with bf16_autocast(False):
        assert torch.nn.functional.linear(x, w).dtype == torch.float32
    with bf16_autocast(True):
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
        assert torch.nn.functional.linear(x, w).dtype == (torch.bfloat16 if native else torch.float32)
