"""Two-pass streamed merges (model_stock, della, della_linear) equal the whole-tensor functions bit for bit."""

import importlib

import pytest
import torch

from vadasm.merge.tensors import tensor_generators
from vadasm.merge.two_pass import merge_two_pass, streams_in_two_passes
from vadasm.methods import get_method

model_stock_module = importlib.import_module("vadasm.methods.model_stock")
sparsify = importlib.import_module("vadasm.methods.sparsify")
two_pass = importlib.import_module("vadasm.merge.two_pass")

PARAMS = {
    "model_stock": lambda n: {"filter_wise": False, "weight": [1.0] * n},
    "della": lambda n: {"weight": [0.5, 0.3, 0.2][:n], "density": [0.5, 0.4, 1.0][:n], "epsilon": [0.1, 0.2, 0.1][:n],
                        "normalize": True, "rescale": True, "lambda": 1.0, "int8_mask": False},
    "della_linear": lambda n: {"weight": [0.5, 0.3, 0.2][:n], "density": [0.5, 1.0, 0.7][:n],
                               "epsilon": [0.1, 0.0, 0.05][:n], "normalize": False, "rescale": False,
                               "lambda": 0.8, "int8_mask": False},
}


def streamed(method_name, base, tensors, params, seed=7):
    """merge_two_pass over in-memory tensors, the written chunks concatenated; also returns the reads."""
    method, reads, written = get_method(method_name), [], []

    def read(rows, check):
        reads.append((rows, check))
        return base[rows[0]:rows[1]], [t[rows[0]:rows[1]] for t in tensors]

    merge_two_pass(method, tuple(base.shape), params, tensor_generators(seed, "w", len(tensors), "cpu"), read,
                   written.append, models=len(tensors))
    return torch.cat(written), reads


@pytest.mark.parametrize("keep", [True, False], ids=["chunks kept", "read twice"])
@pytest.mark.parametrize("method_name", ["model_stock", "della", "della_linear"])
@pytest.mark.parametrize("shape", [(50, 9), (7, 5, 6), (40,)])
def test_streamed_equals_whole(monkeypatch, method_name, shape, keep):
    monkeypatch.setattr(two_pass, "KEEP_BYTES", 1 << 30 if keep else 0)
    monkeypatch.setattr(model_stock_module, "CHUNK_ELEMENTS", 20)  # several chunks of whole rows
    monkeypatch.setattr(sparsify, "_CHUNK_ELEMENTS", 20)
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(shape, generator=gen)
    tensors = [base + 0.1 * torch.randn(shape, generator=gen) + 0.02 * i for i in range(3)]
    params = PARAMS[method_name](3)
    method = get_method(method_name)
    whole = method.func(base, tensors, **params, generator=tensor_generators(7, "w", 3, "cpu"))
    out, reads = streamed(method_name, base, tensors, params)
    assert torch.equal(out, whole)
    one_chunk = len(shape) == 1 and method_name != "model_stock"  # a 1-D tensor is one DELLA row
    if keep:  # each chunk read once, checked for NaN/Inf, and kept for the second pass
        assert len(reads) == 1 if one_chunk else len(reads) > 1
        assert all(check for _, check in reads)
    else:
        assert len(reads) == 2 if one_chunk else len(reads) > 2
        assert [check for _, check in reads] == [True] * (len(reads) // 2) + [False] * (len(reads) // 2)


def test_filter_wise_model_stock_streams_one_angle_per_row(monkeypatch):
    monkeypatch.setattr(model_stock_module, "CHUNK_ELEMENTS", 16)
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(12, 8, generator=gen)
    tensors = [base + torch.randn(12, 8, generator=gen) * s for s in (0.1, 0.3)]
    params = {"filter_wise": True, "weight": [1.0, 1.0]}
    out, _ = streamed("model_stock", base, tensors, params)
    assert torch.equal(out, model_stock_module.model_stock(base, tensors, filter_wise=True))


def test_della_streamed_mask_is_seeded():
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(30, 16, generator=gen)
    tensors = [base + torch.randn(30, 16, generator=gen) for _ in range(2)]
    first, _ = streamed("della", base, tensors, PARAMS["della"](2), seed=1)
    again, _ = streamed("della", base, tensors, PARAMS["della"](2), seed=1)
    other, _ = streamed("della", base, tensors, PARAMS["della"](2), seed=2)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_which_tensors_stream(monkeypatch):
    monkeypatch.setattr(importlib.import_module("vadasm.merge.two_pass"), "CHUNK_ELEMENTS", 10)
    assert streams_in_two_passes("model_stock", (4, 4)) and streams_in_two_passes("della", (100,))
    assert not streams_in_two_passes("model_stock", (100,))  # one filter_wise vector: merged whole
    assert not streams_in_two_passes("ties", (4, 4)) and not streams_in_two_passes("della", ())
