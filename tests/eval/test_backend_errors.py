"""A model that transformers cannot load (or that our reader refuses) is one line and exit 2 in eval."""

from __future__ import annotations

import json

import pytest

from fuzz_cases import make_models, run_cli


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("eval-models"))


@pytest.mark.parametrize("defect, message", [
    ("no_tokenizer", "transformers cannot load the tokenizer"),
    ("corrupt_tokenizer", "tokenizer.json: not valid JSON"),
    ("config_lies", "config.json: num_hidden_layers is 8 but the weights hold 2 layers"),
])
def test_unloadable_models_are_one_line_in_eval(models, tmp_path, defect, message):
    import shutil

    model = shutil.copytree(models["base"], tmp_path / "model")
    if defect == "corrupt_tokenizer":
        (model / "tokenizer.json").write_text("{bad")
    if defect == "config_lies":
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 8}))
    outcome = run_cli(["eval", "-m", str(model), "--tasks", "arith", "--limit", "1"])
    lines = outcome.stderr.strip().splitlines()
    assert outcome.code == 2 and outcome.traceback is None, outcome.traceback
    assert len(lines) == 1 and lines[0].startswith(f"error: {model}") and message in lines[0], outcome.stderr
