"""Row-chunked merges write exactly the bytes whole-tensor merges write."""

import pytest
import torch
from safetensors.torch import load_file, save_file

import vadasm.merge.tensors as tensors_module
from vadasm.arch import architecture_for
from vadasm.io import Checkpoint
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge
from vadasm.merge.plan import plan_tensors
from vadasm.merge.slices import resolve_slices
from vadasm.methods import get_method

QUIET = MergeOptions(progress=False)


def _as_bf16(folder, dst):
    """A bf16 copy: deltas of bf16 weights repeat values, so TIES meets ties at its cut."""
    dst.mkdir()
    (dst / "config.json").write_text((folder / "config.json").read_text())
    tensors = {k: v.to(torch.bfloat16) for k, v in load_file(folder / "model.safetensors").items()}
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"])
@pytest.mark.parametrize("bf16", [False, True])
def test_chunked_merge_is_byte_identical_to_one_chunk(tmp_path, llama_trio, monkeypatch, method, bf16):
    base, ft1, ft2 = llama_trio
    if bf16:
        base, ft1, ft2 = (_as_bf16(f, tmp_path / f"{f.name}-bf16") for f in (base, ft1, ft2))
    raw = {"merge_method": method, "base_model": str(base), "seed": 5, "models": [
        {"model": str(ft1), "parameters": {"weight": 0.6, "density": 0.3}},
        {"model": str(ft2), "parameters": {"weight": 0.5, "density": 0.7}}]}
    if method == "linear":  # the base is also an input: read once per chunk, used twice
        raw["models"] = [{"model": str(m), "parameters": {"weight": w}} for m, w in ((base, 0.2), (ft1, 0.5),
                                                                                     (ft2, 0.3))]
    monkeypatch.setattr(tensors_module, "CHUNK_ELEMENTS", 10**9)
    run_merge(recipe_from_dict(raw), tmp_path / "whole", QUIET)
    # partial rows of 1-D tensors and single rows of matrices; TIES histograms cost per chunk, so fewer
    monkeypatch.setattr(tensors_module, "CHUNK_ELEMENTS", 1000 if method == "ties" else 37)
    monkeypatch.setattr(tensors_module, "CUT_CACHE_ELEMENTS", 0 if bf16 else 10**9)  # TIES cuts: streamed / kept
    run_merge(recipe_from_dict(raw), tmp_path / "chunked", QUIET)
    assert (tmp_path / "whole/model.safetensors").read_bytes() == (tmp_path / "chunked/model.safetensors").read_bytes()


def test_row_path_equals_the_whole_tensor_path(tmp_path, llama_trio, monkeypatch):
    base, ft1, ft2 = llama_trio
    raw = {"merge_method": "ties", "base_model": str(base), "dtype": "float32", "models": [
        {"model": str(m), "parameters": {"weight": 0.5, "density": 0.4}} for m in (ft1, ft2)]}
    recipe = recipe_from_dict(raw)
    monkeypatch.setattr(tensors_module, "CHUNK_ELEMENTS", 100)
    run_merge(recipe, tmp_path / "out", QUIET)
    merged = load_file(tmp_path / "out/model.safetensors")
    method = get_method("ties")
    checkpoints = {str(p): Checkpoint.open(p) for p in (base, ft1, ft2)}
    arch = architecture_for(checkpoints[str(base)].config, checkpoints[str(base)].keys())
    slices = resolve_slices(recipe, checkpoints, arch)
    for action in plan_tensors(slices, checkpoints, arch):
        sources = tensors_module.sources_of(slices[action.slice], action, checkpoints)
        whole = tensors_module.merge_tensor(recipe, method, action, slices[action.slice], sources, "cpu")
        assert torch.equal(merged[action.name], whole), action.name
