import pytest

from pico_models import MOE_TYPES, TEXT_CONFIGS, make_text_model
from vadasm.arch import architecture_for, describe, load_spec, supported_model_types
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint

REQUIRED = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "gpt2", "gpt_neox",
            "gptj", "mixtral", "qwen2_moe", "qwen3_moe", "llava", "llava_next", "qwen2_vl", "gemma3"}


def test_table_covers_the_required_families():
    assert set(supported_model_types()) >= REQUIRED
    for model_type in supported_model_types():
        spec = load_spec(model_type)
        assert spec["model_type"] == model_type


@pytest.mark.parametrize("model_type", sorted(TEXT_CONFIGS))
def test_every_tensor_of_a_real_checkpoint_has_a_role(tmp_path, model_type):
    folder = make_text_model(tmp_path / model_type, model_type)
    ck = Checkpoint.open(folder)
    arch = architecture_for(ck.config, ck.keys())
    roles = {name: arch.role(name) for name in ck.keys()}
    assert [n for n, r in roles.items() if r.role == "unknown"] == []
    layers = {r.layer for r in roles.values() if r.layer is not None}
    assert layers == set(range(arch.num_layers()))
    summary = describe(ck)
    assert summary.num_layers == 2 and summary.vocab_size == 96
    assert summary.is_moe == (model_type in MOE_TYPES)
    experts = {r.expert for r in roles.values() if r.expert is not None}
    stacked = any(r.role.startswith("stacked_expert") for r in roles.values())
    if summary.is_moe:  # experts stored one per tensor carry their index; stacked 3-D experts do not
        assert experts == set(range(4)) or (stacked and not experts)


def test_unknown_architecture_lists_the_supported_ones():
    with pytest.raises(VadasmError, match=r"x/config.json: unsupported architecture 'bert' \(supported: .*llama"):
        architecture_for({"model_type": "bert"}, source="x/config.json")


@pytest.mark.parametrize("new_layout", [False, True])
def test_llava_parts_under_both_naming_layouts(tmp_path, new_layout):
    from pico_models import make_llava, relayout_llava_to_new_names

    folder = make_llava(tmp_path / "llava")
    if new_layout:
        relayout_llava_to_new_names(folder)
    ck = Checkpoint.open(folder)
    arch = architecture_for(ck.config, ck.keys())
    assert arch.layout.name == ("transformers>=4.52" if new_layout else "transformers<4.52")
    parts = {arch.role(n).part for n in ck.keys()}
    assert parts == {"text", "vision_tower", "projector"}
    assert all(arch.role(n).role != "unknown" for n in ck.keys())
    q = "model.language_model.layers.1.self_attn.q_proj.weight" if new_layout else \
        "language_model.model.layers.1.self_attn.q_proj.weight"
    role = arch.role(q)
    assert (role.part, role.role, role.layer) == ("text", "attn_q", 1)
    assert arch.layout.from_text_name("model.layers.1.self_attn.q_proj.weight") == q
    summary = describe(ck)
    assert summary.vision["projector_parameters"] > 0 and summary.text_model_type == "llama"
