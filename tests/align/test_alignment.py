import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from pico_models import make_text_model, perturbed_copy
from vadasm import hungarian_neuron_alignment
from vadasm.align import compute_alignment, permute_tensor, unit_groups, write_aligned
from vadasm.arch import architecture_for
from vadasm.io import Checkpoint

ARCHS = ["llama", "qwen2", "qwen3", "gemma3_text", "gpt2", "gpt_neox", "phi3", "mixtral", "qwen2_moe", "qwen3_moe"]


def _random_perms(group, gen):
    if group.kind == "mlp":
        return {"neuron": torch.randperm(group.sizes["neuron"], generator=gen)}
    n_q, n_kv = group.sizes["q"], group.sizes["kv"]
    per = n_q // n_kv
    kv = torch.randperm(n_kv, generator=gen)
    q = torch.cat([int(b) * per + torch.randperm(per, generator=gen) for b in kv])
    return {"q": q, "kv": kv}


def _permuted_copy(src, dst, seed=0):
    """The same network with every layer's neurons and heads shuffled (a different basis)."""
    ck = Checkpoint.open(src)
    arch = architecture_for(ck.config, ck.keys())
    groups, _ = unit_groups(arch, ck)
    gen = torch.Generator().manual_seed(seed)
    tensors = load_file(src / "model.safetensors")
    for group in groups:
        perms = _random_perms(group, gen)
        for name in {s.name for s in group.slots}:
            tensors[name] = permute_tensor(tensors[name], group, perms, name).contiguous()
    dst.mkdir()
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(src / "config.json", dst / "config.json")
    return dst, groups


def _logits(folder, ids):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_plain_tensor_alignment_recovers_a_permutation():
    gen = torch.Generator().manual_seed(0)
    weights = torch.randn(64, 24, generator=gen)
    perm = torch.randperm(64, generator=gen)
    found = hungarian_neuron_alignment(weights, weights[perm])
    assert torch.equal(weights[perm][found], weights)


@pytest.mark.parametrize("model_type", ARCHS)
def test_permuted_model_computes_the_same_function_and_alignment_undoes_it(tmp_path, model_type):
    original = make_text_model(tmp_path / "orig", model_type)
    permuted, groups = _permuted_copy(original, tmp_path / "perm")
    assert {g.kind for g in groups} == {"mlp", "attn"}
    ids = torch.tensor([[1, 5, 9, 17, 33, 60, 7, 3]])
    reference_logits = _logits(original, ids)
    before, after = load_file(original / "model.safetensors"), load_file(permuted / "model.safetensors")
    assert sum(not torch.equal(before[n], after[n]) for n in before) >= 4 * len(groups) // 2
    torch.testing.assert_close(_logits(permuted, ids), reference_logits, atol=1e-5, rtol=1e-4)

    report = write_aligned(original, permuted, tmp_path / "aligned", progress=False)
    assert report.summary()["moved_fraction"] > 0.5
    assert all(g.distance_after < 1e-4 < g.distance_before for g in report.groups if g.moved)
    aligned, expected = load_file(tmp_path / "aligned/model.safetensors"), load_file(original / "model.safetensors")
    for name, tensor in expected.items():
        assert torch.equal(aligned[name], tensor), name
    torch.testing.assert_close(_logits(tmp_path / "aligned", ids), reference_logits, atol=1e-5, rtol=1e-4)
    saved = json.loads((tmp_path / "aligned/vadasm_config.json").read_text())
    assert saved["alignment"]["summary"]["distance_after"] < 1e-4


def test_fine_tune_of_one_base_aligns_to_the_identity(tmp_path):
    base = make_text_model(tmp_path / "base", "llama")
    tuned = perturbed_copy(base, tmp_path / "ft", scale=0.01)
    alignment = compute_alignment(Checkpoint.open(base), Checkpoint.open(tuned))
    assert alignment.report.moved_fraction == 0.0
    assert alignment.indices  # every group still gets its (identity) index


def test_activation_similarity_recovers_the_permutation(tmp_path):
    from vadasm.align import align_checkpoints

    original = make_text_model(tmp_path / "orig", "llama")
    permuted, _ = _permuted_copy(original, tmp_path / "perm", seed=3)
    ref, oth = Checkpoint.open(original), Checkpoint.open(permuted)
    arch = architecture_for(ref.config, ref.keys())
    from vadasm.align.activations import activation_pairs
    from vadasm.align.model import compute_alignment as compute

    groups, _ = unit_groups(arch, ref)
    ids = [torch.randint(3, 96, (1, 48), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    acts = activation_pairs(original, permuted, groups, ids)
    alignment = compute(ref, oth, arch, "activations", acts)
    assert {g.similarity for g in alignment.report.groups} == {"activations"}
    assert all(g.distance_after < 1e-4 for g in alignment.report.groups)
    assert align_checkpoints(ref, [ref], arch) == {}


def test_random_alignment_is_a_null_model_that_alignment_repairs(tmp_path):
    from vadasm.align import random_alignment, write_permuted

    original = make_text_model(tmp_path / "orig", "qwen3")
    ck = Checkpoint.open(original)
    shuffle = random_alignment(ck, architecture_for(ck.config, ck.keys()), seed=4)
    write_permuted(ck, shuffle, tmp_path / "shuffled", {}, progress=False)
    ids = torch.tensor([[1, 8, 20, 40, 2]])
    torch.testing.assert_close(_logits(tmp_path / "shuffled", ids), _logits(original, ids), atol=1e-5, rtol=1e-4)
    report = write_aligned(original, tmp_path / "shuffled", tmp_path / "back", progress=False)
    assert report.summary()["distance_after"] < 1e-4 < report.summary()["distance_before"]
