import math

import pytest
import torch

from vadasm.moe.gates import (
    centred,
    cheap_embedding,
    gate_rows,
    pooled_hidden_states,
    prompt_gate_rows,
    random_gates,
    unit_rows,
)


def test_unit_rows_scales_each_row_and_keeps_zero_rows():
    rows = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    torch.testing.assert_close(unit_rows(rows), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))


def test_cheap_embedding_sums_unmasked_tokens_then_normalises():
    embed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    batch = {"input_ids": torch.tensor([[2, 0, 1], [2, 2, 0]]), "attention_mask": torch.tensor([[0, 1, 1], [0, 0, 1]])}
    # unmasked: tokens 0, 1 (first prompt) and 0 (second): sum (2, 1)
    torch.testing.assert_close(cheap_embedding(embed, batch), torch.tensor([2.0, 1.0]) / math.sqrt(5))


def test_pooled_hidden_states_last_position_or_mean_then_batch_mean():
    layer = torch.tensor([[[1.0, 0.0], [3.0, 2.0]], [[0.0, 0.0], [5.0, 4.0]]])  # [batch 2, seq 2, hidden 2]
    torch.testing.assert_close(pooled_hidden_states([layer], "last"), torch.tensor([[4.0, 3.0]]))
    torch.testing.assert_close(pooled_hidden_states([layer], "mean"), torch.tensor([[2.25, 1.5]]))


def test_gate_rows_subtract_negative_then_normalise():
    positive, negative = torch.tensor([[2.0, 1.0]]), torch.tensor([[2.0, -1.0]])
    torch.testing.assert_close(gate_rows(positive, negative), torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(gate_rows(positive, None, normalise=False), positive)


def test_centred_removes_the_mean_over_experts():
    rows = torch.tensor([[[1.0, 2.0], [3.0, 6.0]]])  # [layers 1, experts 2, hidden 2]
    torch.testing.assert_close(centred(rows), torch.tensor([[[-1.0, -2.0], [1.0, 2.0]]]))


def test_random_gates_are_seeded_and_uniform_ones_bounded():
    assert torch.equal(random_gates(2, 3, 8, seed=5), random_gates(2, 3, 8, seed=5))
    assert not torch.equal(random_gates(2, 3, 8, seed=5), random_gates(2, 3, 8, seed=6))
    uniform = random_gates(2, 3, 16, seed=0, uniform=True)
    assert uniform.shape == (2, 3, 16) and float(uniform.abs().max()) <= 0.25


def test_router_input_rows_are_centred_over_routed_experts_only():
    signals = {"a": torch.tensor([[1.0, 0.0]]), "b": torch.tensor([[3.0, 0.0]]), "s": torch.tensor([[0.0, 2.0]])}
    rows = prompt_gate_rows(lambda batches: signals[batches[0]], [(["a"], []), (["b"], []), (["s"], [])],
                            "router_input", routed=2)
    torch.testing.assert_close(rows, torch.tensor([[[-1.0, 0.0], [1.0, 0.0], [0.0, 2.0]]]))
    hidden = prompt_gate_rows(lambda batches: signals[batches[0]], [(["b"], ["a"])], "hidden", routed=1)
    torch.testing.assert_close(hidden, torch.tensor([[[1.0, 0.0]]]))


@pytest.mark.parametrize("mode", ["hidden", "router_input"])
def test_signal_of_prompts_has_one_row_per_layer(tmp_path, mode):
    from pico_models import make_text_model
    from vadasm.moe.gates import signal_function

    model = make_text_model(tmp_path / "m", "llama")
    batch = {"input_ids": torch.tensor([[1, 5, 6]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    signal = signal_function(mode, model)([batch])
    assert signal.shape == (2, 32) and torch.isfinite(signal).all() and float(signal.norm()) > 0
