import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vadasm.errors import VadasmError
from vadasm.io import Checkpoint, PlannedTensor, ShardedWriter, atomic_output_dir, parse_size


def test_checkpoint_reads_tensors_lazily_and_exactly(llama_trio):
    base, _, _ = llama_trio
    ck = Checkpoint.open(base)
    reference = load_file(base / "model.safetensors")
    assert set(ck.keys()) == set(reference)
    for name, tensor in reference.items():
        assert ck.shape(name) == tuple(tensor.shape)
        assert torch.equal(ck.get(name), tensor)


def test_sharded_writer_round_trip_and_index(tmp_path):
    tensors = {f"w{i}": torch.randn(10, 7).to(torch.bfloat16 if i % 2 else torch.float32) for i in range(5)}
    plan = [PlannedTensor(n, tuple(t.shape), t.dtype) for n, t in tensors.items()]
    writer = ShardedWriter(tmp_path, plan, max_shard_bytes=400)
    for name, tensor in tensors.items():
        writer.write(name, tensor)
    writer.close()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == len(writer.shard_names) > 1
    loaded = {}
    for shard in set(index["weight_map"].values()):
        loaded.update(load_file(tmp_path / shard))
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)
    # the folder reads back through Checkpoint via the index
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    assert torch.equal(Checkpoint.open(tmp_path).get("w3"), tensors["w3"])


def test_single_shard_is_named_like_transformers(tmp_path):
    plan = [PlannedTensor("a", (2,), torch.float32)]
    writer = ShardedWriter(tmp_path, plan)
    writer.write("a", torch.ones(2))
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("500MB") == 500 * 10**6
    with pytest.raises(VadasmError, match="cannot read size"):
        parse_size("lots")


def test_atomic_output_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_output_dir(out) as tmp:
        (tmp / "half.safetensors").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_dir_refuses_existing_without_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("old")
    (out / "vadasm_config.json").write_text("{}")  # an earlier vadasm output: --force may replace it
    with pytest.raises(VadasmError, match="already exists; pass --force"), atomic_output_dir(out):
        pass
    assert (out / "keep").read_text() == "old"
    with atomic_output_dir(out, force=True) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new"]


@pytest.mark.parametrize("defect, message", [
    ("missing_folder", "model folder not found"),
    ("missing_config", "config.json not found"),
    ("corrupt_config", "not valid JSON"),
    ("truncated", "truncated safetensors"),
    ("garbage", "corrupt or truncated safetensors header"),
    ("pickle", "pickle weights can run arbitrary code"),
    ("remote_code", "needs remote code"),
    ("no_weights", "no weights found"),
])
def test_bad_model_folders_give_one_clear_line(tmp_path, llama_trio, defect, message):
    base, _, _ = llama_trio
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((base / "config.json").read_text())
    weights = (base / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(weights)
    if defect == "missing_folder":
        bad = tmp_path / "nowhere" / "model"
    elif defect == "missing_config":
        (bad / "config.json").unlink()
    elif defect == "corrupt_config":
        (bad / "config.json").write_text("{not json")
    elif defect == "truncated":
        (bad / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    elif defect == "garbage":
        (bad / "model.safetensors").write_bytes(b"\xff" * 64)
    elif defect == "pickle":
        (bad / "model.safetensors").unlink()
        torch.save({"w": torch.ones(1)}, bad / "pytorch_model.bin")
    elif defect == "remote_code":
        config = json.loads((bad / "config.json").read_text())
        config["auto_map"] = {"AutoModel": "modeling_x.X"}
        (bad / "config.json").write_text(json.dumps(config))
    elif defect == "no_weights":
        (bad / "model.safetensors").unlink()
    with pytest.raises(VadasmError, match=message) as err:
        Checkpoint.open(bad)
    assert "\n" not in str(err.value)


def test_pickle_accepted_with_allow_pickle(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    torch.save({"w": torch.arange(3.0)}, tmp_path / "pytorch_model.bin")
    ck = Checkpoint.open(tmp_path, allow_pickle=True)
    assert torch.equal(ck.get("w"), torch.arange(3.0))


def test_nan_weights_are_refused_with_the_file_name(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    save_file({"w": torch.tensor([1.0, float("nan")])}, tmp_path / "model.safetensors")
    with pytest.raises(VadasmError, match=r"model.safetensors: tensor 'w' contains NaN or Inf"):
        Checkpoint.open(tmp_path).get_checked("w")


def test_fingerprint_differs_between_fine_tunes(llama_trio):
    base, ft1, ft2 = llama_trio
    prints = {Checkpoint.open(p).fingerprint() for p in (base, ft1, ft2)}
    assert len(prints) == 3
    assert Checkpoint.open(base).fingerprint() == Checkpoint.open(base).fingerprint()


def test_read_rows_matches_the_memory_mapped_tensor(tmp_path):
    tensors = {"m": torch.randn(9, 4, 3), "v": torch.randn(7).to(torch.bfloat16), "s": torch.tensor(2.5)}
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    ck = Checkpoint.open(tmp_path)
    assert torch.equal(ck.read_rows("m", 0, 9), tensors["m"])
    assert torch.equal(ck.read_rows("m", 2, 5), tensors["m"][2:5])
    assert torch.equal(ck.read_rows("v", 3, 7), tensors["v"][3:7])
    assert torch.equal(ck.read_rows("s", 0, 1), tensors["s"])


def test_writer_takes_a_tensor_in_row_chunks(tmp_path):
    tensors = {"a": torch.randn(5, 3), "b": torch.randn(8, 2).to(torch.bfloat16), "c": torch.randn(4)}
    plan = [PlannedTensor(n, tuple(t.shape), t.dtype) for n, t in tensors.items()]
    writer = ShardedWriter(tmp_path, plan, max_shard_bytes=40)
    writer.write("a", tensors["a"])
    for start, stop in ((0, 3), (3, 4), (4, 8)):
        writer.write_rows("b", tensors["b"][start:stop])
    with pytest.raises(RuntimeError):
        writer.write_rows("c", torch.randn(5))  # more rows than planned
    writer.write_rows("c", tensors["c"][:1])
    writer.write_rows("c", tensors["c"][1:])
    writer.close()
    loaded = {}
    for shard in writer.shard_names:
        loaded.update(load_file(tmp_path / shard))
    assert all(torch.equal(loaded[n], t) for n, t in tensors.items())


def test_a_queued_write_that_fails_is_raised_naming_the_shard(tmp_path, monkeypatch):
    """Small writes run on the background thread; its OS error (full disk) reaches the caller at its next
    wait (here: close), as an OSError naming the shard, and nothing after it is reported written."""
    import errno

    from vadasm.io import writer as writer_module

    monkeypatch.setattr(writer_module, "WRITE_AHEAD_BYTES", 1 << 20)
    plan = [PlannedTensor("a", (4, 3), torch.float32)]
    writer = ShardedWriter(tmp_path, plan)

    class FullDisk:
        def __init__(self, file):
            self.file = file

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")  # as a write on an open file: no name

        def close(self):
            self.file.close()

    writer.write_rows("a", torch.zeros(1, 3))  # opens the shard (header written synchronously)
    real_file, writer._file = writer._file, FullDisk(writer._file)
    writer.write_rows("a", torch.zeros(3, 3))  # queued: the error is not raised yet
    with pytest.raises(OSError) as raised:
        writer.close()
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "model.safetensors")
    real_file.close()


def test_small_writes_are_queued_and_large_ones_written_at_once(tmp_path, monkeypatch):
    from vadasm.io import writer as writer_module

    monkeypatch.setattr(writer_module, "WRITE_AHEAD_BYTES", 64)
    plan = [PlannedTensor("a", (4, 4), torch.float32), PlannedTensor("b", (4, 8), torch.float32)]
    writer = ShardedWriter(tmp_path, plan)
    for _ in range(4):
        writer.write_rows("a", torch.ones(1, 4))  # 16 bytes each: queued, 64 bytes in all at most
        assert writer._queued_bytes <= 64
    writer.write("b", torch.full((4, 8), 2.0))  # 128 bytes: every queued write done first, then this one
    assert not writer._queued
    writer.close()
    loaded = load_file(tmp_path / "model.safetensors")
    assert torch.equal(loaded["a"], torch.ones(4, 4)) and torch.equal(loaded["b"], torch.full((4, 8), 2.0))
