import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from pico_models import SPECIAL_TOKENS, VOCAB, make_text_recipient
from vadasm.errors import VadasmError
from vadasm.tokensurgeon import SurgeryOptions, token_surgery

WORDS = [f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS))]
# The donor shares 72 words (in another order) and brings 20 words MODEL lacks.
DONOR_WORDS = [f"n{i}" for i in range(10)] + WORDS[20:][::-1] + [f"n{i}" for i in range(10, 20)]
QUIET = dict(progress=False)


def _weights(folder):
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.fixture
def untied_pair(tmp_path):
    """A llama MODEL (width 32, separate LM head) and a wider gemma3 DONOR (width 40, tied)."""
    model = make_text_recipient(tmp_path / "model", "llama", words=WORDS)
    donor = make_text_recipient(tmp_path / "donor", "gemma3_text", seed=1, words=DONOR_WORDS, hidden_size=40,
                                vocab_size=VOCAB + 4, eos_token_id=3)
    return model, donor


@pytest.mark.parametrize("method", ["omp", "lstsq", "procrustes"])
def test_surgered_model_speaks_the_donor_vocabulary_with_model_rows_for_shared_tokens(untied_pair, tmp_path, method):
    model, donor = untied_pair
    out = tmp_path / "out"
    result = token_surgery(model, donor, out, SurgeryOptions(method=method, k=16, **QUIET))
    assert (result.vocab_rows, result.shared_tokens, result.predicted_tokens) == (VOCAB + 4, 76, 20)
    assert result.zero_rows == 4 and not result.tied_embeddings
    before, after = _weights(model), _weights(out)
    assert after["model.embed_tokens.weight"].shape == (VOCAB + 4, 32)
    assert set(after) == set(before)
    m_tok, o_tok = AutoTokenizer.from_pretrained(model), AutoTokenizer.from_pretrained(out)
    assert o_tok.get_vocab() == AutoTokenizer.from_pretrained(donor).get_vocab()
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        for word in ("w20", "w57", "w91"):
            assert torch.equal(after[name][o_tok.convert_tokens_to_ids(word)],
                               before[name][m_tok.convert_tokens_to_ids(word)])
        assert torch.equal(after[name][o_tok.pad_token_id], before[name][m_tok.pad_token_id])  # by role
        new = after[name][[o_tok.convert_tokens_to_ids(f"n{i}") for i in range(20)]]
        assert torch.isfinite(new).all() and new.norm(dim=1).min() > 0
        assert after[name][VOCAB:].abs().sum() == 0  # rows with no token
    for name in before:
        if name not in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(after[name], before[name])
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == VOCAB + 4 and config["eos_token_id"] == 3 and config["hidden_size"] == 32
    lm = AutoModelForCausalLM.from_pretrained(out)
    ids = o_tok("n3 w40 n17 w91", return_tensors="pt").input_ids
    assert lm(ids).logits.shape == (1, ids.shape[1], VOCAB + 4)
    provenance = json.loads((out / "vadasm_config.json").read_text())
    assert provenance["kind"] == "tokensurgeon" and provenance["options"]["method"] == method


def test_tied_model_stays_tied_and_only_its_embedding_is_rebuilt(tmp_path):
    model = make_text_recipient(tmp_path / "model", "gemma3_text", words=WORDS)
    donor = make_text_recipient(tmp_path / "donor", "llama", seed=1, words=DONOR_WORDS)
    out = tmp_path / "out"
    result = token_surgery(model, donor, out, SurgeryOptions(method="lstsq", **QUIET))
    assert result.tied_embeddings and result.rebuilt == ["model.embed_tokens.weight"]
    assert "lm_head.weight" not in _weights(out)
    lm = AutoModelForCausalLM.from_pretrained(out)
    assert lm.lm_head.weight.data_ptr() == lm.model.embed_tokens.weight.data_ptr()


def test_omp_needs_k_shared_tokens_and_nothing_is_written(untied_pair, tmp_path):
    model, donor = untied_pair
    with pytest.raises(VadasmError, match="only 76 tokens shared .* needs at least 100"):
        token_surgery(model, donor, tmp_path / "out", SurgeryOptions(k=100, **QUIET))
    assert not (tmp_path / "out").exists()


def test_vision_language_models_are_refused(untied_pair, tmp_path):
    from pico_models import make_llava_donor

    llava = make_llava_donor(tmp_path / "llava")
    with pytest.raises(VadasmError, match="token surgery takes text-only models"):
        token_surgery(llava, untied_pair[1], tmp_path / "out", SurgeryOptions(**QUIET))
    assert not (tmp_path / "out").exists()


def _cli(*args):
    from vadasm.cli import _register_subcommands, app

    _register_subcommands()
    return CliRunner().invoke(app, ["tokensurgeon", *map(str, args)], standalone_mode=False)


def test_cli_writes_and_reports(untied_pair, tmp_path):
    model, donor = untied_pair
    run = _cli(model, donor, tmp_path / "out", "--method", "procrustes", "--json")
    assert run.exit_code == 0, run.output
    assert json.loads(run.output)["predicted_tokens"] == 20


def test_bad_inputs_are_refused_in_one_line(untied_pair, tmp_path):
    from fuzz_cases import run_cli

    model, donor = untied_pair
    (tmp_path / "bare").mkdir()
    for f in ("config.json", "model.safetensors"):
        (tmp_path / "bare" / f).write_bytes((model / f).read_bytes())
    cases = [([model, donor, model / "sub"], "lies inside the input"),
             ([model, donor, tmp_path / "o", "--method", "mean"], "unknown token surgery method 'mean'"),
             ([model, donor, tmp_path / "o", "-k", "0"], "must be at least 1"),
             ([model, tmp_path / "bare", tmp_path / "o"], "needs the model's tokenizer files"),
             ([model, tmp_path / "missing", tmp_path / "o"], "missing")]
    for args, message in cases:
        run = run_cli(["tokensurgeon", *map(str, args)])
        assert run.code == 2 and run.traceback is None, (args, run)
        assert run.stderr.startswith("error: ") and message in run.stderr and run.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists() and not (model / "sub").exists()
