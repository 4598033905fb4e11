"""The shared writing steps: natural order, per-tensor seeds, the config dtype rule, one provenance schema."""

from __future__ import annotations

import json

import pytest
import torch

from tiny_checkpoints import write_tiny_llama
from vadasm.io import Checkpoint, PlannedTensor
from vadasm.io.provenance import (
    PROVENANCE_FILE,
    input_records,
    natural_key,
    provenance_record,
    set_config_dtype,
    set_plan_dtype,
    tensor_seed,
    write_provenance,
)
from vadasm.version import __version__


def test_natural_key_orders_layer_numbers_as_numbers():
    names = ["layers.10.w", "layers.2.w", "embed", "layers.1.w"]
    assert sorted(names, key=natural_key) == ["embed", "layers.1.w", "layers.2.w", "layers.10.w"]


def test_tensor_seed_is_the_recorded_formula_and_depends_on_name_and_seed():
    # crc32(b"a") = 0xE8B7BE43 = 3904355907, checked by hand with zlib
    assert tensor_seed(0, "a") == 3904355907
    assert tensor_seed(1, "a") == 1_000_003 + 3904355907
    assert tensor_seed(0, "b") != tensor_seed(0, "a")
    assert 0 <= tensor_seed(2**62, "a") < 2**63


@pytest.mark.parametrize(("config", "key"), [
    ({"dtype": "float32"}, "dtype"),
    ({"torch_dtype": "float32"}, "torch_dtype"),
    ({"dtype": "float32", "torch_dtype": "float32"}, "dtype"),
    ({}, "dtype"),
])
def test_config_dtype_goes_under_the_key_the_config_uses(config, key):
    before = dict(config)
    set_config_dtype(config, torch.bfloat16)
    assert config == {**before, key: "bfloat16"}


def test_plan_dtype_is_recorded_only_when_the_floating_tensors_share_one():
    one = {"dtype": "float32"}
    set_plan_dtype(one, [PlannedTensor("a", (2,), torch.float16), PlannedTensor("ids", (2,), torch.int64)])
    assert one == {"dtype": "float16"}
    mixed = {"dtype": "float32"}
    set_plan_dtype(mixed, [PlannedTensor("a", (2,), torch.float16), PlannedTensor("b", (2,), torch.bfloat16)])
    assert mixed == {"dtype": "float32"}


def test_provenance_record_leads_with_tool_version_kind_and_keeps_field_order():
    record = provenance_record("blend", inputs={"before": "x"}, recipe={"alpha": 0.5})
    assert list(record) == ["tool", "version", "kind", "inputs", "recipe"]
    assert record["tool"] == "vadasm" and record["version"] == __version__ and record["kind"] == "blend"
    with pytest.raises(ValueError, match="version"):
        provenance_record("merge", version="0")


def test_input_records_and_written_file(tmp_path):
    checkpoint = Checkpoint.open(write_tiny_llama(tmp_path / "model"))
    records = input_records([checkpoint])
    assert records == [{"path": str(checkpoint.path), "fingerprint": checkpoint.fingerprint()}]
    write_provenance(tmp_path, provenance_record("align", inputs=records, where=tmp_path))
    text = (tmp_path / PROVENANCE_FILE).read_text()
    assert text.endswith("}\n") and json.loads(text)["where"] == str(tmp_path)  # a Path is written as text
