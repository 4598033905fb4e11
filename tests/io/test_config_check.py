"""config.json checked against the tensors: numbers are positive ints and agree with the shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiny_checkpoints import HIDDEN, VOCAB, tiny_llama_config, tiny_llama_tensors, write_tiny_llama
from vadasm.arch import architecture_for, load_spec
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint
from vadasm.io.config_check import check_config_against_tensors

CONFIG = Path("model/config.json")
SHAPES = {name: tuple(t.shape) for name, t in tiny_llama_tensors().items()}


def refused(config: dict, match: str, shapes: dict = SHAPES) -> None:
    with pytest.raises(VadasmError, match=match) as err:
        check_config_against_tensors(CONFIG, config, shapes)
    assert str(err.value).startswith(f"{CONFIG}:") and "\n" not in str(err.value)


def test_a_config_that_matches_its_tensors_passes():
    check_config_against_tensors(CONFIG, tiny_llama_config(), SHAPES)


def test_more_layers_in_the_config_than_in_the_weights_is_refused():
    refused(tiny_llama_config(num_hidden_layers=8), "num_hidden_layers is 8 but the weights hold 2 layers \\(0, 1\\)")


def test_fewer_layers_in_the_config_than_in_the_weights_is_refused():
    refused(tiny_llama_config(num_hidden_layers=1), "num_hidden_layers is 1 but the weights hold 2 layers")


def test_a_gap_in_the_layers_is_refused():
    shapes = {n: s for n, s in SHAPES.items() if not n.startswith("model.layers.0.")}
    refused(tiny_llama_config(num_hidden_layers=2), "weights hold 1 layer \\(1\\)", shapes)


def test_a_hidden_size_other_than_the_embedding_width_is_refused():
    refused(tiny_llama_config(hidden_size=HIDDEN * 2), f"hidden_size is {HIDDEN * 2} but tensor "
            f"'model.embed_tokens.weight' has {HIDDEN} columns")


def test_a_vocab_size_other_than_the_embedding_rows_is_refused():
    refused(tiny_llama_config(vocab_size=4096), f"vocab_size is 4096 but tensor 'model.embed_tokens.weight' "
            f"has {VOCAB} rows")


def test_an_lm_head_of_another_vocabulary_is_refused():
    shapes = {**SHAPES, "lm_head.weight": (VOCAB + 2, HIDDEN)}
    refused(tiny_llama_config(), f"vocab_size is {VOCAB} but tensor 'lm_head.weight' has {VOCAB + 2} rows", shapes)


@pytest.mark.parametrize("value", ["four", [2], True, 0, -1, 2.0])
def test_a_size_that_is_not_a_positive_integer_is_refused(value):
    refused(tiny_llama_config(num_hidden_layers=value), "num_hidden_layers must be a positive integer")
    refused(tiny_llama_config(num_attention_heads=value), "num_attention_heads must be a positive integer")


def test_deepseek_multi_token_prediction_layers_are_allowed_after_the_counted_ones():
    config = {"model_type": "deepseek_v3", "num_hidden_layers": 2, "num_nextn_predict_layers": 1}
    shapes = {f"model.layers.{i}.input_layernorm.weight": (4,) for i in range(3)}
    check_config_against_tensors(CONFIG, config, shapes)
    refused({**config, "num_nextn_predict_layers": 0}, "num_hidden_layers is 2 but the weights hold 3 layers", shapes)


def test_a_vision_model_whose_text_config_is_not_an_object_is_refused():
    refused({"model_type": "llava", "text_config": ["llama"]}, "text_config must be an object")


def test_a_vision_model_is_checked_through_its_layout():
    shapes = {"model.language_model.embed_tokens.weight": (VOCAB, HIDDEN), "model.vision_tower.x": (2,),
              "model.multi_modal_projector.linear_1.weight": (HIDDEN, 2),
              **{f"model.language_model.layers.{i}.input_layernorm.weight": (HIDDEN,) for i in range(2)}}
    config = {"model_type": "llava", "text_config": tiny_llama_config()}
    check_config_against_tensors(CONFIG, config, shapes)
    refused({**config, "text_config": tiny_llama_config(vocab_size=99)}, "vocab_size is 99", shapes)


@pytest.mark.parametrize("model_type", ["../../x", "/etc/passwd", "llama/../llama", "", ["llama"], None, 7])
def test_model_type_must_be_a_plain_name(tmp_path, model_type):
    folder = write_tiny_llama(tmp_path / "model", model_type=model_type)
    with pytest.raises(VadasmError, match="is not an architecture name") as err:
        Checkpoint.open(folder)
    assert str(err.value).startswith(f"{folder / 'config.json'}:")


@pytest.mark.parametrize("model_type", ["../../x", "data/llama", "llama.json", ["llama"], None])
def test_the_architecture_table_only_knows_its_own_names(model_type):
    with pytest.raises(VadasmError, match="unsupported architecture"):
        load_spec(model_type)
    with pytest.raises(VadasmError, match="x/config.json: unsupported architecture"):
        architecture_for({"model_type": model_type}, source="x/config.json")


def test_a_family_missing_from_the_table_opens_and_the_table_refuses_it(tmp_path):
    folder = write_tiny_llama(tmp_path / "model", model_type="bert_like", num_hidden_layers="ignored")
    ck = Checkpoint.open(folder)  # blend reads such families by name hints
    with pytest.raises(VadasmError, match="unsupported architecture 'bert_like'"):
        architecture_for(ck.config, ck.keys(), source=str(folder / "config.json"))


@pytest.mark.parametrize("change, match", [
    ({"num_hidden_layers": 8}, "num_hidden_layers is 8"),
    ({"hidden_size": 48}, "hidden_size is 48"),
    ({"vocab_size": 4096}, "vocab_size is 4096"),
    ({"num_hidden_layers": "four"}, "must be a positive integer"),
])
def test_checkpoint_open_refuses_a_config_that_contradicts_the_tensors(tmp_path, change, match):
    folder = write_tiny_llama(tmp_path / "model", **change)
    with pytest.raises(VadasmError, match=match) as err:
        Checkpoint.open(folder)
    assert str(err.value).startswith(f"{folder / 'config.json'}:")


def test_a_config_with_a_repeated_key_is_refused(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    text = json.dumps(tiny_llama_config())
    (folder / "config.json").write_text(text[:-1] + ', "hidden_size": 8}')
    with pytest.raises(VadasmError, match="config.json: not valid JSON \\(key 'hidden_size' appears twice\\)"):
        Checkpoint.open(folder)


@pytest.mark.parametrize("change", [{"tie_word_embeddings": 0.5}, {"rms_norm_eps": "small"}, {"use_cache": [1]}])
def test_a_config_transformers_refuses_is_refused(change):
    refused(tiny_llama_config(**change), f"transformers refuses this config .*{next(iter(change))}")


def test_a_head_size_that_does_not_size_the_tensors_is_refused():
    head_dim = HIDDEN // tiny_llama_config()["num_attention_heads"]
    refused(tiny_llama_config(head_dim=head_dim * 2), "q_proj.weight' has shape .* transformers expect")


def test_architectures_that_are_not_class_names_are_refused():
    refused(tiny_llama_config(architectures=[1]), "architectures \\[1\\] is not a list of class names")
