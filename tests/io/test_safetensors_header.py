"""Every defect of a safetensors header is refused with one line naming the file."""

from __future__ import annotations

import json
import struct
import time

import pytest
import torch
from safetensors.torch import save_file

from vadasm.errors import VadasmError
from vadasm.io.safetensors_header import TensorEntry, read_header

GOOD = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]}}


def write_raw(path, header, data: bytes = bytes(22)):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def refused(path, match: str) -> str:
    with pytest.raises(VadasmError, match=match) as err:
        read_header(path)
    message = str(err.value)
    assert message.startswith(f"{path}:") and "\n" not in message
    return message


def with_a(**changes) -> dict:
    return {**GOOD, "a": {**GOOD["a"], **changes}}


def test_a_good_header_reads_as_entries(tmp_path):
    entries = read_header(write_raw(tmp_path / "m.safetensors", {**GOOD, "__metadata__": {"format": "pt"}}))
    assert entries == {"a": TensorEntry("F32", (2, 2), 0, 16), "b": TensorEntry("BF16", (3,), 16, 22)}


@pytest.mark.parametrize("header, match", [
    ([1, 2], "a JSON list, not an object"),
    (with_a(data_offsets=[-8, 16]), "data_offsets .* not two non-negative integers"),
    (with_a(data_offsets=["0", "16"]), "data_offsets .* not two non-negative integers"),
    (with_a(data_offsets=[0, 8, 16]), "data_offsets .* not two non-negative integers"),
    (with_a(data_offsets=[True, 16]), "data_offsets .* not two non-negative integers"),
    (with_a(shape=["2", 2]), "shape .* not a list of non-negative integers"),
    (with_a(shape=[-2, -2]), "shape .* not a list of non-negative integers"),
    (with_a(shape=4), "shape .* not a list of non-negative integers"),
    (with_a(shape=[2.0, 2]), "shape .* not a list of non-negative integers"),
    (with_a(dtype="Q7"), "unknown dtype 'Q7'"),
    (with_a(dtype=["F32"]), "unknown dtype"),
    (with_a(data_offsets=[16, 0]), "end before they begin"),
    (with_a(shape=[2, 3]), "holds 16 bytes but shape \\[2, 3\\] of F32 needs 24"),
    (with_a(data_offsets=[1000, 1016]), "truncated safetensors file .*ends at byte 1016"),
    ({"z": {"dtype": "U8", "shape": [6], "data_offsets": [16, 22]},
      "y": {"dtype": "BF16", "shape": [3], "data_offsets": [12, 18]}}, "'y' and 'z' overlap"),
    ({"a": GOOD["a"], "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, "'a' and 'b' overlap"),
    ({"a": {k: v for k, v in GOOD["a"].items() if k != "data_offsets"}}, "lacks data_offsets"),
    (with_a(offsets=[0, 16]), "has unknown keys 'offsets'"),
    ({"a": [0, 16]}, "header entry is not an object"),
    ({**GOOD, "__metadata__": {"format": ["pt"]}}, "__metadata__ must map strings to strings"),
    ({**GOOD, "__metadata__": "pt"}, "__metadata__ must map strings to strings"),
    (b"{not json", "corrupt safetensors header"),
    (b'{"a": "\xff\xfe"}', "not UTF-8"),
])
def test_malformed_headers_are_refused(tmp_path, header, match):
    refused(write_raw(tmp_path / "m.safetensors", header), match)


def test_a_tensor_name_given_twice_is_refused(tmp_path):
    raw = json.dumps(GOOD)[:-1] + ', "a": ' + json.dumps(GOOD["a"]) + "}"
    refused(write_raw(tmp_path / "m.safetensors", raw.encode()), "key 'a' appears twice")


def test_a_hostile_tensor_name_stays_on_one_line(tmp_path):
    header = {"evil\nname" + "x" * 500: {**GOOD["a"], "data_offsets": [1000, 1016]}}
    message = refused(write_raw(tmp_path / "m.safetensors", header), "tensor 'evil\\\\nnamex")
    assert len(message) < len(str(tmp_path)) + 200


def test_a_200k_deep_header_is_refused_quickly_without_recursion_error(tmp_path):
    path = write_raw(tmp_path / "m.safetensors", b"[" * 200_000 + b"]" * 200_000)
    started = time.perf_counter()
    refused(path, "nested 4\\+ levels deep")
    assert time.perf_counter() - started < 1.0


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    header = {"[[[[{{{{": GOOD["a"], "__metadata__": {"note": "]]]] \\\" [[[[[[ {{{{"}}
    assert set(read_header(write_raw(tmp_path / "m.safetensors", header, bytes(16)))) == {"[[[[{{{{"}


@pytest.mark.parametrize("length", [2**64 - 1, 10**6, 1])
def test_a_header_length_beyond_the_file_is_refused(tmp_path, length):
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", length) + b"{}" + bytes(8))
    refused(path, "corrupt or truncated safetensors header")


def test_a_file_shorter_than_the_length_field_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"\x01\x02")
    refused(path, "shorter than 8 bytes")


def test_zero_size_and_scalar_tensors_are_valid(tmp_path):
    tensors = {"empty": torch.zeros(0), "no_columns": torch.zeros(3, 0), "no_rows": torch.zeros(0, 5),
               "scalar": torch.tensor(1.5), "w": torch.ones(2)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, path)
    entries = read_header(path)
    assert {n: e.shape for n, e in entries.items()} == {n: tuple(t.shape) for n, t in tensors.items()}


@pytest.mark.parametrize("header, data, match", [
    ({"b": GOOD["b"]}, bytes(22), "starts at byte 16, the previous one ends at 0"),  # a tensor dropped
    (GOOD, bytes(30), "8 bytes after the last tensor belong to no tensor"),
])
def test_bytes_that_belong_to_no_tensor_are_refused_as_the_safetensors_library_does(tmp_path, header, data, match):
    refused(write_raw(tmp_path / "m.safetensors", header, data), match)
