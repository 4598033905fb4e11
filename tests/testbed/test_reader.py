"""The class C reader: generated reading items (seeded, balanced, no easy-vqa template) and its training
loop on a tiny model (trains the top layers only, stops when the criterion holds, one line on a miss)."""

import importlib.util
import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from tiny_vlm import make_tokenizer
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from vadasm.errors import VadasmError
from vadasm.eval.easyvqa import QUESTION_TYPES
from vadasm.testbed import reader
from vadasm.testbed.build import BuildOptions, build, quick
from vadasm.testbed.paths import artefact_dir, is_built
from vadasm.testbed.reader import ReaderRecipe, build_reader, train_reader
from vadasm.testbed.reader_items import (
    COLOURS,
    EASY_VQA_TEMPLATES,
    SUFFIX,
    Thing,
    _yes_no,
    question_template,
    reader_items,
)
from vadasm.testbed.record import read_record
from vadasm.testbed.rounds import CriterionNotMet

CHAT = ("{% for m in messages %}{{ m['role'] + ' : ' + m['content'] + ' ' + eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant :' }}{% endif %}")


def test_items_are_seeded_and_splits_differ():
    assert reader_items(60, seed=3) == reader_items(60, seed=3)
    assert reader_items(60, seed=3) != reader_items(60, seed=4)
    train = {item.prompt for item in reader_items(200, seed=0)}
    assert len(train & {item.prompt for item in reader_items(200, seed=0, split="val")}) < 5


def test_yes_no_is_balanced_and_every_kind_is_asked():
    items = reader_items(1000, seed=1)
    answers = Counter(item.answer for item in items)
    assert abs(answers["yes"] - answers["no"]) <= 1
    assert answers["yes"] + answers["no"] > 300
    groups = Counter(item.group for item in items)
    assert set(groups) == {"colour", "shape", "object", "yesno", "yesno_neg", "other"}
    assert 0.4 < sum(item.prompt.endswith(SUFFIX) for item in items) / len(items) < 0.6
    assert all(" " not in item.answer.strip() and item.answer == item.answer.lower() for item in items)


def test_yes_no_items_are_contrastive_twins_a_batch_keeps_together():
    items = reader_items(2000, seed=4, yes_no_share=0.6, negated_share=0.3)
    twins = [items[i : i + 2] for i in range(0, len(items), 2)]
    yes_no = [(x, y) for x, y in twins if x.group.startswith("yesno")]
    assert all(y.group == x.group for x, y in yes_no)  # a unit is a pair or two open items, never mixed
    assert 0.65 < len(yes_no) / len(twins) < 0.78  # 0.6 of draws; failed open draws (no material...) are redrawn
    assert 0.25 < sum(x.group == "yesno_neg" for x, _ in yes_no) / len(yes_no) < 0.35
    for x, y in yes_no:
        assert {x.answer, y.answer} == {"yes", "no"}
        assert x.prompt[: x.prompt.index(x.question)].strip() == y.prompt[: y.prompt.index(y.question)].strip()
    differing = [{a, b} - {"a", "an"} for x, y in yes_no for a, b in zip(x.question.split(), y.question.split())
                 if a != b]
    assert sum(len(d) == 2 for d in differing) / len(yes_no) > 0.95  # one wording, the asked word changed


def test_open_answers_are_read_off_the_context():
    for item in reader_items(400, seed=2):
        if item.group in ("colour", "shape", "object"):
            context = item.prompt[: item.prompt.index(item.question)]
            assert item.answer in context, item


def test_negated_questions_ask_about_absence():
    cup = [Thing("cup", "red", None)]
    for seed in range(20):
        rng = random.Random(seed)
        yes_absent = _yes_no(cup, "colour", yes=True, negated=True, frame="photo", rng=rng)
        named = [w for w in yes_absent.lower().rstrip("?").split() if w in COLOURS]
        assert named and named[0] != "red", yes_absent  # "yes" to a negated question: that colour is absent
        no_present = _yes_no(cup, "colour", yes=False, negated=True, frame="photo", rng=rng)
        assert "red" in no_present.lower().rstrip("?").split(), no_present  # "no": red is present


def test_no_generated_question_is_an_easy_vqa_question():
    ev = pytest.importorskip("easy_vqa")
    questions = set(ev.get_train_questions()[0]) | set(ev.get_test_questions()[0])
    assert {question_template(q) for q in questions} == EASY_VQA_TEMPLATES
    normalised = {q.lower().rstrip("?").strip() for q in questions}
    for item in reader_items(5000, seed=0):
        assert question_template(item.question) not in EASY_VQA_TEMPLATES, item.question
        assert item.question.lower().rstrip("?.").strip() not in normalised


def test_rephrased_eval_questions_are_never_generated():
    path = Path(__file__).parents[2] / "benchmarks" / "text_oracle.py"
    spec = importlib.util.spec_from_file_location("text_oracle", path)
    text_oracle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(text_oracle)
    assert set(text_oracle.REPHRASED) == set(QUESTION_TYPES)
    rephrased = {question_template(t.format(c="red", s="circle", ref="circle"))
                 for templates in text_oracle.REPHRASED.values() for t in templates}
    generated = {question_template(item.question) for item in reader_items(5000, seed=0)}
    assert not rephrased & generated
    assert text_oracle.rephrase("is there not a red shape?", "yesno_color_neg", 0) == (
        "Is the figure painted some colour besides red?")


def make_tokenizer_with_chat():
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHAT
    return tokenizer


def tiny_reader_base(folder: Path) -> Path:
    """A 3-layer Llama with a word-level tokenizer and a chat template (unknown words are <unk>)."""
    torch.manual_seed(0)
    tokenizer = make_tokenizer_with_chat()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_recipe(**overrides) -> ReaderRecipe:
    return ReaderRecipe(**{**dict(steps=4, round_steps=4, eval_every=2, val_items=4, train_layers=1,
                                  batch_size=2, lr=1e-2), **overrides})


def test_training_changes_only_the_top_layers(tmp_path):
    folder = tiny_reader_base(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(folder)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = train_reader(model, make_tokenizer_with_chat(), tiny_recipe(min_val_accuracy=0.0))
    assert metrics["rounds"].met and metrics["rounds"].steps_used == 4  # disabled criterion: whole budget
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith(("model.layers.2.", "model.norm.")) for k in changed)
    assert all(p.requires_grad for p in model.parameters())


def scripted(values):
    """A stand-in for `exact_answer_accuracy` returning the next scripted validation accuracy."""
    calls = iter(values)
    return lambda *args, **kwargs: {"all": next(calls)}


def test_training_stops_when_the_criterion_holds(tmp_path, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_reader_base(tmp_path / "base"))
    monkeypatch.setattr(reader, "exact_answer_accuracy", scripted([0.5, 0.95, 0.99]))
    metrics = train_reader(model, make_tokenizer_with_chat(), tiny_recipe(steps=8, round_steps=4))
    assert metrics["rounds"].met and metrics["rounds"].steps_used == 4
    assert [point["all"] for point in metrics["rounds"].curve] == [0.5, 0.95]


def test_build_fails_in_one_line_when_the_budget_is_spent(tmp_path, monkeypatch):
    monkeypatch.setenv("VADASM_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(VadasmError, match="needs the smollm2 testbed artefact"):
        build_reader(out, BuildOptions(), tiny_recipe())
    base = tiny_reader_base(tmp_path / "home" / "testbed" / "smollm2")
    (base / "vadasm_testbed.json").write_text(json.dumps({"artefact": "smollm2"}))
    monkeypatch.setattr(reader, "exact_answer_accuracy", scripted([0.3, 0.4]))
    with pytest.raises(CriterionNotMet) as err:
        build_reader(out, BuildOptions(), tiny_recipe())
    message = str(err.value)
    assert "\n" not in message and "smollm2-reader" in message and "40.0%" in message and "4 steps" in message
    assert not any(out.iterdir())  # nothing written


def test_a_quick_build_of_the_reader_writes_its_record(tmp_path, monkeypatch):
    monkeypatch.setenv("VADASM_HOME", str(tmp_path / "home"))
    base = tiny_reader_base(tmp_path / "home" / "testbed" / "smollm2")
    (base / "vadasm_testbed.json").write_text(json.dumps({"artefact": "smollm2"}))
    monkeypatch.setattr(reader, "ReaderRecipe", lambda: tiny_recipe())  # the build's default recipe, tiny
    records = build(quick(BuildOptions(only=("smollm2-reader",), seed=5, progress=False)), log=lambda _: None)
    assert list(records) == ["smollm2", "smollm2-reader"] and is_built("smollm2-reader")
    record = read_record(artefact_dir("smollm2-reader"))
    assert record["recipe"]["steps"] == 2 and record["recipe"]["seed"] == 5
    assert record["training"]["met"] and record["training"]["steps_used"] == 2
    assert record["training"]["criterion"].startswith("none (exact answers")
    assert AutoModelForCausalLM.from_pretrained(artefact_dir("smollm2-reader")).config.num_hidden_layers == 3


def test_the_first_round_may_ask_fewer_negated_questions(tmp_path, monkeypatch):
    calls = []

    def recording(n, seed, split, *shares):
        calls.append((n, split, shares[-1]))
        return reader_items(n, seed, split, *shares)

    monkeypatch.setattr(reader, "reader_items", recording)
    model = AutoModelForCausalLM.from_pretrained(tiny_reader_base(tmp_path / "base"))
    recipe = tiny_recipe(steps=6, round_steps=2, negated_share=0.5, first_round_negated_share=0.2,
                         min_val_accuracy=0.0)
    train_reader(model, make_tokenizer_with_chat(), recipe)
    assert calls == [(4, "train", 0.2), (8, "train-later", 0.5), (4, "val", 0.5)]  # batch 2: 2 + 4 steps
