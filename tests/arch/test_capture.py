"""The shared forward-hook capture: what it hands over, and that it always cleans up."""

import pytest
import torch

from vadasm.arch.capture import capture_inputs, flat_input


def test_flat_input_rows_are_tokens_in_float32() -> None:
    x = torch.arange(12, dtype=torch.bfloat16).reshape(2, 3, 2)
    rows = flat_input(x)
    assert rows.dtype == torch.float32
    assert rows.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]


def test_records_each_module_input_with_its_key() -> None:
    torch.manual_seed(0)
    first, second = torch.nn.Linear(2, 3), torch.nn.Linear(3, 1)
    model = torch.nn.Sequential(first, second)
    x = torch.randn(4, 5, 2)
    seen: list[tuple[str, torch.nn.Module, torch.Tensor]] = []
    with capture_inputs({"a": first, "b": second}, lambda key, mod, rows: seen.append((key, mod, rows))):
        model(x)
    assert [(key, mod) for key, mod, _ in seen] == [("a", first), ("b", second)]
    assert torch.equal(seen[0][2], x.reshape(20, 2))
    assert torch.equal(seen[1][2], first(x).reshape(20, 3))


def test_hooks_are_removed_even_when_the_forward_fails() -> None:
    layer = torch.nn.Linear(2, 2)
    seen: list[str] = []
    with pytest.raises(RuntimeError), capture_inputs({"l": layer}, lambda key, _mod, _rows: seen.append(key)):
        layer(torch.zeros(1, 2))
        layer(torch.zeros(1, 5))  # wrong width: the forward fails after the hook ran
    assert seen == ["l", "l"]
    layer(torch.zeros(1, 2))
    assert seen == ["l", "l"] and not layer._forward_pre_hooks
