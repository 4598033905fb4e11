import json

import torch
from safetensors.torch import load_file
from test_alignment import _permuted_copy
from typer.testing import CliRunner

from pico_models import make_text_model, perturbed_copy
from vadasm.cli import _register_subcommands, app
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge


def _task_arithmetic(base, *models):
    return recipe_from_dict({"merge_method": "task_arithmetic", "base_model": str(base),
                             "models": [{"model": str(m), "parameters": {"weight": 0.5}} for m in models]})


def test_align_flag_undoes_a_permutation_before_merging(tmp_path):
    base = make_text_model(tmp_path / "base", "qwen2")
    tuned = perturbed_copy(base, tmp_path / "ft", scale=0.02)
    shuffled, _ = _permuted_copy(tuned, tmp_path / "ft_shuffled", seed=5)
    run_merge(_task_arithmetic(base, tuned), tmp_path / "plain", MergeOptions(progress=False))
    run_merge(_task_arithmetic(base, shuffled), tmp_path / "naive", MergeOptions(progress=False))
    result = run_merge(_task_arithmetic(base, shuffled), tmp_path / "aligned",
                       MergeOptions(progress=False, align="weights"))
    plain, naive, aligned = (load_file(tmp_path / f / "model.safetensors") for f in ("plain", "naive", "aligned"))
    assert all(torch.allclose(aligned[n], plain[n], atol=1e-6) for n in plain)
    assert any(not torch.allclose(naive[n], plain[n], atol=1e-3) for n in plain)
    (report,) = result.alignment
    assert report["summary"]["moved_fraction"] > 0.5
    saved = json.loads((tmp_path / "aligned/vadasm_config.json").read_text())
    assert saved["alignment"][0]["summary"]["distance_after"] < saved["alignment"][0]["summary"]["distance_before"]


def test_cli_align_and_merge_flag(tmp_path):
    _register_subcommands()
    base = make_text_model(tmp_path / "base", "llama")
    tuned = perturbed_copy(base, tmp_path / "ft", scale=0.02)
    shuffled, _ = _permuted_copy(tuned, tmp_path / "shuf", seed=2)
    runner = CliRunner()
    out = runner.invoke(app, ["align", str(shuffled), str(base), str(tmp_path / "al"), "--json", "--quiet"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["summary"]["moved_fraction"] > 0.5
    assert all(torch.equal(a, b) for a, b in zip(load_file(tmp_path / "al/model.safetensors").values(),
                                                 load_file(tuned / "model.safetensors").values()))
    out = runner.invoke(app, ["merge", str(tmp_path / "m"), "--method", "task_arithmetic", "--base", str(base),
                              "--model", str(shuffled), "--align", "weights"])
    assert out.exit_code == 0, out.output
    assert "of units moved" in out.output
