"""Training code on tiny random models: answer-only loss, LoRA merged back, projector alignment."""

from pathlib import Path

import torch
import torch.nn.functional as F
from tiny_vlm import fake_vqa_items, make_text_lm, make_tiny_llava, make_tokenizer, write_images

from vadasm.eval.easyvqa import VqaItem, question_type
from vadasm.testbed.donor import align_projector, balanced_order, train_donor
from vadasm.testbed.donor_recipe import DonorRecipe, encode_item, image_seq_length
from vadasm.testbed.recipient import encode_problem
from vadasm.testbed.sft import Encoded, answer_loss, collate
from vadasm.testbed.vision import WORDS, image_processor, load_pixels, patch_word_targets


def test_answer_loss_equals_full_cross_entropy_at_answer_positions():
    torch.manual_seed(0)
    seqs = [Encoded([5, 6, 7, 8], 2), Encoded([5, 9, 10], 1)]
    batch = collate(seqs, pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8], [5, 9, 10, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    hidden = torch.randn(2, 4, 8)
    head = torch.nn.Linear(8, 12, bias=False)
    logits = head(hidden)
    # positions predicting tokens 7, 8 (row 0) and 9, 10 (row 1)
    expected = F.cross_entropy(
        torch.stack([logits[0, 1], logits[0, 2], logits[1, 0], logits[1, 1]]), torch.tensor([7, 8, 9, 10])
    )
    assert torch.allclose(answer_loss(hidden, head, batch), expected)


def test_encode_item_matches_the_processor_and_ends_at_eos(tmp_path):
    lm = make_text_lm(tmp_path / "lm")
    _, _, processor = make_tiny_llava(tmp_path / "vlm", lm)
    encoded = encode_item(processor, "what color is the shape?", "red")
    tokenizer = processor.tokenizer
    answer = encoded.ids[encoded.answer_start :]
    assert tokenizer.convert_ids_to_tokens(answer) == ["red", "<eos>"]
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert encoded.ids.count(image_id) == image_seq_length(processor) == 4
    blind = encode_item(processor, "what color is the shape?", "red", with_image=False)
    assert image_id not in blind.ids


def test_recipient_examples_use_the_chat_template(tmp_path):
    tokenizer = make_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] + ' : ' + m['content'] + ' ' + eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant :' }}{% endif %}"
    )
    encoded = encode_problem(tokenizer, "what is 3 + 4 ?", "7")
    assert tokenizer.convert_ids_to_tokens(encoded.ids[encoded.answer_start :]) == ["7", "<eos>"]


def test_donor_training_merges_lora_into_the_language_model(tmp_path):
    lm = make_text_lm(tmp_path / "lm")
    _, model, processor = make_tiny_llava(tmp_path / "vlm", lm)
    items = fake_vqa_items(write_images(tmp_path / "images"))
    pixels = load_pixels(items, image_processor(16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = DonorRecipe(base="tiny", align_steps=30, steps=3, batch_size=4, lr_lora=1e-2)
    aligned = align_projector(model, processor.tokenizer, items, pixels, recipe)
    assert aligned["align_relative_mse"] < 1.0
    assert 0.0 <= aligned["align_nearest_word_accuracy"] <= 1.0
    metrics = train_donor(model, processor, items, pixels, recipe)
    after = model.state_dict()
    assert set(after) == set(before)  # no LoRA tensors left behind
    assert not any("lora" in name for name in after)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # tiny LM has 2 layers: LoRA on the top one only; projector changed by alignment; tower frozen
    assert any("language_model.layers.1.self_attn.q_proj" in k for k in changed)
    assert not any("language_model.layers.0." in k for k in changed)
    assert any("multi_modal_projector" in k for k in changed)
    assert not any("vision_tower" in k for k in changed)
    assert metrics["questions_seen"] == 12


def test_balanced_order_makes_yes_no_types_half_yes_and_keeps_the_type_mix():
    def item(n, q, a):
        return VqaItem(str(n), q, (a,), Path("x.png"), 0, question_type(q))

    # 90% "no" on the yes/no type, as in easy-vqa's colour questions; 20 what-colour questions
    items = [item(n, "is there a red shape?", "no" if n % 10 else "yes") for n in range(80)]
    items += [item(100 + n, "what color is the shape?", "red") for n in range(20)]
    order = balanced_order(tuple(items), 4000, seed=0)
    yesno = [items[i] for i in order if items[i].qtype == "yesno_color"]
    assert abs(len(yesno) / 4000 - 0.8) < 0.03  # type mix kept
    assert abs(sum(x.answers[0] == "yes" for x in yesno) / len(yesno) - 0.5) < 0.03
    assert order == balanced_order(tuple(items), 4000, seed=0)


def test_patches_alternate_between_naming_the_colour_and_the_shape():
    colors, shapes = torch.tensor([2, 0]), torch.tensor([1, 2])  # blue rectangle, red triangle
    targets = patch_word_targets(colors, shapes, n_patches=4)
    assert [[WORDS[i] for i in row] for row in targets.tolist()] == [
        ["blue", "rectangle", "blue", "rectangle"],
        ["red", "triangle", "red", "triangle"],
    ]


def test_donor_lora_is_checked_on_val_questions_and_keeps_training_until_its_budget(tmp_path):
    lm = make_text_lm(tmp_path / "lm")
    _, model, processor = make_tiny_llava(tmp_path / "vlm", lm)
    items = fake_vqa_items(write_images(tmp_path / "images"))
    pixels = load_pixels(items, image_processor(16))
    recipe = DonorRecipe(base="tiny", steps=5, round_steps=3, eval_every=2, batch_size=4, lr_lora=1e-2,
                         min_val_accuracy=1.01, val_questions=8)
    metrics = train_donor(model, processor, items, pixels, recipe, val=items)
    rounds = metrics["rounds"]
    assert not rounds.met and rounds.steps_used == 5 and metrics["questions_seen"] == 20
    assert [p["step"] for p in rounds.curve] == [2, 3, 5]  # every 2 steps and at each round's end
    assert {"all", "what_color", "what_shape"} <= set(rounds.curve[0])
    assert all(0.0 <= v <= 1.0 for p in rounds.curve for k, v in p.items() if k != "step")
    assert not any("lora" in name for name in model.state_dict())  # merged even when the criterion failed


def test_recipient_is_checked_on_val_problems(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vadasm.testbed.recipient import RecipientRecipe, train_recipient

    folder = make_text_lm(tmp_path / "lm")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] + ' : ' + m['content'] + ' ' + eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant :' }}{% endif %}"
    )
    model = AutoModelForCausalLM.from_pretrained(folder)
    recipe = RecipientRecipe(steps=4, round_steps=2, eval_every=2, batch_size=2, val_problems=6,
                             min_val_accuracy=1.01)
    metrics = train_recipient(model, tokenizer, recipe)
    rounds = metrics["rounds"]
    assert not rounds.met and rounds.steps_used == 4 and metrics["problems_seen"] == 8
    assert [p["step"] for p in rounds.curve] == [2, 4] and "all" in rounds.curve[0]
    assert metrics["criterion"].thresholds == {"all": 1.01}
