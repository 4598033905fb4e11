"""DeepSeek MoE output (mergekit's `DeepseekMoE`): layout, config, and a reference forward pass.

No transformers class loads model_type `deepseek` (deepseek-ai's remote code does, not available
offline), so the forward pass is written here from DeepSeek-MoE's published modeling equations
(`modeling_deepseek.py`: `MoEGate` softmax scores, top-k, renormalised when k > 1 and
`norm_topk_prob`; `DeepseekMoE` adds the ungated `shared_experts` MLP) on Llama attention.
"""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from pico_models import make_text_model, perturbed_copy
from vadasm.errors import VadasmError
from vadasm.moe.build import build_moe_from_file

IDS = torch.tensor([[1, 5, 6, 7, 8, 9, 30, 31]])


def deepseek_config(path, base, experts, shared=None, extra=""):
    lines = [f"base_model: {base}", "gate_mode: random", "seed: 5", "experts:"]
    lines += [f"  - source_model: {e}" for e in experts]
    if shared:
        lines += ["shared_experts:", f"  - source_model: {shared}", "    residual_scale: 0.5"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def moe_block(tensors: dict, layer: int, config: dict, x: torch.Tensor) -> torch.Tensor:
    """DeepseekMoE.forward for x [tokens, hidden], from the written tensors and config."""
    prefix = f"model.layers.{layer}.mlp"

    def mlp(name: str, h: torch.Tensor) -> torch.Tensor:
        w = {p: tensors[f"{name}.{p}_proj.weight"] for p in ("gate", "up", "down")}
        return (F.silu(h @ w["gate"].T) * (h @ w["up"].T)) @ w["down"].T

    assert config["scoring_func"] == "softmax"
    scores = (x @ tensors[f"{prefix}.gate.weight"].T).softmax(dim=-1)
    top_k = config["num_experts_per_tok"]
    weight, index = torch.topk(scores, k=top_k, dim=-1, sorted=False)
    if top_k > 1 and config["norm_topk_prob"]:
        weight = weight / (weight.sum(dim=-1, keepdim=True) + 1e-20)
    every = torch.stack([mlp(f"{prefix}.experts.{e}", x) for e in range(config["n_routed_experts"])], dim=1)
    y = (every.gather(1, index[..., None].expand(-1, -1, x.shape[-1])) * weight[..., None]).sum(dim=1)
    if config["n_shared_experts"] is not None:
        y = y + mlp(f"{prefix}.shared_experts", x)
    return y


class RefMoe(torch.nn.Module):
    def __init__(self, tensors: dict, layer: int, config: dict):
        super().__init__()
        self.tensors, self.layer, self.config = tensors, layer, config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return moe_block(self.tensors, self.layer, self.config, x.reshape(-1, x.shape[-1])).reshape(x.shape)


def deepseek_logits(folder) -> torch.Tensor:
    """DeepseekForCausalLM's forward: Llama attention, norms and embeddings, a DeepseekMoE in every
    layer (first_k_dense_replace 0, moe_layer_freq 1)."""
    config = json.loads((folder / "config.json").read_text())
    assert (config["first_k_dense_replace"], config["moe_layer_freq"]) == (0, 1)
    tensors = load_file(folder / "model.safetensors")
    llama = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "auto_map")}
    model = LlamaForCausalLM(LlamaConfig(**llama)).eval()
    missing, unexpected = model.load_state_dict({k: v for k, v in tensors.items() if ".mlp." not in k}, strict=False)
    assert all(".mlp." in k for k in missing) and not unexpected
    for index, layer in enumerate(model.model.layers):
        layer.mlp = RefMoe(tensors, index, config)
    with torch.no_grad():
        return model(input_ids=IDS).logits


def dense_logits(folder) -> torch.Tensor:
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()(input_ids=IDS).logits


def test_layout_config_and_tensors_follow_mergekit(tmp_path):
    base = make_text_model(tmp_path / "base", "llama")
    experts = [perturbed_copy(base, tmp_path / f"e{i}", scale=0.05, seed=i + 1) for i in range(3)]
    out = tmp_path / "out"
    result = build_moe_from_file(deepseek_config(tmp_path / "ds.yml", base, experts, shared=base), out,
                                 progress=False)
    assert result.architecture == "DeepSeek MoE" and any("trust_remote_code=True" in w for w in result.warnings)
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("deepseek", ["DeepseekForCausalLM"])
    assert {k: config[k] for k in ("n_routed_experts", "n_shared_experts", "num_experts_per_tok",
                                   "first_k_dense_replace", "moe_layer_freq", "moe_intermediate_size")} == {
        "n_routed_experts": 3, "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 0,
        "moe_layer_freq": 1, "moe_intermediate_size": 48}
    assert config["auto_map"]["AutoModelForCausalLM"].startswith("deepseek-ai/deepseek-moe-16b-base--")
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    tensors, dense = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    sources = [load_file(e / "model.safetensors") for e in experts]
    expected = {k for k in dense if ".mlp." not in k} | {
        f"model.layers.{i}.mlp.{part}" for i in range(2) for part in
        ["gate.weight"] + [f"{m}.{p}_proj.weight" for m in ("experts.0", "experts.1", "experts.2", "shared_experts")
                           for p in ("gate", "up", "down")]}
    assert set(tensors) == expected
    assert tensors["model.layers.1.mlp.gate.weight"].shape == (3, 32)
    for e, source in enumerate(sources):
        for p in ("gate", "up", "down"):
            assert torch.equal(tensors[f"model.layers.1.mlp.experts.{e}.{p}_proj.weight"],
                               source[f"model.layers.1.mlp.{p}_proj.weight"])
    assert torch.equal(tensors["model.layers.0.mlp.shared_experts.up_proj.weight"],
                       dense["model.layers.0.mlp.up_proj.weight"])
    torch.testing.assert_close(tensors["model.layers.0.mlp.shared_experts.down_proj.weight"],
                               0.5 * dense["model.layers.0.mlp.down_proj.weight"])  # residual_scale
    q_proj = "model.layers.1.self_attn.q_proj.weight"
    assert torch.equal(tensors[q_proj], dense[q_proj])

    # the block computes the gated mixture of the dense sources' MLPs plus the (scaled) shared MLP
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(0))
    scores = (x @ tensors["model.layers.1.mlp.gate.weight"].T).softmax(-1)
    mix = torch.zeros_like(x)
    for t in range(5):
        top = scores[t].argsort(descending=True)[:2]
        for e in top.tolist():
            m = {p: sources[e][f"model.layers.1.mlp.{p}_proj.weight"] for p in ("gate", "up", "down")}
            share = scores[t, e] / scores[t, top].sum()
            mix[t] += share * ((F.silu(m["gate"] @ x[t]) * (m["up"] @ x[t])) @ m["down"].T)
    m = {p: dense[f"model.layers.1.mlp.{p}_proj.weight"] for p in ("gate", "up", "down")}
    mix += 0.5 * ((F.silu(x @ m["gate"].T) * (x @ m["up"].T)) @ m["down"].T)
    torch.testing.assert_close(moe_block(tensors, 1, config, x), mix, atol=1e-6, rtol=1e-5)
    assert torch.isfinite(deepseek_logits(out)).all()
    assert "trust_remote_code=True" in (out / "README.md").read_text()


def test_upcycled_deepseek_without_shared_expert_computes_the_base_model(tmp_path):
    """architecture: deepseek, every expert the base MLP, no shared expert: routing weights sum to one,
    so the written model computes the dense base exactly (n_shared_experts is None, as mergekit)."""
    base = make_text_model(tmp_path / "base", "llama")
    out = tmp_path / "out"
    build_moe_from_file(deepseek_config(tmp_path / "ds.yml", base, [base] * 3, extra="architecture: deepseek\n"),
                        out, progress=False)
    config = json.loads((out / "config.json").read_text())
    names = list(load_file(out / "model.safetensors"))
    assert config["n_shared_experts"] is None and not any("shared_experts" in n for n in names)
    torch.testing.assert_close(deepseek_logits(out), dense_logits(base), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("shared", "extra", "problem"), [
    ("two", "", "no MoE output family fits"),
    ("prompted", "architecture: deepseek\n", "DeepSeek MoE takes at most one shared expert, without prompts"),
    (None, "architecture: deepseek\n", "DeepSeek MoE is built from llama / mistral models, not qwen2"),
])
def test_what_deepseek_cannot_express_is_refused(tmp_path, shared, extra, problem):
    base = make_text_model(tmp_path / "base", "qwen2" if shared is None else "llama")
    experts = [perturbed_copy(base, tmp_path / f"e{i}", scale=0.05, seed=i + 1) for i in range(2)]
    config = deepseek_config(tmp_path / "ds.yml", base, experts, extra=extra)
    if shared == "two":
        config.write_text(config.read_text() + f"shared_experts:\n  - source_model: {base}\n  - source_model: {base}\n")
    if shared == "prompted":
        config.write_text(config.read_text() + f"shared_experts:\n  - source_model: {base}\n"
                          "    positive_prompts: [\"w1\"]\n")
    with pytest.raises(VadasmError, match=problem):
        build_moe_from_file(config, tmp_path / "out", progress=False)
    run = subprocess.run([sys.executable, "-m", "vadasm", "moe", "build", str(config), str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and problem in run.stderr
    assert not (tmp_path / "out").exists()


def test_warnings_name_the_remote_code_and_a_rope_type_it_cannot_read():
    from vadasm.moe.outputs import OUTPUTS, output_warnings

    families = {o.model_type: o for o in OUTPUTS}
    assert output_warnings(families["mixtral"], {}) == []
    plain = output_warnings(families["deepseek"], {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}})
    assert len(plain) == 1 and "trust_remote_code=True" in plain[0]
    llama3 = output_warnings(families["deepseek"], {"rope_parameters": {"rope_type": "llama3", "factor": 8.0}})
    assert len(llama3) == 2 and "rope_type 'llama3'" in llama3[1]
