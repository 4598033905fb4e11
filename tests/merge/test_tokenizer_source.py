"""tokenizer_source / tokenizer: the output vocabulary and the embedding rows that follow it."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from pico_models import SPECIAL_TOKENS, VOCAB, make_text_model, make_word_tokenizer
from vadasm.errors import VadasmError
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge

QUIET = MergeOptions(progress=False)
WORDS = [f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS) - 1)]  # 95 tokens, 96 rows
NEW = ["x1", "x2", "x3", "x4"]
EMBED = "model.embed_tokens.weight"


@pytest.fixture
def small_and_big(tmp_path):
    """A base with 95 tokens (96 rows) and a model whose tokenizer adds four words (99 tokens, 100 rows)."""
    small = make_text_model(tmp_path / "small", "llama", seed=0)
    make_word_tokenizer(small, WORDS)
    big = make_text_model(tmp_path / "big", "llama", seed=1, vocab_size=100)
    make_word_tokenizer(big, WORDS + NEW)
    return small, big


def _linear(small, big, **extra):
    return recipe_from_dict({"merge_method": "linear", "base_model": str(small), **extra,
                             "models": [{"model": str(small)}, {"model": str(big)}]})


@pytest.mark.parametrize("source", ["big", "union"])
def test_a_larger_vocabulary_gets_its_rows_and_the_model_runs_on_the_new_tokens(tmp_path, small_and_big, source):
    small, big = small_and_big
    out = tmp_path / "out"
    result = run_merge(_linear(small, big, tokenizer_source=str(big) if source == "big" else "union"), out, QUIET)
    assert "output vocabulary: 99 tokens in 99 rows, 4 of them new to the base" in result.notes
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == 99
    assert [tokenizer.get_vocab()[w] for w in NEW] == [95, 96, 97, 98]  # union: added in the source's id order
    merged, ws, wb = load_file(out / "model.safetensors"), load_file(small / "model.safetensors"), load_file(
        big / "model.safetensors")
    assert merged[EMBED].shape == (99, 32) and merged["lm_head.weight"].shape == (99, 32)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 99
    vocab_small, vocab_big = AutoTokenizer.from_pretrained(small).get_vocab(), AutoTokenizer.from_pretrained(
        big).get_vocab()
    for word in ("w3", "<s>"):  # in both: the average of the two models' own rows
        expected = (ws[EMBED][vocab_small[word]] + wb[EMBED][vocab_big[word]]) / 2
        assert torch.allclose(merged[EMBED][tokenizer.get_vocab()[word]], expected, atol=1e-6)
    for word in NEW:  # only the big model has it: its row, for both inputs
        assert torch.allclose(merged[EMBED][tokenizer.get_vocab()[word]], wb[EMBED][vocab_big[word]], atol=1e-6)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer("w1 x4 x1", return_tensors="pt").input_ids
    assert ids.max() >= 95
    assert model.generate(ids, max_new_tokens=2, min_new_tokens=2, do_sample=False).shape == (1, 5)


def test_same_vocabularies_with_tokenizer_source_give_the_plain_merge(tmp_path, small_and_big):
    small, _ = small_and_big
    other = make_text_model(tmp_path / "other", "llama", seed=2)
    make_word_tokenizer(other, WORDS)
    raw = {"merge_method": "linear", "models": [{"model": str(small)}, {"model": str(other)}]}
    run_merge(recipe_from_dict(raw), tmp_path / "plain", QUIET)
    run_merge(recipe_from_dict({**raw, "tokenizer_source": "union"}), tmp_path / "union", QUIET)
    plain, union = load_file(tmp_path / "plain/model.safetensors"), load_file(tmp_path / "union/model.safetensors")
    assert plain[EMBED].shape == (96, 32)
    assert union[EMBED].shape == (95, 32)  # as mergekit: one row per token of the vocabulary (95 tokens)
    assert torch.equal(union[EMBED], plain[EMBED][:95])
    assert all(torch.equal(union[k], plain[k]) for k in plain if k not in (EMBED, "lm_head.weight"))


def test_tokens_block_adds_forces_and_pads(tmp_path, small_and_big):
    small, big = small_and_big
    tokens = {"<extra>": {"source": {"kind": "zero"}},
              "w5": {"source": {"kind": "model_token", "model": str(big), "token": "x2"}, "force": True}}
    out = tmp_path / "out"
    run_merge(_linear(small, big, tokenizer={"source": "base", "tokens": tokens, "pad_to_multiple_of": 64}), out,
              QUIET)
    tokenizer = AutoTokenizer.from_pretrained(out)
    vocab = tokenizer.get_vocab()
    assert len(vocab) == 96 and "x1" not in vocab
    merged, wb = load_file(out / "model.safetensors"), load_file(big / "model.safetensors")
    assert merged[EMBED].shape == (128, 32)
    assert torch.equal(merged[EMBED][vocab["<extra>"]], torch.zeros(32))
    big_vocab = AutoTokenizer.from_pretrained(big).get_vocab()
    assert torch.allclose(merged[EMBED][vocab["w5"]], wb[EMBED][big_vocab["x2"]], atol=1e-6)
    assert torch.allclose(merged[EMBED][100], merged[EMBED][:96].mean(0), atol=1e-6)  # padding: mean row
    AutoModelForCausalLM.from_pretrained(out)


@pytest.mark.parametrize("raw, message", [
    ({"tokenizer_source": "union", "tokenizer": {"source": "union"}}, "either 'tokenizer_source' or 'tokenizer'"),
    ({"tokenizer_source": "elsewhere"}, "tokenizer_source 'elsewhere' is neither 'union', 'base' nor a model"),
    ({"tokenizer": {"tokens": {"<x>": {"source": "nobody"}}}}, r"tokens\['<x>'\].source: 'nobody' is not a model"),
    ({"tokenizer": {"tokens": {"<x>": {"source": {"kind": "model_token", "model": "a"}}}}}, "exactly one of"),
    ({"tokenizer": {"pad_to_multiple_of": 0}}, "greater than or equal to 1"),
])
def test_bad_tokenizer_settings_are_refused_before_loading(raw, message):
    with pytest.raises(VadasmError, match=message):
        recipe_from_dict({"merge_method": "linear", "models": [{"model": "a"}, {"model": "b"}], **raw})


def test_a_token_with_no_row_anywhere_and_no_source_is_refused(tmp_path, small_and_big):
    small, big = small_and_big
    recipe = _linear(small, big, tokenizer={"source": "base", "tokens": {"<brand-new>": {}}})
    with pytest.raises(VadasmError, match=r"tokens\['<brand-new>'\]: some model lacks this token; give a source"):
        run_merge(recipe, tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()
