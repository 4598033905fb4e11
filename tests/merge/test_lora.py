"""`model+lora` references: the adapter folded in as PEFT's merge_and_unload folds it."""

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from pico_models import make_text_model
from vadasm.errors import VadasmError
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge
from vadasm.merge.lora import split_reference

QUIET = MergeOptions(progress=False)


def _adapter(base, folder, **config):
    """A LoRA with non-zero B (PEFT initialises B to 0, which would change nothing)."""
    torch.manual_seed(7)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False, **config))
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("rslora", [False, True])
def test_model_plus_lora_equals_peft_merge_and_unload(tmp_path, rslora):
    base = make_text_model(tmp_path / "base", "llama")
    adapter = _adapter(base, tmp_path / "adapter", use_rslora=rslora)
    recipe = recipe_from_dict({"merge_method": "passthrough", "models": [{"model": f"{base}+{adapter}"}]})
    run_merge(recipe, tmp_path / "out", QUIET)
    expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).merge_and_unload()
    merged = load_file(tmp_path / "out/model.safetensors")
    state = expected.state_dict()
    changed = [k for k in merged if not torch.equal(merged[k], load_file(base / "model.safetensors")[k])]
    assert sorted(changed) == sorted(f"model.layers.{i}.{m}.weight" for i in range(2)
                                     for m in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"))
    for name, tensor in merged.items():
        assert torch.allclose(tensor, state[name], atol=1e-6), name


def test_a_lora_reference_merges_like_any_model(tmp_path):
    base = make_text_model(tmp_path / "base", "llama")
    adapter = _adapter(base, tmp_path / "adapter")
    recipe = recipe_from_dict({"merge_method": "task_arithmetic", "base_model": str(base),
                               "models": [{"model": f"{base}+{adapter}", "parameters": {"weight": 0.5}}]})
    run_merge(recipe, tmp_path / "out", QUIET)
    expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).merge_and_unload()
    b, merged = load_file(base / "model.safetensors"), load_file(tmp_path / "out/model.safetensors")
    q = "model.layers.1.self_attn.q_proj.weight"
    assert torch.allclose(merged[q], b[q] + 0.5 * (expected.state_dict()[q] - b[q]), atol=1e-6)
    inputs = json.loads((tmp_path / "out/vadasm_config.json").read_text())["inputs"]
    assert len({i["fingerprint"] for i in inputs}) == 2  # the adapter changes the fingerprint


def test_references_split_as_mergekit_splits_them(tmp_path):
    assert split_reference("org/model+org/lora") == ("org/model", "org/lora")
    assert split_reference("org/model") == ("org/model", None)
    odd = tmp_path / "a+b"
    odd.mkdir()
    assert split_reference(str(odd)) == (str(odd), None)  # an existing folder is never split


@pytest.mark.parametrize("defect, message", [
    ("dora", "'use_dora' is not supported"),
    ("missing", "not a PEFT adapter folder"),
    ("shape", "makes shape"),
])
def test_bad_adapters_are_refused_in_one_line(tmp_path, defect, message):
    base = make_text_model(tmp_path / "base", "llama")
    adapter = _adapter(base, tmp_path / "adapter")
    if defect == "dora":
        config = json.loads((adapter / "adapter_config.json").read_text())
        (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    elif defect == "missing":
        (adapter / "adapter_config.json").unlink()
    elif defect == "shape":
        base = make_text_model(tmp_path / "other", "llama", hidden_size=64, num_attention_heads=4)
    recipe = recipe_from_dict({"merge_method": "passthrough", "models": [{"model": f"{base}+{adapter}"}]})
    with pytest.raises(VadasmError, match=message):
        run_merge(recipe, tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()


def _merge_and_peft(tmp_path, model_type: str, seed: int, **lora) -> tuple[dict, dict, Path]:
    """(our passthrough merge of MODEL+LORA, PEFT's merge_and_unload state dict, the base folder)."""
    base = make_text_model(tmp_path / "base", model_type)
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, **lora))
    model.save_pretrained(tmp_path / "adapter")
    recipe = recipe_from_dict({"merge_method": "passthrough", "models": [{"model": f"{base}+{tmp_path / 'adapter'}"}]})
    run_merge(recipe, tmp_path / "out", QUIET)
    expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "adapter")
    return load_file(tmp_path / "out/model.safetensors"), expected.merge_and_unload().state_dict(), base


def test_fan_in_fan_out_adapters_of_conv1d_models(tmp_path):
    merged, state, base = _merge_and_peft(tmp_path, "gpt2", 3, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)
    name = "transformer.h.1.attn.c_attn.weight"
    assert not torch.equal(merged[name], load_file(base / "model.safetensors")[name])
    assert all(torch.allclose(merged[k], state[k], atol=1e-6) for k in merged if k in state)


def test_embedding_lora(tmp_path):
    merged, state, base = _merge_and_peft(tmp_path, "llama", 5, target_modules=["embed_tokens"])
    name = "model.embed_tokens.weight"
    assert not torch.equal(merged[name], load_file(base / "model.safetensors")[name])
    assert torch.allclose(merged[name], state[name], atol=1e-6)
