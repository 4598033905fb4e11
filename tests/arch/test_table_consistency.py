"""Each table file against a real tiny checkpoint of its family: the config keys it names exist, the
head counts it names divide the projections, and the roles of the tensors that need a careful reading
(fused, stacked, state-space, oddly named) are the ones the family's code gives them."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from pico_models import TEXT_CONFIGS, make_text_model
from vadasm.align import random_alignment, unit_groups
from vadasm.arch import architecture_for, load_spec, supported_model_types
from vadasm.io import Checkpoint

# mergekit 0.1.5's decoder-only text families (mergekit/_data/architectures/*.json) that transformers 5.24
# has a stock class for; the others there need remote code or are encoders, encoder-decoders,
# classifiers or vision models (see the README's supported-families line).
MERGEKIT_TEXT_FAMILIES = {
    "afmoe", "apertus", "arcee", "cohere", "cohere2", "exaone", "falcon", "gemma", "gemma2", "gemma3_text", "glm4",
    "glm4_moe", "gpt_bigcode", "gpt_neox", "gpt2", "granite", "granitemoehybrid", "lfm2", "llama", "mamba",
    "mistral", "mixtral", "olmo2", "phi", "phi3", "qwen2", "qwen3", "qwen3_moe", "stablelm", "starcoder2",
}


def test_every_mergekit_text_family_with_a_stock_class_is_in_the_table():
    assert MERGEKIT_TEXT_FAMILIES - set(supported_model_types()) == set()
    assert set(TEXT_CONFIGS) >= MERGEKIT_TEXT_FAMILIES  # and each has a tiny model in the shared tests


@pytest.mark.parametrize("model_type", sorted(TEXT_CONFIGS))
def test_table_names_config_keys_and_head_counts_that_fit_the_checkpoint(tmp_path, model_type):
    folder = make_text_model(tmp_path / model_type, model_type)
    config = json.loads((folder / "config.json").read_text())
    ck = Checkpoint.open(folder)
    arch = architecture_for(ck.config, ck.keys())
    spec = load_spec(model_type)
    for meaning, names in spec["config"].items():
        names = [names] if isinstance(names, str) else names
        assert any(name in config for name in names), f"{meaning}: none of {names} in config.json"
    embed = ck.shape(spec["embed"][0])
    assert embed == (arch.text.config_value(config, "vocab_size"), arch.text.config_value(config, "hidden_size"))
    if "mlp_input_norm" in spec:  # language transfer reads it in every layer that has a dense MLP
        prefix = spec["layer_prefix"].format(layer=arch.num_layers() - 1)
        assert prefix + spec["mlp_input_norm"] in ck
    heads = arch.text.config_value(config, "num_heads")
    kv_heads = arch.text.config_value(config, "num_kv_heads") or heads
    by_role = {arch.role(n).role: n for n in ck.keys() if n.endswith(".weight") and arch.role(n).layer is not None}
    if heads and "attn_q" in by_role and "attn_k" in by_role:  # alignment cuts q and k into these heads
        q_rows, k_rows = ck.shape(by_role["attn_q"])[0], ck.shape(by_role["attn_k"])[0]
        assert q_rows % heads == 0 and k_rows % kv_heads == 0 and q_rows // heads == k_rows // kv_heads


ROLES = {  # family -> {tensor: (role, layer, expert)}
    "granite": {"model.layers.1.self_attn.q_proj.weight": ("attn_q", 1, None),
                "model.layers.0.mlp.gate_proj.weight": ("mlp_gate", 0, None)},
    "exaone": {"transformer.h.1.attn.attention.out_proj.weight": ("attn_o", 1, None),
               "transformer.h.0.mlp.c_fc_0.weight": ("mlp_gate", 0, None),
               "transformer.h.0.mlp.c_fc_1.weight": ("mlp_up", 0, None),
               "transformer.wte.weight": ("embed", None, None)},
    "falcon": {"transformer.h.0.self_attention.query_key_value.weight": ("attn_qkv", 0, None),
               "transformer.word_embeddings.weight": ("embed", None, None)},
    "gpt_bigcode": {"transformer.h.1.attn.c_attn.weight": ("attn_qkv", 1, None),
                    "transformer.wpe.weight": ("embed", None, None)},
    "phi": {"lm_head.bias": ("lm_head", None, None), "model.final_layernorm.bias": ("final_norm", None, None),
            "model.layers.0.self_attn.dense.weight": ("attn_o", 0, None)},
    "glm4": {"model.layers.0.mlp.gate_up_proj.weight": ("mlp_gate_up", 0, None)},
    "glm4_moe": {"model.layers.0.mlp.gate_proj.weight": ("mlp_gate", 0, None),
                 "model.layers.1.mlp.experts.3.down_proj.weight": ("expert_down", 1, 3),
                 "model.layers.1.mlp.shared_experts.up_proj.weight": ("shared_expert_up", 1, None),
                 "model.layers.1.mlp.gate.e_score_correction_bias": ("router", 1, None)},
    "granitemoe": {"model.layers.1.block_sparse_moe.input_linear.weight": ("stacked_expert_gate_up", 1, None),
                   "model.layers.1.block_sparse_moe.output_linear.weight": ("stacked_expert_down", 1, None),
                   "model.layers.0.block_sparse_moe.router.layer.weight": ("router", 0, None)},
    "granitemoehybrid": {"model.layers.0.mamba.in_proj.weight": ("ssm_in", 0, None),
                         "model.layers.0.shared_mlp.input_linear.weight": ("mlp_gate_up", 0, None),
                         "model.layers.1.self_attn.k_proj.weight": ("attn_k", 1, None)},
    "lfm2": {"model.embedding_norm.weight": ("final_norm", None, None),
             "model.layers.0.conv.in_proj.weight": ("conv_in", 0, None),
             "model.layers.1.self_attn.out_proj.weight": ("attn_o", 1, None),
             "model.layers.1.feed_forward.w3.weight": ("mlp_up", 1, None)},
    "lfm2_moe": {"model.layers.1.feed_forward.experts.3.w2.weight": ("expert_down", 1, 3),
                 "model.layers.1.feed_forward.expert_bias": ("router", 1, None),
                 "model.layers.0.feed_forward.w1.weight": ("mlp_gate", 0, None)},
    "granitemoeshared": {"model.layers.1.shared_mlp.output_linear.weight": ("mlp_down", 1, None)},
    "mamba": {"backbone.embeddings.weight": ("embed", None, None), "backbone.norm_f.weight": ("final_norm", None, None),
              "backbone.layers.1.mixer.A_log": ("ssm_state", 1, None)},
    "apertus": {"model.layers.0.mlp.act_fn.beta": ("buffer", 0, None),
                "model.layers.0.mlp.act_fn.alpha_p": ("activation", 0, None)},
    "olmo2": {"model.layers.0.post_feedforward_layernorm.weight": ("norm", 0, None),
              "model.layers.0.self_attn.k_norm.weight": ("attn_k", 0, None)},
    "cohere": {"model.layers.0.self_attn.q_norm.weight": ("attn_q", 0, None)},
    "afmoe": {"model.layers.1.self_attn.gate_proj.weight": ("attn_q", 1, None),
              "model.layers.1.mlp.expert_bias": ("router", 1, None),
              "model.layers.1.mlp.experts.2.up_proj.weight": ("expert_up", 1, 2)},
}


@pytest.mark.parametrize("model_type", sorted(ROLES))
def test_roles_of_the_tensors_each_family_stores_its_own_way(tmp_path, model_type):
    ck = Checkpoint.open(make_text_model(tmp_path / model_type, model_type))
    arch = architecture_for(ck.config, ck.keys())
    for name, (role, layer, expert) in ROLES[model_type].items():
        assert name in ck, name
        found = arch.role(name)
        assert (found.role, found.layer, found.expert) == (role, layer, expert), name


# The families added from mergekit's list, whose MLP neurons and attention heads alignment permutes.
PERMUTED = ["afmoe", "apertus", "arcee", "cohere", "cohere2", "exaone", "falcon", "glm4", "glm4_moe", "gpt_bigcode",
            "granite", "granitemoe", "granitemoehybrid", "granitemoeshared", "lfm2", "lfm2_moe", "olmo2", "phi",
            "stablelm", "starcoder2"]


def _logits(folder, ids):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("model_type", PERMUTED)
def test_permuting_the_units_the_table_describes_keeps_the_function(tmp_path, model_type):
    """A tensor the table forgets (a per-head norm, an attention gate) would stay put and change the logits."""
    original = make_text_model(tmp_path / "orig", model_type)
    ck = Checkpoint.open(original)
    arch = architecture_for(ck.config, ck.keys())
    assert unit_groups(arch, ck)[0]
    shuffle = random_alignment(ck, arch, seed=0)  # every group the table describes, in a random order
    tensors = {name: shuffle.apply(name, tensor).contiguous()
               for name, tensor in load_file(original / "model.safetensors").items()}
    permuted = tmp_path / "perm"
    permuted.mkdir()
    save_file(tensors, permuted / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(original / "config.json", permuted / "config.json")
    ids = torch.tensor([[1, 5, 9, 17, 33, 60, 7, 3]])
    torch.testing.assert_close(_logits(permuted, ids), _logits(original, ids), atol=1e-5, rtol=1e-4)
