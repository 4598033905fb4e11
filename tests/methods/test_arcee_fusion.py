"""Arcee Fusion: importance, outlier threshold, mask."""

import torch

from vadasm.methods import arcee_fusion
from vadasm.methods.arcee_fusion import approximate_quantiles, fusion_importance


def test_only_the_outlier_change_is_kept():
    base = torch.zeros(1, 8)
    other = torch.tensor([[0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 5.0]])
    # one row: importance = |diff| * KL (one positive number), sorted indices 1, 3, 5 give
    # q1 = 0.02k, median = 0.04k, q3 = 0.06k, threshold 0.04k + 1.5 * 0.04k = 0.1k: only 5.0 passes
    assert (fusion_importance(other, base) > 0).all()
    expected = torch.tensor([[0.0] * 7 + [5.0]])
    assert torch.equal(arcee_fusion(base, other), expected)


def test_quantiles_read_the_sorted_values_at_floor_of_q_times_n_minus_1():
    values = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])
    assert approximate_quantiles(values, torch.tensor([0.25, 0.5, 0.75, 1.0])).tolist() == [2.0, 3.0, 4.0, 5.0]


def test_equal_inputs_give_the_base_and_every_entry_is_base_or_other():
    torch.manual_seed(0)
    base, other = torch.randn(16, 8), torch.randn(16, 8)
    assert torch.equal(arcee_fusion(base, base.clone()), base)
    merged = arcee_fusion(base, other)
    kept = (merged - other).abs() < 1e-6  # base + (other - base) rounds to within an ulp of other
    assert (kept | (merged == base)).all()
    assert 0 < kept.sum() < merged.numel()


def test_large_tensors_sample_their_quantiles_reproducibly():
    values = torch.rand(1_000_001, generator=torch.Generator().manual_seed(0))
    q = torch.tensor([0.25, 0.5, 0.75])
    first = approximate_quantiles(values, q, torch.Generator().manual_seed(3))
    again = approximate_quantiles(values, q, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert torch.allclose(first, q, atol=0.01)  # uniform values: sampled quartiles near 0.25/0.5/0.75
