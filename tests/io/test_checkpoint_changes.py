"""Fingerprints identify what was read; verify_unchanged refuses an input changed during a run."""

from __future__ import annotations

import os
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from tiny_checkpoints import tiny_llama_tensors, write_tiny_llama
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint


def changed(ck: Checkpoint, file) -> None:
    with pytest.raises(VadasmError) as err:
        ck.verify_unchanged()
    assert str(err.value) == f"{file}: changed while being read"


def overwrite_in_place(path, data: bytes) -> None:
    """Same file, same inode, new bytes, as an editor or a second job writing into it would."""
    with open(path, "r+b") as handle:
        handle.write(data)


def test_an_untouched_input_verifies(tmp_path):
    ck = Checkpoint.open(write_tiny_llama(tmp_path / "model", shards=2))
    ck.get("lm_head.weight")
    ck.verify_unchanged()


def test_a_weights_file_overwritten_in_place_is_caught(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    ck = Checkpoint.open(folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    overwrite_in_place(weights, data[:-4] + bytes(4))  # the last tensor's last value, header untouched
    os.utime(weights, ns=(ck._watched[weights].mtime_ns + 10**9,) * 2)  # the write's time, past any clock tick
    changed(ck, weights)


def test_a_header_rewritten_within_one_clock_tick_is_caught(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    ck = Checkpoint.open(folder)
    weights = folder / "model.safetensors"
    before = os.stat(weights)
    data = weights.read_bytes()
    overwrite_in_place(weights, data.replace(b'"format":"pt"', b'"format":"xx"', 1))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # as if the tick had not advanced
    changed(ck, weights)


def test_an_input_replaced_atomically_is_caught_and_reads_stay_on_the_opened_file(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    ck, twin = Checkpoint.open(folder), Checkpoint.open(folder)
    expected_print = twin.fingerprint()
    weights = folder / "model.safetensors"
    replacement = {name: tensor + 1 for name, tensor in tiny_llama_tensors().items()}
    save_file(replacement, folder / "new.tmp")
    os.replace(folder / "new.tmp", weights)
    assert torch.equal(ck.get("lm_head.weight"), tiny_llama_tensors()["lm_head.weight"])
    assert ck.fingerprint() == expected_print  # what was read, not what is there now
    assert Checkpoint.open(folder).fingerprint() != expected_print
    changed(ck, weights)


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors.index.json"])
def test_a_changed_config_index_or_sidecar_is_caught(tmp_path, name):
    folder = write_tiny_llama(tmp_path / "model", shards=2)
    (folder / "tokenizer.json").write_text('{"model": {}}')
    ck = Checkpoint.open(folder)
    time.sleep(0.02)  # past the file system's timestamp tick
    (folder / name).write_text((folder / name).read_text() + "\n")
    changed(ck, folder / name)


def test_a_deleted_input_is_caught(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    ck = Checkpoint.open(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(VadasmError, match="model.safetensors: changed while being read \\(it is gone\\)"):
        ck.verify_unchanged()


def test_fingerprint_is_equal_for_a_copy_and_differs_for_any_changed_tensor(tmp_path):
    folder = write_tiny_llama(tmp_path / "model")
    copy = shutil.copytree(folder, tmp_path / "copy")
    assert Checkpoint.open(copy).fingerprint() == Checkpoint.open(folder).fingerprint()
    prints = {Checkpoint.open(folder).fingerprint()}
    for name in sorted(tiny_llama_tensors()):
        tensors = load_file(folder / "model.safetensors")
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[-1] += 1  # the last value of one tensor
        save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
        prints.add(Checkpoint.open(copy).fingerprint())
    assert len(prints) == 1 + len(tiny_llama_tensors())


def test_fingerprint_reads_samples_not_the_whole_file(tmp_path, monkeypatch):
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    save_file({f"w{i}": torch.zeros(256, 1024) for i in range(16)}, folder / "model.safetensors")  # 16 MiB
    ck = Checkpoint.open(folder)
    read = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, at: read.append(len(data := real_pread(fd, n, at))) or data)
    ck.fingerprint()
    assert 3 << 20 <= sum(read) <= (3 << 20) + 16 * 4096
