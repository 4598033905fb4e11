"""The blend's default matches the seed (every 2-D weight, embeddings and LM head included);
--exclude-embeddings interpolates those linearly; two runs give byte-identical folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pico_models import make_text_model, perturbed_copy

EMBEDDINGS = ("model.embed_tokens.weight", "lm_head.weight")
FP32_EPS = torch.finfo(torch.float32).eps


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def respectral_copy(before: Path, dst: Path) -> Path:
    """An 'after' model that keeps every 2-D weight's singular vectors and changes only its spectrum
    (order kept: the larger a singular value, the more it grows); other tensors are left as they are."""
    shutil.copytree(before, dst)
    changed = {}
    for name, w in _weights(before).items():
        if w.ndim == 2:
            u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
            gain = 1.3 - 0.6 * torch.linspace(0, 1, len(s), dtype=torch.float64)
            w = ((u * (s * gain)) @ vh).float()
        changed[name] = w.contiguous()
    save_file(changed, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Built once for the module: a pico Llama, a noisy fine-tune of it, and a spectrum-only change of it."""
    root = tmp_path_factory.mktemp("models")
    before = make_text_model(root / "before", "llama", seed=0)
    return {"before": before, "after": perturbed_copy(before, root / "after", scale=0.02, seed=5),
            "respectral": respectral_copy(before, root / "respectral")}


def test_alpha_zero_is_the_before_model_where_singular_vectors_are_shared(tmp_path, vadasm, models):
    before, after = models["before"], models["respectral"]
    out = tmp_path / "out"
    vadasm("blend", "--before", before, "--after", after, "--alphas", "0,1", "--output", out, "--quiet")
    w_before, w_after, zero = _weights(before), _weights(after), _weights(out / "alpha_0.0")
    assert zero.keys() == w_before.keys()
    for name, want in w_before.items():
        if want.ndim != 2:
            assert torch.equal(zero[name], want)  # equal in both models, copied
            continue
        error = (zero[name] - want).abs().max().item()
        # fp32 rounding of U diag(S_before) Vh: a few ulps of the weight, far below the change itself
        assert error <= 16 * FP32_EPS * want.abs().max().item(), name
        assert error < 1e-3 * (w_after[name] - want).abs().max().item(), name
    one = _weights(out / "alpha_1.0")
    assert all(torch.equal(one[k], w_after[k]) for k in w_after)


def test_default_blend_gives_every_2d_weight_the_before_spectrum(tmp_path, vadasm, models):
    before, after = models["before"], models["after"]
    out = tmp_path / "out"
    vadasm("blend", "--before", before, "--after", after, "--alphas", "0", "--output", out, "--quiet")
    w_before, w_after, zero = _weights(before), _weights(after), _weights(out / "alpha_0.0")
    meta = json.loads((out / "alpha_0.0" / "svd_blend_meta.json").read_text())
    matrices = sorted(k for k, w in w_after.items() if w.ndim == 2)
    assert sorted(meta["blended_keys"]) == matrices and set(EMBEDDINGS) <= set(matrices)
    assert meta["skipped_keys"] == {k: "ndim!=2" for k, w in w_after.items() if w.ndim != 2}
    assert meta["alpha"] == 0.0 and meta["shapes"]["lm_head.weight"] == [96, 32]
    assert meta["include_embeddings"] is True and meta["excluded_embeddings"] is None
    for name in matrices:
        torch.testing.assert_close(torch.linalg.svdvals(zero[name].double()),
                                   torch.linalg.svdvals(w_before[name].double()), rtol=0, atol=1e-5)
    for name in meta["skipped_keys"]:
        assert torch.equal(zero[name], w_after[name])
    # The seed's formula keeps the after model's singular vectors: alpha 0 is not the before tensor here.
    assert (zero[EMBEDDINGS[0]] - w_before[EMBEDDINGS[0]]).abs().max() > 1e-3


def test_exclude_embeddings_interpolates_them_linearly(tmp_path, models):
    from typer.testing import CliRunner

    from vadasm.cli import app

    before, after = models["before"], models["after"]
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["blend", "--before", str(before), "--after", str(after), "--alphas", "0,0.3,1",
                                    "--output", str(out), "--exclude-embeddings"])
    assert done.exit_code == 0, done.output
    assert "interpolated linearly: 2 x excluded_embeddings" in done.output
    w_before, w_after = _weights(before), _weights(after)
    for name in EMBEDDINGS:
        assert torch.equal(_weights(out / "alpha_0.0")[name], w_before[name])
        assert torch.equal(_weights(out / "alpha_1.0")[name], w_after[name])
        torch.testing.assert_close(_weights(out / "alpha_0.3")[name], 0.3 * w_after[name] + 0.7 * w_before[name])
    meta = json.loads((out / "alpha_0.3" / "svd_blend_meta.json").read_text())
    assert all(meta["skipped_keys"][name] == "excluded_embeddings" for name in EMBEDDINGS)
    assert not set(EMBEDDINGS) & set(meta["blended_keys"])
    assert "model.layers.0.mlp.up_proj.weight" in meta["blended_keys"]
    assert meta["excluded_embeddings"].startswith("linear: a*W_after + (1-a)*W_before")


def test_two_blends_of_the_same_inputs_are_byte_identical(tmp_path, vadasm, models):
    before, after = models["before"], models["after"]
    runs = [tmp_path / "one", tmp_path / "two"]
    for out in runs:
        vadasm("blend", "--before", before, "--after", after, "--alphas", "0,0.5,1", "--output", out, "--quiet",
               "--shard-size", "40KB")
    files = sorted(p.relative_to(runs[0]) for p in runs[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(runs[1]) for p in runs[1].rglob("*") if p.is_file())
    assert {f.parts[0] for f in files} >= {"alpha_0.0", "alpha_0.5", "alpha_1.0", "sigma_logs.safetensors"}
    for file in files:
        assert (runs[0] / file).read_bytes() == (runs[1] / file).read_bytes(), file
    summary = json.loads((runs[0] / "blend_summary.json").read_text())
    assert "seconds" not in summary and "output" not in summary and summary["folders"]["alpha_0.5"] == "alpha_0.5"
