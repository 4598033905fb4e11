"""What a merge writes besides weights: chat template, mergekit_config.yml, README.md front matter."""

import json
import subprocess
import sys

import pytest
import yaml
from transformers import AutoTokenizer

from pico_models import make_text_model, make_word_tokenizer
from vadasm.errors import VadasmError
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge

QUIET = MergeOptions(progress=False)
WORDS = ["hello", "world"]
ONE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
TWO = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}"
CHAT = [{"role": "user", "content": "hello"}]


def _model(folder, seed, template=None, license_=None, name_or_path=None):
    make_text_model(folder, "llama", seed=seed)
    make_word_tokenizer(folder, WORDS, template)
    if license_:
        (folder / "README.md").write_text(f"---\nlicense: {license_}\n---\n# a model\n")
    if name_or_path:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "_name_or_path": name_or_path}))
    return folder


def _linear(*models, **extra):
    return recipe_from_dict({"merge_method": "linear", **extra, "models": [{"model": str(m)} for m in models]})


@pytest.mark.parametrize("setting, expected", [
    ("chatml", "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"),
    (ONE, "<user>hello"),
])
def test_a_named_or_literal_chat_template_is_written_for_transformers(tmp_path, setting, expected):
    a, b = _model(tmp_path / "a", 0, TWO), _model(tmp_path / "b", 1)
    run_merge(_linear(a, b, chat_template=setting), tmp_path / "out", QUIET)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert (tmp_path / "out/chat_template.jinja").is_file()
    assert tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=setting == "chatml") == expected


def test_auto_takes_the_most_common_template_of_the_inputs(tmp_path):
    models = [_model(tmp_path / "a", 0, TWO), _model(tmp_path / "b", 1, ONE), _model(tmp_path / "c", 2, ONE)]
    run_merge(_linear(*models, chat_template="auto", tokenizer_source="union"), tmp_path / "out", QUIET)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer.apply_chat_template(CHAT, tokenize=False) == "<user>hello"


@pytest.mark.parametrize("setting, message", [
    ("chatmll", r"chat_template 'chatmll' is neither 'auto', a template name \(alpaca, chatml"),
])
def test_a_bad_chat_template_is_refused_and_nothing_written(tmp_path, setting, message):
    a, b = _model(tmp_path / "a", 0), _model(tmp_path / "b", 1)
    with pytest.raises(VadasmError, match=message):
        run_merge(_linear(a, b, chat_template=setting), tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()


def test_a_chat_template_without_any_tokenizer_is_refused(tmp_path):
    a, b = make_text_model(tmp_path / "a", "llama"), make_text_model(tmp_path / "b", "llama", seed=1)
    with pytest.raises(VadasmError, match="a: no usable tokenizer"):
        run_merge(_linear(a, b, chat_template="chatml"), tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()


def test_mergekit_config_is_the_recipe_as_run(tmp_path):
    a, b = _model(tmp_path / "a", 0), _model(tmp_path / "b", 1)
    recipe = recipe_from_dict({"merge_method": "passthrough", "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 2]}]},
        {"sources": [{"model": str(b), "layer_range": [1, 2], "parameters": {"scale": 0.5}}]}]})
    run_merge(recipe, tmp_path / "out", QUIET)
    text = (tmp_path / "out/mergekit_config.yml").read_text()
    assert "layer_range: [0, 2]" in text and "seed" not in text  # mergekit's flow lists; vadasm defaults left out
    written = yaml.safe_load(text)
    assert written["merge_method"] == "passthrough" and written["slices"][1]["sources"][0]["parameters"] == {
        "scale": 0.5}
    assert recipe_from_dict(written) == recipe


def test_card_front_matter_names_repo_ids_and_the_shared_licence_never_local_paths(tmp_path):
    a = _model(tmp_path / "a", 0, license_="apache-2.0", name_or_path="org/model-a")
    b = _model(tmp_path / "b", 1, license_="apache-2.0", name_or_path=str(tmp_path / "b"))
    run_merge(_linear(a, b), tmp_path / "out", QUIET)
    card = (tmp_path / "out/README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == ["org/model-a"] and front["base_model_relation"] == "merge"
    assert front["license"] == "apache-2.0" and front["tags"] == ["merge", "vadasm"]
    assert front["library_name"] == "transformers"
    assert str(tmp_path) not in card.split("---")[1]
    assert "# out\n" in card and f'from_pretrained("{tmp_path / "out"}")' in card  # the final folder, not the temp


def test_card_front_matter_leaves_out_a_licence_the_inputs_disagree_on(tmp_path):
    a = _model(tmp_path / "a", 0, license_="apache-2.0")
    b = _model(tmp_path / "b", 1, license_="mit")
    run_merge(_linear(a, b), tmp_path / "out", QUIET)
    front = yaml.safe_load((tmp_path / "out/README.md").read_text().split("---")[1])
    assert "license" not in front and "base_model" not in front


def test_the_cli_runs_a_mergekit_recipe_file_with_these_features_and_refuses_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from vadasm.cli import _register_subcommands, app

    a, b = _model(tmp_path / "a", 0, ONE), _model(tmp_path / "b", 1)
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(f"""
merge_method: passthrough
slices:
  - sources:
      - model: {a}
        layer_range: [0, 2]
  - sources:
      - model: {b}
        layer_range: [1, 2]
        parameters:
          scale: 0.5
tokenizer:
  source: union
  pad_to_multiple_of: 8
chat_template: auto
""")
    _register_subcommands()
    done = CliRunner().invoke(app, ["merge", str(recipe), str(tmp_path / "out"), "--quiet"])
    assert done.exit_code == 0, done.output
    config = json.loads((tmp_path / "out/config.json").read_text())
    assert config["num_hidden_layers"] == 3 and config["vocab_size"] == 8
    assert AutoTokenizer.from_pretrained(tmp_path / "out").apply_chat_template(CHAT, tokenize=False) == "<user>hello"
    recipe.write_text(recipe.read_text().replace("[1, 2]", "[1, 9]"))
    refused = subprocess.run([sys.executable, "-m", "vadasm", "merge", str(recipe), str(tmp_path / "out2")],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "[1, 9] is outside" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "out2").exists()
