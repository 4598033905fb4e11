"""The CLIP-style tower of the realistic donor, on a toy set of drawn shapes and a tiny ViT."""

import math

import pytest
import torch
import torch.nn.functional as F
from toy_shapes import toy_set
from transformers import CLIPVisionModel

from vadasm.testbed.clip_tower import (
    EOS,
    ClipTowerRecipe,
    caption_vocabulary,
    encode_captions,
    symmetric_info_nce,
    train_clip_tower,
)
from vadasm.testbed.rounds import CriterionNotMet

TINY = dict(image_size=16, patch_size=8, hidden_size=32, layers=1, heads=2, text_hidden_size=32, text_layers=1,
            embed_dim=16, batch_size=16, lr=3e-3)


def test_info_nce_is_clips_loss_when_only_the_diagonal_matches():
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    logits = 10.0 * image @ text.T
    clip = (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4))) / 2
    assert torch.allclose(symmetric_info_nce(image, text, torch.tensor(10.0), torch.eye(4, dtype=torch.bool)), clip)


def test_info_nce_spreads_the_target_over_every_pair_of_one_label():
    # two images and captions of one label, one of another; unit vectors along the axes
    image = text = torch.eye(3)
    same = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    # rows 0, 1: logits (1, 0, 0) / (0, 1, 0), target (1/2, 1/2, 0); row 2: logits (0, 0, 1), target (0, 0, 1)
    e = math.e
    row01 = -(0.5 * math.log(e / (e + 2)) + 0.5 * math.log(1 / (e + 2)))
    row2 = -math.log(e / (e + 2))
    expected = (2 * row01 + row2) / 3  # symmetric: both directions equal here
    assert symmetric_info_nce(image, text, torch.tensor(1.0), same).item() == pytest.approx(expected, rel=1e-6)


def test_captions_end_with_eos_where_the_text_encoder_pools():
    vocab = caption_vocabulary()
    ids, mask = encode_captions(["a red circle", "the circle is red"], vocab)
    assert ids.shape == (2, 5)
    assert [vocab[i] for i in ids[0].tolist()] == ["a", "red", "circle", EOS, "<pad>"]
    assert mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def test_contrastive_training_lowers_the_loss_and_retrieves_above_chance():
    data = toy_set()
    recipe = ClipTowerRecipe(**TINY, max_steps=80, round_steps=80, eval_every=40, min_val_color=0.5,
                             min_val_shape=0.5)
    tower, metrics = train_clip_tower(recipe, data, data)
    assert isinstance(tower, CLIPVisionModel) and tower.config.image_size == 16
    assert metrics["final_loss"] < metrics["first_loss"]
    zero_shot = metrics["val_zero_shot"]
    # chance over the 24 captions: 1/8 colour, 1/3 shape, 1/24 both
    assert zero_shot["color"] >= 0.5 and zero_shot["shape"] >= 0.5 and zero_shot["both"] > 3 / 24
    assert metrics["steps"] in (40, 80)  # stops at the first check that meets the criterion
    assert metrics["rounds"].met and metrics["rounds"].curve[-1]["step"] == metrics["steps"]


def test_a_budget_spent_over_several_rounds_fails_with_one_line():
    data = toy_set(shifts=(0,))
    recipe = ClipTowerRecipe(**TINY, max_steps=10, round_steps=4, eval_every=3, min_val_color=1.01,
                             min_val_shape=0.5)
    with pytest.raises(CriterionNotMet, match="budget of 10 steps") as err:
        train_clip_tower(recipe, data, data)
    assert "\n" not in str(err.value) and "clip-tower" in str(err.value)


def test_criteria_off_trains_the_whole_budget_and_records_the_rounds():
    data = toy_set(shifts=(0,))
    recipe = ClipTowerRecipe(**TINY, max_steps=6, round_steps=4, eval_every=2, min_val_color=0.0,
                             min_val_shape=0.0)
    _, metrics = train_clip_tower(recipe, data, data)
    record = metrics["rounds"].record(metrics["criterion"], metrics["budget"])
    assert record["met"] and record["steps_used"] == 6 and record["round_steps"] == 4
    assert record["criterion"].startswith("none (val zero-shot colour >= 0%")
