import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from pico_models import make_text_model, perturbed_copy
from vadasm.arch import architecture_for
from vadasm.io import Checkpoint
from vadasm.moe import aggregate_experts, dense_into_moe, moe_into_dense, router_usage, top_k_experts
from vadasm.moe.convert import EXPERT_ROLES

IDS = [torch.randint(3, 96, (1, 24), generator=torch.Generator().manual_seed(i)) for i in range(3)]
# dense partner of each tiny MoE: same widths as its experts
DENSE = {"mixtral": ("mistral", {}), "qwen2_moe": ("qwen2", {"intermediate_size": 24}),
         "qwen3_moe": ("qwen3", {"intermediate_size": 24})}
# mixtral's defaults differ from mistral's in rope theta and norm epsilon
SAME_AS_MISTRAL = dict(rms_norm_eps=1e-6, rope_parameters={"rope_theta": 10000.0, "rope_type": "default"})


def upcycle(dense_dir, moe_dir, out_dir):
    """A MoE whose experts are all copies of the dense MLP and whose other tensors are the dense ones
    (sparse upcycling); router and shared expert stay as in `moe_dir`."""
    dense = load_file(dense_dir / "model.safetensors")
    moe = load_file(moe_dir / "model.safetensors")
    ck = Checkpoint.open(moe_dir)
    arch = architecture_for(ck.config, ck.keys())
    dense_names = {(int(n.split(".")[2]), n.split(".")[-2]): n for n in dense if ".mlp." in n}
    for name in moe:
        role = arch.role(name)
        if role.role in EXPERT_ROLES:
            moe[name] = dense[dense_names[role.layer, EXPERT_ROLES[role.role].replace("mlp_", "") + "_proj"]].clone()
        elif name in dense:
            moe[name] = dense[name].clone()
    out_dir.mkdir()
    save_file(moe, out_dir / "model.safetensors", metadata={"format": "pt"})
    (out_dir / "config.json").write_text((moe_dir / "config.json").read_text())
    return out_dir


def logits(folder):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=IDS[0]).logits


def test_aggregating_identical_experts_gives_that_expert():
    expert = torch.randn(48, 32, generator=torch.Generator().manual_seed(0))
    for method in ("norm_avg", "uniform"):
        torch.testing.assert_close(aggregate_experts([expert] * 4, method), expert)
        torch.testing.assert_close(aggregate_experts([expert] * 4, method, [0.1, 0.5, 0.0, 0.4]), expert)


def test_norm_avg_keeps_the_experts_norm_and_uniform_shrinks():
    gen = torch.Generator().manual_seed(1)
    experts = [torch.randn(40, 30, generator=gen) for _ in range(4)]
    mean_norm = sum(float(e.norm()) for e in experts) / 4
    assert float(aggregate_experts(experts, "norm_avg").norm()) == pytest.approx(mean_norm, rel=1e-5)
    assert float(aggregate_experts(experts, "uniform").norm()) < 0.6 * mean_norm
    assert top_k_experts([0.1, 0.4, 0.2, 0.3], 2) == [1, 3]


def test_dense_delta_into_upcycled_mixtral_gives_the_tuned_dense_function(tmp_path):
    base = make_text_model(tmp_path / "base", "mistral")
    tuned = perturbed_copy(base, tmp_path / "tuned", scale=0.05)
    moe = upcycle(base, make_text_model(tmp_path / "moe_random", "mixtral", **SAME_AS_MISTRAL), tmp_path / "moe")
    torch.testing.assert_close(logits(moe), logits(base), atol=1e-5, rtol=1e-4)  # upcycling is exact
    result = dense_into_moe(moe, base, tuned, tmp_path / "out", progress=False)
    torch.testing.assert_close(logits(tmp_path / "out"), logits(tuned), atol=1e-5, rtol=1e-4)
    assert [k["reason"].split(":")[0] for k in result.kept] == ["router", "router"]
    saved = json.loads((tmp_path / "out/vadasm_config.json").read_text())
    assert saved["kind"] == "dense_to_moe" and saved["result"]["changed"] == result.changed


def test_experts_aggregated_back_into_the_dense_model(tmp_path):
    base = make_text_model(tmp_path / "base", "mistral")
    tuned = perturbed_copy(base, tmp_path / "tuned", scale=0.05)
    moe = upcycle(tuned, make_text_model(tmp_path / "moe_random", "mixtral", **SAME_AS_MISTRAL), tmp_path / "moe")
    for method in ("norm_avg", "uniform"):
        moe_into_dense(base, moe, tmp_path / method, method=method, top_k=2, input_ids=IDS, progress=False)
        out, expected = load_file(tmp_path / method / "model.safetensors"), load_file(tuned / "model.safetensors")
        for name in expected:
            torch.testing.assert_close(out[name], expected[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("moe_type", sorted(DENSE))
def test_each_moe_family_round_trips_with_explicit_router_and_shared_expert_handling(tmp_path, moe_type):
    dense_type, overrides = DENSE[moe_type]
    base = make_text_model(tmp_path / "base", dense_type, **overrides)
    tuned = perturbed_copy(base, tmp_path / "tuned", scale=0.05)
    moe = make_text_model(tmp_path / "moe", moe_type)
    arch = architecture_for(Checkpoint.open(moe).config)
    usage = router_usage(moe, arch, IDS)
    assert sorted(usage) == [0, 1] and all(len(u) == 4 and sum(u) == pytest.approx(1.0) for u in usage.values())

    into = dense_into_moe(moe, base, tuned, tmp_path / "into", scale="usage", input_ids=IDS, progress=False)
    reasons = {k["tensor"].split(".", 3)[-1]: k["reason"] for k in into.kept}
    assert any(r.startswith("router") for r in reasons.values())
    if moe_type == "qwen2_moe":  # shared expert is 40 wide, the dense MLP 24: reported, not forced
        assert any("shared_expert.up_proj" in k and "differs" in r for k, r in reasons.items())
    assert set(into.layers[0]["scales"]) >= {"expert_gate.0", "expert_down.3"}
    out = load_file(tmp_path / "into/model.safetensors")
    original = load_file(moe / "model.safetensors")
    assert out.keys() == original.keys() and any(not torch.equal(out[k], original[k]) for k in out)
    logits(tmp_path / "into")  # loads and runs with the stock class

    back = moe_into_dense(base, moe, tmp_path / "back", top_k=2, usage_weighted=True, input_ids=IDS,
                          progress=False)
    assert all(len(layer["experts"]) == 2 for layer in back.layers.values())
    assert any("router" in d["reason"] for d in back.dropped)
    if moe_type == "qwen2_moe":
        assert any("shared_expert" in d["tensor"] for d in back.dropped)
    logits(tmp_path / "back")


def test_cli_into_moe_and_into_dense(tmp_path):
    from typer.testing import CliRunner

    from vadasm.cli import _register_subcommands, app

    _register_subcommands()
    base = make_text_model(tmp_path / "base", "mistral")
    tuned = perturbed_copy(base, tmp_path / "tuned", scale=0.05)
    moe = make_text_model(tmp_path / "moe", "mixtral")
    runner = CliRunner()
    out = runner.invoke(app, ["moe", "into-moe", str(moe), str(base), str(tuned), str(tmp_path / "a"),
                              "--scale", "norm", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["settings"]["scale"] == "norm"
    out = runner.invoke(app, ["moe", "into-dense", str(base), str(moe), str(tmp_path / "b"), "--method", "uniform"])
    assert out.exit_code == 0, out.output
    assert "dropped:" in out.output and "router" in out.output


def test_usage_text_measures_router_usage_on_the_users_inputs(tmp_path):
    from typer.testing import CliRunner

    from eval.tiny_vlm import make_tokenizer
    from vadasm.align.activations import file_token_ids
    from vadasm.cli import _register_subcommands, app

    _register_subcommands()
    base = make_text_model(tmp_path / "base", "mistral")
    moe = make_text_model(tmp_path / "moe", "mixtral", num_local_experts=4)
    make_tokenizer().save_pretrained(moe)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("what color is the shape ?\n\nis there a red circle in the image ?\n")
    ids = file_token_ids(moe, prompts)
    assert len(ids) == 2  # one batch per non-empty line
    checkpoint = Checkpoint.open(moe)
    expected = router_usage(moe, architecture_for(checkpoint.config, checkpoint.keys()), ids)
    out = CliRunner().invoke(app, ["moe", "into-dense", str(base), str(moe), str(tmp_path / "b"), "--top-k", "1",
                                   "--usage-text", str(prompts), "--json"])
    assert out.exit_code == 0, out.output
    layers = json.loads(out.stdout)["layers"]
    for layer, usage in expected.items():
        assert layers[str(layer)]["usage"] == pytest.approx(usage)
        assert layers[str(layer)]["experts"] == top_k_experts(usage, 1)
    missing = subprocess.run([sys.executable, "-m", "vadasm", "moe", "into-dense", str(base), str(moe),
                              str(tmp_path / "c"), "--top-k", "1", "--usage-text", str(tmp_path / "nope.txt")],
                             capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.txt'}: input text file not found"]
    assert not (tmp_path / "c").exists()
