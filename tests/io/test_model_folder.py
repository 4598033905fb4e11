"""Which files are the model: shard index confined to the folder, strays refused, sidecars parsed."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tiny_checkpoints import tiny_llama_tensors, write_tiny_llama
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint

INDEX = "model.safetensors.index.json"


def refused(folder, match: str, names) -> str:
    with pytest.raises(VadasmError, match=match) as err:
        Checkpoint.open(folder)
    message = str(err.value)
    assert "\n" not in message and str(names) in message, message
    return message


def rewrite_index(folder, change) -> None:
    index = json.loads((folder / INDEX).read_text())
    change(index["weight_map"])
    (folder / INDEX).write_text(json.dumps(index))


def shard_names(folder) -> list[str]:
    return sorted(set(json.loads((folder / INDEX).read_text())["weight_map"].values()))


def test_a_valid_sharded_model_loads_every_tensor(tmp_path):
    folder = write_tiny_llama(tmp_path / "model", shards=3)
    ck = Checkpoint.open(folder)
    expected = tiny_llama_tensors()
    assert sorted(ck.keys()) == sorted(expected) and len(set(ck.files.values())) == 3
    for name, tensor in expected.items():
        assert torch.equal(ck.get(name), tensor)


@pytest.mark.parametrize("target", ["../outside.safetensors", "sub/../../outside.safetensors"])
def test_an_index_naming_a_parent_path_is_refused(tmp_path, target):
    folder = write_tiny_llama(tmp_path / "model", shards=2)
    shutil.copy(folder / shard_names(folder)[1], folder.parent / "outside.safetensors")
    rewrite_index(folder, lambda wm: wm.update(dict.fromkeys(wm, target)))
    refused(folder, "not a plain file name inside the model folder", folder / INDEX)


def test_an_index_naming_an_absolute_path_is_refused(tmp_path):
    folder = write_tiny_llama(tmp_path / "model", shards=2)
    outside = folder.parent / "outside.safetensors"
    shutil.copy(folder / shard_names(folder)[1], outside)
    rewrite_index(folder, lambda wm: wm.update(dict.fromkeys(wm, str(outside))))
    refused(folder, "not a plain file name", folder / INDEX)


def test_a_shard_symlinked_outside_the_folder_is_refused(tmp_path):
    folder = write_tiny_llama(tmp_path / "model", shards=2)
    shard = folder / shard_names(folder)[1]
    outside = shutil.move(shard, folder.parent / "outside.safetensors")
    shard.symlink_to(outside)
    refused(folder, "lies outside the model folder", shard)


def test_a_config_symlinked_outside_the_folder_is_refused(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    outside = shutil.move(folder / "config.json", folder.parent / "elsewhere.json")
    (folder / "config.json").symlink_to(outside)
    refused(folder, "lies outside the model folder", folder / "config.json")


def test_symlinks_inside_the_folder_and_into_a_hub_cache_blobs_folder_are_read(tmp_path):
    inside = write_tiny_llama(tmp_path / "inside")
    shutil.move(inside / "model.safetensors", inside / "real.bin")
    (inside / "model.safetensors").symlink_to("real.bin")
    assert len(Checkpoint.open(inside).keys()) == 7
    repo = inside.parent / "models--org--name"
    snapshot = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "real.bin"):
        shutil.copy(inside / name, repo / "blobs" / name)
    (snapshot / "config.json").symlink_to("../../blobs/config.json")
    (snapshot / "model.safetensors").symlink_to("../../blobs/real.bin")
    assert len(Checkpoint.open(snapshot).keys()) == 7


def test_a_shard_named_in_the_index_but_missing_is_refused(tmp_path):
    folder = write_tiny_llama(tmp_path / "model", shards=2)
    missing = folder / shard_names(folder)[1]
    missing.unlink()
    refused(folder, f"shard listed in {INDEX} is missing", missing)


def test_a_tensor_in_another_shard_than_the_index_says_is_refused(tmp_path):
    folder = write_tiny_llama(tmp_path / "model", shards=2)
    first, second = shard_names(folder)
    rewrite_index(folder, lambda wm: wm.update({"lm_head.weight": second if wm["lm_head.weight"] == first
                                                else first}))
    refused(folder, "tensor 'lm_head.weight' is listed in .* but is stored in", folder / INDEX)


def test_a_tensor_the_index_lists_but_no_shard_holds_is_refused(tmp_path):
    folder = write_tiny_llama(tmp_path / "model", shards=2)
    rewrite_index(folder, lambda wm: wm.update({"model.extra.weight": shard_names(folder)[0]}))
    refused(folder, "tensor 'model.extra.weight' is listed in .* but is in no shard", folder / INDEX)


def test_a_tensor_stored_in_two_shards_is_refused(tmp_path):
    folder = write_tiny_llama(tmp_path / "model", shards=2)
    first, second = (folder / name for name in shard_names(folder))
    tensors = load_file(second)
    name = sorted(load_file(first))[0]
    tensors[name] = torch.zeros_like(load_file(first)[name])
    save_file(tensors, second)
    refused(folder, f"tensor '{name}' is also stored in", second)


def test_a_shard_the_index_leaves_out_is_refused(tmp_path):
    folder = write_tiny_llama(tmp_path / "model", shards=2)
    left_out = shard_names(folder)[1]
    rewrite_index(folder, lambda wm: [wm.pop(n) for n in [n for n, f in wm.items() if f == left_out]])
    refused(folder, f"weight file not named in {INDEX}", folder / left_out)


def test_a_second_weights_file_without_an_index_is_refused_as_ambiguous(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    shutil.copy(folder / "model.safetensors", folder / "model-copy.safetensors")
    refused(folder, "2 weight files .* and no model.safetensors.index.json; .* ambiguous", folder)


def test_a_foreign_format_file_is_left_alone_unless_it_holds_model_tensors(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    save_file({"layers.0.attention.wq.weight": torch.ones(2)}, folder / "consolidated.safetensors")
    assert "layers.0.attention.wq.weight" not in Checkpoint.open(folder)
    save_file({"lm_head.weight": torch.ones(2)}, folder / "consolidated.safetensors")
    refused(folder, "holds tensors of the model .* not one of its weight files", folder / "consolidated.safetensors")


def test_a_weights_file_with_no_tensors_is_refused(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    save_file({}, folder / "model.safetensors")
    refused(folder, "holds no tensors", folder / "model.safetensors")


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_weights_file_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    folder = write_tiny_llama(tmp_path / "model")
    weights = folder / "model.safetensors"
    weights.unlink()
    os.mkfifo(weights) if kind == "fifo" else weights.mkdir()
    refused(folder, "not a regular file", weights)


def test_a_config_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")
    refused(folder, "not a regular file", folder / "config.json")


@pytest.mark.parametrize("name, content", [
    ("tokenizer.json", b"{not json"),
    ("tokenizer.json", b'{"model": "\xff\xfe"}'),
    ("tokenizer_config.json", b'{"a": 1'),
    ("special_tokens_map.json", b"\xff\xfe\x00bad"),
    ("merges.txt", b"a b\n\xff\xfe\n"),
])
def test_a_corrupt_tokenizer_sidecar_is_refused(tmp_path, name, content):
    folder = write_tiny_llama(tmp_path / "model")
    (folder / name).write_bytes(content)
    refused(folder, "not valid JSON|not UTF-8 text", folder / name)


def test_a_sidecar_symlinked_outside_the_folder_is_refused(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    (folder.parent / "passwd").write_text("{}")
    (folder / "tokenizer_config.json").symlink_to(folder.parent / "passwd")
    refused(folder, "lies outside the model folder", folder / "tokenizer_config.json")


def test_valid_sidecars_are_listed_for_copying(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    (folder / "tokenizer.json").write_text('{"model": {}}')
    (folder / "merges.txt").write_text("a b\n")
    assert [p.name for p in Checkpoint.open(folder).sidecar_files()] == ["tokenizer.json", "merges.txt"]


def test_a_zero_size_tensor_reads_back_empty(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    tensors = {**tiny_llama_tensors(), "model.layers.0.self_attn.q_proj.bias": torch.zeros(0),
               "model.layers.1.extra": torch.zeros(3, 0)}
    save_file(tensors, folder / "model.safetensors")
    ck = Checkpoint.open(folder)
    assert ck.get("model.layers.0.self_attn.q_proj.bias").shape == (0,)
    assert ck.get("model.layers.1.extra").shape == (3, 0)
    assert torch.equal(ck.get("lm_head.weight"), tensors["lm_head.weight"])


@pytest.mark.parametrize("index_text, match", [
    ('{"weight_map": {"lm_head.weight": "a.safetensors", "lm_head.weight": "b.safetensors"}}',
     "key 'lm_head.weight' appears twice"),
    ('{"metadata": {}}', "no 'weight_map' object"),
    ('{"weight_map": ["model.safetensors"]}', "no 'weight_map' object"),
    ('{"weight_map": {"lm_head.weight": "config.json"}}', "not a .safetensors file name"),
    ('{"weight_map": {"lm_head.weight": 7}}', "not a .safetensors file name"),
])
def test_a_malformed_shard_index_is_refused(tmp_path, index_text, match):
    folder = write_tiny_llama(tmp_path / "model")
    (folder / INDEX).write_text(index_text)
    refused(folder, match, folder / INDEX)
