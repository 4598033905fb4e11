"""`vadasm blend` and `vadasm decompose` on pico models: exactness, meta, reuse, atomic output."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from pico_models import make_text_model, perturbed_copy
from vadasm.blend import sanitize
from vadasm.errors import VadasmError

Q = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture
def pair(tmp_path):
    before = make_text_model(tmp_path / "before", "llama", seed=0)
    after = perturbed_copy(before, tmp_path / "after", scale=0.02, seed=5)
    return before, after


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_sweep_is_exact_at_the_ends_and_loads(pair, tmp_path, vadasm):
    before, after = pair
    out = tmp_path / "blends"
    vadasm("blend", "--before", before, "--after", after, "--alphas", "0,0.5,1", "--output", out, "--quiet")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["alpha_0.0", "alpha_0.5", "alpha_1.0"]
    w_after, w_before = _weights(after), _weights(before)
    one = _weights(out / "alpha_1.0")
    assert one.keys() == w_after.keys()
    assert all(torch.equal(one[k], w_after[k]) and one[k].dtype == w_after[k].dtype for k in w_after)

    u, _, vh = torch.linalg.svd(w_after[Q].double(), full_matrices=False)
    s_before = torch.linalg.svdvals(w_before[Q].double())
    zero = _weights(out / "alpha_0.0")
    torch.testing.assert_close(zero[Q].double(), (u * s_before) @ vh, rtol=0, atol=1e-5)
    assert torch.equal(zero["model.norm.weight"], w_after["model.norm.weight"])  # 1-D: copied from the after model

    meta = json.loads((out / "alpha_0.5" / "svd_blend_meta.json").read_text())
    assert meta["alpha"] == 0.5 and Q in meta["blended_keys"]
    assert meta["skipped_keys"]["model.norm.weight"] == "ndim!=2"
    assert "lm_head.weight" in meta["blended_keys"]  # every 2-D weight by default, as in the seed
    assert meta["shapes"][Q] == [32, 32]
    with safe_open(str(out / "sigma_logs.safetensors"), "pt") as f:
        torch.testing.assert_close(f.get_tensor(f"{Q}/S_before").double(), s_before, rtol=1e-5, atol=1e-5)
        assert len([k for k in f.keys() if k.endswith("/S_after")]) == len(meta["blended_keys"])
    summary = json.loads((out / "sigma_logs.json").read_text())
    assert summary[Q]["layer"] == 0 and summary[Q]["type"] == "attn_q" and summary[Q]["sigma_rel_change"] > 0

    for label in ("alpha_0.0", "alpha_0.5", "alpha_1.0"):
        assert (out / label / "generation_config.json").is_file()
        model = AutoModelForCausalLM.from_pretrained(out / label)
        logits = model(torch.tensor([[1, 5, 9]])).logits
        assert torch.isfinite(logits).all()


def test_blending_a_model_with_itself_changes_nothing(pair, tmp_path, vadasm):
    _, after = pair
    out = tmp_path / "self"
    vadasm("blend", "--before", after, "--after", after, "--alphas", "0,0.3", "--output", out, "--quiet",
           "--shard-size", "40KB")
    reference = _weights(after)
    for label in ("alpha_0.0", "alpha_0.3"):
        index = json.loads((out / label / "model.safetensors.index.json").read_text())["weight_map"]
        assert len(set(index.values())) > 1 and index.keys() == reference.keys()
        got = {}
        for shard in sorted((out / label).glob("model-*.safetensors")):
            got.update(load_file(str(shard)))
        assert all(torch.equal(got[k], reference[k]) for k in reference)
    AutoModelForCausalLM.from_pretrained(out / "alpha_0.3")


def test_rank_dtype_and_patterns(pair, tmp_path, vadasm):
    before, after = pair
    out = tmp_path / "opts"
    vadasm("blend", "--before", before, "--after", after, "--alphas", "0", "--output", out, "--quiet",
           "--rank", "2", "--dtype", "bfloat16", "--include", "*.layers.0.*", "--exclude", "re:mlp\\.")
    meta = json.loads((out / "alpha_0.0" / "svd_blend_meta.json").read_text())
    assert sorted(meta["blended_keys"]) == sorted(f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkvo")
    assert meta["rank"] == 2
    got = _weights(out / "alpha_0.0")
    assert all(t.dtype == torch.bfloat16 for t in got.values())
    assert json.loads((out / "alpha_0.0" / "config.json").read_text())["dtype"] == "bfloat16"
    w_after = _weights(after)
    u, s_after, vh = torch.linalg.svd(w_after[Q].double())
    core = torch.diagonal(u.T @ got[Q].double() @ vh.T)  # the output's spectrum in the after model's basis
    s_before = torch.linalg.svdvals(_weights(before)[Q].double())
    torch.testing.assert_close(core[:2], s_before[:2], rtol=1e-2, atol=1e-2)  # bf16 output
    torch.testing.assert_close(core[2:], s_after[2:], rtol=1e-2, atol=1e-2)
    AutoModelForCausalLM.from_pretrained(out / "alpha_0.0")


def test_meta_lists_every_skip_reason(pair, tmp_path, vadasm):
    before, after = pair
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    config = json.loads((before / "config.json").read_text())
    config["vocab_size"] += 8  # a larger vocabulary, consistently in config and tensors: a shape mismatch
    (crafted / "config.json").write_text(json.dumps(config))
    weights = _weights(before)
    del weights["model.layers.1.mlp.up_proj.weight"]
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in weights:
            weights[name] = torch.zeros(config["vocab_size"], weights[name].shape[1])
    save_file(weights, str(crafted / "model.safetensors"))

    decomposition = tmp_path / "svd"
    vadasm("decompose", after, "--output", decomposition, "--quiet")
    down = "model.layers.0.mlp.down_proj.weight"
    file = decomposition / f"{sanitize(down)}.safetensors"
    parts = load_file(str(file))
    save_file({"U": parts["U"][:, :5].contiguous(), "S": parts["S"][:5].contiguous(),
               "Vh": parts["Vh"][:5].contiguous(), "orig_shape": parts["orig_shape"]}, str(file))

    out = tmp_path / "out"
    vadasm("blend", "--before", crafted, "--after", after, "--alphas", "0.5", "--output", out, "--quiet",
           "--from-decomposition", decomposition)
    skipped = json.loads((out / "alpha_0.5" / "svd_blend_meta.json").read_text())["skipped_keys"]
    assert skipped["model.layers.1.mlp.up_proj.weight"] == "missing_in_before"
    assert skipped["model.layers.0.input_layernorm.weight"] == "ndim!=2"
    assert skipped["model.embed_tokens.weight"] == "shape_mismatch"
    assert skipped[down] == "sigma_mismatch"
    got, w_after = _weights(out / "alpha_0.5"), _weights(after)
    assert all(torch.equal(got[k], w_after[k]) for k in skipped)


def test_decompose_reconstructs_and_is_reused(pair, tmp_path, vadasm):
    before, after = pair
    decomposition = tmp_path / "svd"
    vadasm("decompose", after, "--output", decomposition, "--quiet")
    manifest = json.loads((decomposition / "decomposition.json").read_text())
    w_after = _weights(after)
    assert (decomposition / "model__layers__0__self_attn__q_proj__weight.safetensors").is_file()
    assert "lm_head.weight" not in manifest["tensors"] and "model.norm.weight" not in manifest["tensors"]
    for name, entry in manifest["tensors"].items():
        parts = load_file(str(decomposition / entry["file"]))
        assert parts["orig_shape"].tolist() == list(w_after[name].shape)
        torch.testing.assert_close((parts["U"] * parts["S"]) @ parts["Vh"], w_after[name], rtol=1e-5, atol=1e-5)

    fresh, reused = tmp_path / "fresh", tmp_path / "reused"
    vadasm("blend", "--before", before, "--after", after, "--alphas", "0,0.4", "--output", fresh, "--quiet")
    result = vadasm("blend", "--before", before, "--after", after, "--alphas", "0,0.4", "--output", reused,
                    "--from-decomposition", decomposition, "--json")
    assert json.loads(result.stdout)["reused_decompositions"] == len(manifest["tensors"])
    for label in ("alpha_0.0", "alpha_0.4"):
        a, b = _weights(fresh / label), _weights(reused / label)
        assert all(torch.equal(a[k], b[k]) for k in a)

    with pytest.raises(VadasmError, match="decomposition of the before model"):
        other = tmp_path / "before-svd"
        vadasm("decompose", before, "--output", other, "--quiet")
        vadasm("blend", "--before", before, "--after", after, "--output", tmp_path / "x", "--from-decomposition", other)


def test_existing_output_is_kept_and_a_failure_leaves_nothing(pair, tmp_path, vadasm, monkeypatch):
    before, after = pair
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(VadasmError, match="already exists"):
        vadasm("blend", "--before", before, "--after", after, "--output", out, "--quiet")
    assert list(out.iterdir()) == []

    import vadasm.blend.sweep as sweep

    original, calls = sweep.sigma_shift, []

    def failing(*args, **kwargs):  # crash on the fourth weight, after three were written
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(sweep, "sigma_shift", failing)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="simulated crash"):
        vadasm("blend", "--before", before, "--after", after, "--output", fresh, "--quiet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after", "before", "out"]


def test_bad_inputs_are_one_line_errors(pair, tmp_path, vadasm):
    before, after = pair
    with pytest.raises(VadasmError, match="not found"):
        vadasm("blend", "--before", tmp_path / "nope", "--after", after, "--output", tmp_path / "o")
    with pytest.raises(VadasmError, match="alphas"):
        vadasm("blend", "--before", before, "--after", after, "--alphas", "0,x", "--output", tmp_path / "o")
    with pytest.raises(VadasmError, match="repeated alpha"):
        vadasm("blend", "--before", before, "--after", after, "--alphas", "0.5,0.5", "--output", tmp_path / "o")
    assert not (tmp_path / "o").exists()
