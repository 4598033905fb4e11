"""Where image tokens land: hand-computed numbers on a tiny case, and a tiny LLaVA folder end to end."""

import math
import sys
from pathlib import Path

import pytest
import torch
from toy_shapes import save_toy_images
from transformers import LlavaForConditionalGeneration

from vadasm.errors import VadasmError
from vadasm.testbed.landing import landing_numbers, landing_report

sys.path.insert(0, str(Path(__file__).parents[1]))
from pico_models import make_llava_donor  # noqa: E402

TOKENS = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
IDS, ROWS = torch.tensor([10, 11, 12]), torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 3.0]])
COLOR, SHAPE = [frozenset({10}), frozenset({11})], [frozenset({11}), frozenset({12})]


@pytest.mark.parametrize("chunks", [[(IDS, ROWS)], [(IDS[:2], ROWS[:2]), (IDS[2:], ROWS[2:])]])
def test_landing_numbers_match_a_hand_computed_case(chunks):
    numbers = landing_numbers(TOKENS, chunks, COLOR, SHAPE)
    word_norm = (1 + math.sqrt(2) + math.sqrt(10)) / 3
    assert numbers["token_norm"] == pytest.approx(1.5)
    assert numbers["word_norm"] == pytest.approx(word_norm)
    assert numbers["norm_ratio"] == pytest.approx(1.5 / word_norm)
    # token 0 points along row 10 (cosine 1); token 1 is nearest row 12 (3/sqrt(10) > 1/sqrt(2))
    assert numbers["nearest_cosine"] == pytest.approx((1 + 3 / math.sqrt(10)) / 2)
    assert numbers["nearest_ids"] == [(10, 1), (12, 1)]
    assert numbers["nearest_is_color"] == 0.5 and numbers["nearest_is_shape"] == 0.5
    assert numbers["nearest_is_either"] == 1.0
    assert numbers["vocabulary_rows"] == 3 and numbers["image_tokens"] == 2


def test_a_projector_that_outputs_one_word_lands_every_token_on_it(tmp_path):
    words = ["red", "green", "blue", "black", "circle", "rectangle", "triangle", "a", "the"]
    folder = make_llava_donor(tmp_path / "donor", words=words)
    model = LlavaForConditionalGeneration.from_pretrained(folder)
    red = 4 + words.index("red")  # ids 0-3 are special tokens
    with torch.no_grad():
        projector = model.model.multi_modal_projector
        projector.linear_2.weight.zero_()
        projector.linear_2.bias.copy_(model.get_input_embeddings().weight[red])
    model.save_pretrained(folder)
    images = save_toy_images(tmp_path / "images")  # 4 colours x 3 shapes, 16 px: 4 patches each
    report = landing_report(folder, images)
    vocabulary = model.get_input_embeddings().weight[4 : 4 + len(words)]  # <image> and specials left out
    assert report["image_tokens"] == 48 and report["vocabulary_rows"] == len(words)
    assert report["nearest_cosine"] == pytest.approx(1.0)
    assert report["norm_ratio"] == pytest.approx((vocabulary[words.index("red")].norm() /
                                                  vocabulary.norm(dim=-1).mean()).item(), rel=1e-5)
    assert report["nearest_is_color"] == pytest.approx(3 / 12)  # the red images only
    assert report["nearest_is_shape"] == 0.0
    assert report["nearest_words"] == [("red", 48)]


def test_landing_refuses_a_folder_without_a_model(tmp_path):
    with pytest.raises(VadasmError, match="no config.json"):
        landing_report(tmp_path, [(tmp_path / "x.png", "red", "circle")])
