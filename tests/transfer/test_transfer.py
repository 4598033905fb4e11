import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from pico_models import SPECIAL_TOKENS, VOCAB, make_text_recipient
from vadasm.errors import VadasmError
from vadasm.transfer import MlpWeights, TransferOptions, language_transfer, layer_pairs, mlp_transfer, verdict

WORDS = [f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS))]
QUIET = TransferOptions(progress=False)


@pytest.fixture
def pair(tmp_path):
    """A llama recipient (width 32) and a wider, deeper gemma3 donor (width 40) whose vocabulary
    holds the same words in another order."""
    recipient = make_text_recipient(tmp_path / "recipient", "llama", words=WORDS)
    donor = make_text_recipient(tmp_path / "donor", "gemma3_text", seed=1, words=WORDS[::-1], hidden_size=40,
                                intermediate_size=64, num_hidden_layers=3)
    return recipient, donor


def test_layer_pairs_follow_relative_depth():
    assert layer_pairs(30, 18) == [round(i * 17 / 29) for i in range(30)]
    assert layer_pairs(3, 3) == [0, 1, 2]


def test_transfer_between_identical_coordinates_recovers_the_neuron_matching():
    gen = torch.Generator().manual_seed(0)
    mlp = MlpWeights(torch.randn(24, 16, generator=gen), torch.randn(24, 16, generator=gen),
                     torch.randn(16, 24, generator=gen), torch.ones(16))
    perm = torch.randperm(24, generator=gen)
    donor = MlpWeights(mlp.gate[perm], mlp.up[perm], mlp.down[:, perm], torch.ones(16))
    eye = torch.eye(16)
    moved = mlp_transfer(mlp, donor, None, eye, eye)
    assert torch.equal(perm[moved.matching], torch.arange(24))
    assert moved.matched_cosine == pytest.approx(1.0) and moved.null_cosine < 0.8
    assert moved.delta_gate.abs().max() < 1e-5 and moved.delta_down.abs().max() < 1e-5


def test_language_transfer_writes_recipient_shapes_and_logs_its_controls(tmp_path, pair):
    recipient, donor = pair
    result = language_transfer(recipient, donor, tmp_path / "out", options=QUIET)
    original = load_file(recipient / "model.safetensors")
    out = load_file(tmp_path / "out/model.safetensors")
    control = load_file(tmp_path / "out-control-random/model.safetensors")
    assert out.keys() == original.keys() == control.keys()
    changed = [n for n in original if not torch.equal(out[n], original[n])]
    assert changed and all(".mlp." in n for n in changed)
    for name in original:
        assert out[name].shape == original[name].shape == control[name].shape
        moved, noise = (out[name] - original[name]).norm(), (control[name] - original[name]).norm()
        assert float(noise) == pytest.approx(float(moved), rel=1e-4, abs=1e-6)
    assert result.mode == "difference" and len(result.layers) == 2
    assert {layer["donor_layer"] for layer in result.layers} == {0, 2}
    logged = json.loads((tmp_path / "out/vadasm_config.json").read_text())
    controls = logged["result"]["controls"]
    assert set(controls) == {"zero_delta", "random_delta"}
    assert controls["random_delta"]["control_norm"] == pytest.approx(controls["random_delta"]["delta_norm"])
    assert logged["experimental"] and logged["result"]["verdict"].startswith("not scored")
    assert logged["result"]["maps"]["anchors"] == len(WORDS)


def test_task_vector_mode_with_the_donor_as_its_own_base_changes_nothing(tmp_path, pair):
    recipient, donor = pair
    result = language_transfer(recipient, donor, tmp_path / "out", donor_base_ref=donor, options=QUIET)
    assert result.mode == "task_vector"
    original, out = load_file(recipient / "model.safetensors"), load_file(tmp_path / "out/model.safetensors")
    assert all(torch.equal(out[n], original[n]) for n in original)


def test_same_shapes_are_refused(tmp_path, pair):
    recipient, _ = pair
    with pytest.raises(VadasmError, match="same shapes"):
        language_transfer(recipient, recipient, tmp_path / "out", options=QUIET)
    assert not (tmp_path / "out").exists()


def test_verdict_needs_both_controls_beaten():
    scores = [{"arm": a, "task": "arith", "metric": "accuracy", "value": v}
              for a, v in (("zero_delta", 0.30), ("transfer", 0.32), ("random_delta", 0.10))]
    scores += [{"arm": a, "task": "perplexity", "metric": "perplexity", "value": v}
               for a, v in (("zero_delta", 20.0), ("transfer", 21.0), ("random_delta", 25.0))]
    assert verdict(scores).startswith("does not help")
    assert verdict(scores[:3]).startswith("helps")


def test_cli_is_off_by_default(tmp_path, pair):
    from vadasm.cli import _register_subcommands, app

    _register_subcommands()
    recipient, donor = pair
    runner = CliRunner()
    out = runner.invoke(app, ["transfer", str(recipient), str(donor), str(tmp_path / "out")])
    assert out.exit_code != 0 and not (tmp_path / "out").exists()
    out = runner.invoke(app, ["transfer", str(recipient), str(donor), str(tmp_path / "out"), "--language-transfer",
                              "--tasks", "", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["controls"]["random_delta"]["model"].endswith("out-control-random")
