import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from pico_models import SPECIAL_TOKENS, VOCAB, make_text_model, make_word_tokenizer, perturbed_copy
from vadasm.errors import VadasmError
from vadasm.moe.build import build_moe_from_file
from vadasm.moe.gates import cheap_embedding, tokenize_prompts

WORDS = [f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS))]
IDS = torch.tensor([[1, 5, 6, 7, 8, 9]])


def family(tmp_path, model_type="mistral", experts=2, **overrides):
    """A base model with a tokenizer and `experts` fine-tunes of it."""
    base = make_text_model(tmp_path / "base", model_type, **overrides)
    make_word_tokenizer(base, WORDS)
    return base, [perturbed_copy(base, tmp_path / f"e{i}", scale=0.05, seed=i + 1) for i in range(experts)]


def write_config(path, base, experts, gate_mode="cheap_embed", shared=None, extra="", noise=None):
    prompts = [("w1 w2 w3", "w9"), ("w40 w41", None), ("w60 w61 w62", None)]
    lines = [f"base_model: {base}", f"gate_mode: {gate_mode}", "experts:"]
    for i, expert in enumerate(experts):
        positive, negative = prompts[i]
        lines += [f"  - source_model: {expert}", f"    positive_prompts: [\"{positive}\"]"]
        lines += [f"    negative_prompts: [\"{negative}\"]"] if negative else []
        lines += [f"    noise_scale: {noise}"] if noise and i == 1 else []
    if shared:
        lines += ["shared_experts:", f"  - source_model: {shared}", "    positive_prompts: [\"w5 w6\"]",
                  "    residual_scale: 0.5"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def logits(folder):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_mixtral_from_mistral_experts_cheap_embed(tmp_path):
    base, experts = family(tmp_path)
    result = build_moe_from_file(write_config(tmp_path / "moe.yml", base, experts), tmp_path / "out", progress=False)
    assert result.architecture == "Mixtral" and result.tensors == 29
    out = load_file(tmp_path / "out/model.safetensors")
    for e, expert in enumerate(experts):
        dense = load_file(expert / "model.safetensors")
        for projection, name in (("gate", "w1"), ("up", "w3"), ("down", "w2")):
            assert torch.equal(out[f"model.layers.1.block_sparse_moe.experts.{e}.{name}.weight"],
                               dense[f"model.layers.1.mlp.{projection}_proj.weight"])
    base_tensors = load_file(base / "model.safetensors")
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(out[q_proj], base_tensors[q_proj])
    # router row of expert 0: cheap embedding of its prompt minus that of its negative prompt, renormalised
    from vadasm.moe.gates import load_prompt_tokenizer

    tokenizer, embed = load_prompt_tokenizer(base), base_tensors["model.embed_tokens.weight"]
    row = cheap_embedding(embed, tokenize_prompts(tokenizer, ["w1 w2 w3"])) - cheap_embedding(
        embed, tokenize_prompts(tokenizer, ["w9"]))
    torch.testing.assert_close(out["model.layers.1.block_sparse_moe.gate.weight"][0], row / row.norm())
    config = json.loads((tmp_path / "out/config.json").read_text())
    assert (config["model_type"], config["num_local_experts"], config["num_experts_per_tok"]) == ("mixtral", 2, 2)
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"tokenizer.json", "mergekit_moe_config.yml", "vadasm_config.json"} <= written
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert type(model).__name__ == "MixtralForCausalLM"
    assert model.generate(IDS, max_new_tokens=3, do_sample=False).shape == (1, 9)


def test_upcycled_mixtral_computes_the_base_model(tmp_path):
    """Every expert the base's own MLP: routing weights sum to one, so the MoE is the dense model
    exactly; a swapped w1/w2/w3 or a wrong layer would break this. (Random gates: mergekit allows
    identical experts then, for sparse upcycling before training.)"""
    base = make_text_model(tmp_path / "base", "llama")
    config = tmp_path / "moe.yml"
    config.write_text(f"base_model: {base}\ngate_mode: random\nseed: 3\nexperts_per_token: 1\nexperts:\n"
                      f"  - source_model: {base}\n  - source_model: {base}\n  - source_model: {base}\n")
    from typer.testing import CliRunner

    from vadasm.cli import _register_subcommands, app

    _register_subcommands()
    run = CliRunner().invoke(app, ["moe", "build", str(config), str(tmp_path / "out"), "--json"])
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["architecture"] == "Mixtral"
    torch.testing.assert_close(logits(tmp_path / "out"), logits(base), atol=1e-5, rtol=1e-4)


def test_random_gates_and_noise_follow_the_seed_and_residual_scale_scales_down_proj(tmp_path):
    base, experts = family(tmp_path, "qwen2")
    built = {}
    for seed in (0, 0, 1):
        out = tmp_path / f"out{len(built)}-{seed}"
        config = write_config(tmp_path / "moe.yml", base, experts, "random", shared=experts[0], noise=0.01,
                              extra=f"seed: {seed}\n")
        result = build_moe_from_file(config, out, progress=False)
        assert result.architecture == "Qwen MoE"
        built[out.name] = load_file(out / "model.safetensors")
    first, again, other = built.values()
    for name in ("model.layers.0.mlp.gate.weight", "model.layers.0.mlp.experts.1.up_proj.weight"):
        assert torch.equal(first[name], again[name]) and not torch.equal(first[name], other[name])
    noise = first["model.layers.0.mlp.experts.1.up_proj.weight"] - load_file(
        experts[1] / "model.safetensors")["model.layers.0.mlp.up_proj.weight"]
    assert 0.007 < float(noise.std()) < 0.013  # noise_scale 0.01 on expert 1 only
    assert torch.equal(first["model.layers.0.mlp.experts.0.up_proj.weight"],
                       load_file(experts[0] / "model.safetensors")["model.layers.0.mlp.up_proj.weight"])
    tensors = other
    dense = load_file(experts[0] / "model.safetensors")
    torch.testing.assert_close(tensors["model.layers.1.mlp.shared_expert.down_proj.weight"],
                               0.5 * dense["model.layers.1.mlp.down_proj.weight"])
    assert tensors["model.layers.1.mlp.shared_expert_gate.weight"].shape == (1, 32)
    assert torch.isfinite(logits(out)).all()  # a Qwen2 base's own q/k/v biases carried into Qwen MoE


def test_qwen_moe_with_a_gated_shared_expert_from_hidden_states(tmp_path):
    base, experts = family(tmp_path, "llama")
    config = write_config(tmp_path / "moe.yml", base, experts, "hidden", shared=base, extra="architecture: qwen\n")
    result = build_moe_from_file(config, tmp_path / "out", progress=False)
    assert result.architecture == "Qwen MoE" and result.shared_experts == [str(base)]
    tensors = load_file(tmp_path / "out/model.safetensors")
    assert torch.equal(tensors["model.layers.0.self_attn.q_proj.bias"], torch.zeros(32))  # llama has none
    rows = torch.cat([tensors["model.layers.0.mlp.gate.weight"],
                      tensors["model.layers.0.mlp.shared_expert_gate.weight"]])
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(3))  # hidden rows are unit vectors
    # expert 1's row in layer 1: the input of layer 1 at its prompt's last token, normalised
    from vadasm.moe.gates import load_prompt_tokenizer

    dense = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    with torch.no_grad():
        state = dense(**tokenize_prompts(load_prompt_tokenizer(base), ["w40 w41"]),
                      output_hidden_states=True).hidden_states[1][0, -1]
    torch.testing.assert_close(tensors["model.layers.1.mlp.gate.weight"][1], state / state.norm())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert type(model).__name__ == "Qwen2MoeForCausalLM" and model.config.num_experts == 2
    assert torch.isfinite(logits(tmp_path / "out")).all()


def test_qwen3_moe_from_qwen3_experts(tmp_path):
    base, experts = family(tmp_path, "qwen3")
    result = build_moe_from_file(write_config(tmp_path / "moe.yml", base, experts, "router_input"), tmp_path / "out",
                                 progress=False)
    assert result.architecture == "Qwen3 MoE"
    rows = load_file(tmp_path / "out/model.safetensors")["model.layers.1.mlp.gate.weight"]
    torch.testing.assert_close(rows[0], -rows[1])  # two experts centred: opposite rows
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path / "out")).__name__ == "Qwen3MoeForCausalLM"
    assert torch.isfinite(logits(tmp_path / "out")).all()


@pytest.mark.parametrize(("body", "problem"), [
    ("gate_mode: hidden\nexperts: []\n", "experts: List should have at least 1 item"),
    ("gate_mode: sideways\nexperts:\n  - source_model: x\n", "gate_mode: Input should be"),
    ("experts_per_token: 3\ngate_mode: random\nexperts:\n  - source_model: x\n",
     "1 experts but experts_per_token is 3"),
    ("experts_per_token: 1\nexperts:\n  - source_model: x\n", "experts[0] has no positive_prompts"),
    ("experts:\n  - {source_model: x, positive_prompts: [a]}\n  - {source_model: y, positive_prompts: [a]}\n",
     "identical for all experts"),
    ("experts:\n  - {source_model: x, positive_prompts: [a]}\n  - {source_model: x, positive_prompts: [b]}\n",
     "all experts are the same model"),
    ("gate_mode: random\nexperts:\n  - {source_model: x, colour: red}\n", "experts.0.colour: Extra inputs"),
])
def test_config_errors_are_one_line_naming_the_file(tmp_path, body, problem):
    config = tmp_path / "moe.yml"
    config.write_text("base_model: b\n" + body)
    with pytest.raises(VadasmError) as err:
        build_moe_from_file(config, tmp_path / "out", progress=False)
    assert str(err.value).startswith(f"{config}: ") and problem in str(err.value) and "\n" not in str(err.value)


def test_refusals_exit_2_with_one_line_and_write_nothing(tmp_path):
    base, experts = family(tmp_path, "llama")
    config = tmp_path / "two_shared.yml"  # two shared experts: no MoE family holds them (as mergekit)
    config.write_text(f"base_model: {base}\ngate_mode: random\nexperts:\n  - source_model: {experts[0]}\n"
                      f"  - source_model: {experts[1]}\nshared_experts:\n  - source_model: {base}\n"
                      f"  - source_model: {experts[0]}\n")
    run = subprocess.run([sys.executable, "-m", "vadasm", "moe", "build", str(config), str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert run.stderr.startswith("error: ") and "no MoE output family fits" in run.stderr
    assert not (tmp_path / "out").exists()
    inside = write_config(tmp_path / "inside.yml", base, experts)
    with pytest.raises(VadasmError, match="lies inside the input"):
        build_moe_from_file(inside, base / "moe", progress=False)
    other = make_text_model(tmp_path / "gemma", "gemma", head_dim=8)
    with pytest.raises(VadasmError, match="one family"):
        build_moe_from_file(write_config(tmp_path / "mixed.yml", base, [experts[0], other]), tmp_path / "o2",
                            progress=False)
    assert not (base / "moe").exists() and not (tmp_path / "o2").exists()
