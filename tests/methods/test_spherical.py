"""NuSLERP, Multi-SLERP and the Karcher mean on small hand-checked tensors."""

import math

import pytest
import torch

from vadasm.errors import VadasmError
from vadasm.methods import karcher_mean, multislerp, nuslerp, nuslerp_merge

H = math.sqrt(0.5)


def test_nuslerp_t_comes_from_the_weights():
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert torch.allclose(nuslerp_merge(None, [e0, e1], [1.0, 1.0]), torch.tensor([H, H]))
    assert torch.allclose(nuslerp_merge(None, [e0, e1], [2.0, 0.0]), e0, atol=1e-6)
    assert torch.allclose(nuslerp_merge(None, [e0, e1], [0.0, 3.0]), e1, atol=1e-6)
    # weights summing to ~0 give the midpoint, as in mergekit
    assert torch.allclose(nuslerp_merge(None, [e0, e1], [1.0, -1.0]), torch.tensor([H, H]))


def test_nuslerp_with_a_base_interpolates_the_deltas():
    base = torch.tensor([1.0, 1.0])
    merged = nuslerp_merge(base, [torch.tensor([2.0, 1.0]), torch.tensor([1.0, 2.0])], [0.5, 0.5])
    assert torch.allclose(merged, torch.tensor([1 + H, 1 + H]))


def test_nuslerp_per_row_and_per_column():
    v0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    v1 = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    # rows: [1,0]->[0,1] and [0,2]->[2,0], each a quarter circle, midpoints at their own lengths
    rows = nuslerp_merge(None, [v0, v1], [1.0, 1.0], flatten=False)
    assert torch.allclose(rows, torch.tensor([[H, H], [2 * H, 2 * H]]))
    # row_wise (mergekit's name): vectors along dim 0, i.e. columns [1,0]->[0,2] and [0,2]->[1,0]
    cols = nuslerp_merge(None, [v0, v1], [1.0, 1.0], flatten=False, row_wise=True)
    # column 0: from [1,0] to [0,2] (orthogonal): sin(pi/4)/sin(pi/2) * (v0 + v1)
    assert torch.allclose(cols[:, 0], torch.tensor([H, 2 * H]))
    assert torch.allclose(cols[:, 1], torch.tensor([H, 2 * H]))
    # flatten (the default) wins over row_wise
    flat = nuslerp_merge(None, [v0, v1], [1.0, 3.0], row_wise=True)
    assert torch.allclose(flat, nuslerp(0.75, v0.reshape(-1), v1.reshape(-1)).reshape(2, 2))


def test_nuslerp_collinear_inputs_fall_back_to_lerp():
    v = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(nuslerp(0.25, v, 2 * v), 0.75 * v + 0.5 * v)


def test_multislerp_of_two_orthogonal_vectors_is_the_slerp_midpoint():
    merged = multislerp(None, [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])], [1.0, 1.0])
    assert torch.allclose(merged, torch.tensor([H, H]), atol=1e-6)


def test_multislerp_keeps_the_weighted_mean_length_and_equal_inputs():
    torch.manual_seed(0)
    xs = [torch.randn(5, 4) for _ in range(3)]
    weights = [0.2, 0.3, 0.5]
    merged = multislerp(None, xs, weights)
    mean_length = sum(w * x.norm() for w, x in zip(weights, xs))
    assert torch.isclose(merged.norm(), mean_length, rtol=1e-5)
    assert torch.allclose(multislerp(None, [xs[0]] * 3, weights), xs[0], atol=1e-5)
    base = torch.randn(5, 4)
    assert torch.allclose(multislerp(base, [xs[1]], [0.7]), xs[1])  # one model: that model


def test_multislerp_antipodal_pair_is_linear_and_balanced_triples_or_zero_weights_are_refused():
    a = torch.tensor([1.0, 0.0])
    assert torch.allclose(multislerp(None, [a, -a], [1.0, 1.0]), torch.zeros(2))
    with pytest.raises(VadasmError, match="directions is zero"):
        multislerp(None, [a, -a, a, -a], [1.0, 1.0, 1.0, 1.0])
    with pytest.raises(VadasmError, match="sum to zero"):
        multislerp(None, [a, a], [1.0, -1.0])


def test_karcher_mean_by_hand():
    merged = karcher_mean([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])], [0.5, 0.5])
    # direction: the geodesic midpoint; length: the mean length 2
    assert torch.allclose(merged, torch.tensor([2 * H, 2 * H]), atol=1e-5)
    x = torch.randn(3, 3)
    assert torch.allclose(karcher_mean([x, x, x], [1 / 3] * 3), x, atol=1e-5)
    assert torch.equal(karcher_mean([torch.zeros(3), torch.zeros(3)], [0.5, 0.5]), torch.zeros(3))


def test_karcher_leaves_near_zero_inputs_out_of_the_direction():
    merged = karcher_mean([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1e-7])], [0.5, 0.5])
    assert torch.allclose(merged, torch.tensor([0.5, 0.0]), atol=1e-6)


def test_karcher_of_three_directions_is_equidistant_from_them():
    xs = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])]
    merged = karcher_mean(xs, [1 / 3] * 3, max_iter=50)
    assert torch.allclose(merged, torch.full((3,), 1 / math.sqrt(3)), atol=1e-5)


def test_the_registered_methods_refuse_missing_weights():
    from vadasm.methods import get_method

    a, b = torch.ones(2), torch.zeros(2)
    for name, extra in (("nuslerp", dict(nuslerp_row_wise=False, nuslerp_flatten=True)),
                        ("multislerp", dict(normalize_weights=True, eps=1e-8))):
        with pytest.raises(VadasmError, match="needs a 'weight' for every model"):
            get_method(name).func(None, [a, b], weight=[1.0, None], **extra)
