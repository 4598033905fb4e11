import math

import torch

from vadasm.methods import linear_merge, slerp


def test_linear_merge_of_a_model_with_itself_is_that_model():
    t = torch.randn(6, 4)
    assert torch.allclose(linear_merge([t, t, t], [0.2, 0.3, 0.5]), t, atol=1e-6)


def test_linear_merge_weights_by_hand():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 4.0])
    assert torch.allclose(linear_merge([a, b], [1.0, 3.0], normalize=True), torch.tensor([0.25, 3.0]))
    assert torch.allclose(linear_merge([a, b], [1.0, 3.0], normalize=False), torch.tensor([1.0, 12.0]))


def test_slerp_endpoints_and_midpoint_on_orthogonal_vectors():
    v0, v1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert torch.allclose(slerp(0.0, v0, v1), v0, atol=1e-6)
    assert torch.allclose(slerp(1.0, v0, v1), v1, atol=1e-6)
    mid = slerp(0.5, v0, v1)
    assert torch.allclose(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]), atol=1e-6)
    assert torch.isclose(mid.norm(), torch.tensor(1.0))  # stays on the circle, unlike lerp (norm 0.707)


def test_slerp_falls_back_to_lerp_for_collinear_tensors():
    v0 = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(slerp(0.25, v0, 2 * v0), 0.75 * v0 + 0.25 * 2 * v0)
