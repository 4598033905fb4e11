"""NearSwap on hand-checked entries."""

import torch

from vadasm.methods import nearswap


def test_nearswap_by_hand():
    base = torch.zeros(3)
    other = torch.tensor([0.05, 0.2, -1.0])
    # weights: 0.1/0.05 -> 1 (swapped), 0.1/0.2 = 0.5, 0.1/1 = 0.1
    assert torch.allclose(nearswap(0.1, base, other), torch.tensor([0.05, 0.1, -0.1]))


def test_nearswap_t_zero_is_the_base_and_equal_inputs_are_unchanged():
    torch.manual_seed(0)
    base, other = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.equal(nearswap(0.0, base, other), base)
    assert torch.equal(nearswap(0.3, base, base.clone()), base)
    assert torch.allclose(nearswap(1e9, base, other), other)  # huge t swaps everything
