"""Exact identities of the sigma blend on small random matrices."""

import pytest
import torch

from vadasm.blend import (
    blend_weights,
    blended_spectrum,
    interpolate_weights,
    sigma_shift,
    singular_values_fp32,
    svd_fp32,
)


def _pair(shape, seed=0, scale=0.05):
    gen = torch.Generator().manual_seed(seed)
    after = torch.randn(shape, generator=gen)
    before = after + scale * torch.randn(shape, generator=gen)
    return before, after


@pytest.mark.parametrize("shape", [(12, 7), (7, 12), (9, 9)])
def test_svd_reconstructs_and_wide_goes_through_transpose(shape):
    _, w = _pair(shape)
    svd = svd_fp32(w)
    r = min(shape)
    assert svd.U.shape == (shape[0], r) and svd.S.shape == (r,) and svd.Vh.shape == (r, shape[1])
    torch.testing.assert_close((svd.U * svd.S) @ svd.Vh, w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(svd.U.T @ svd.U, torch.eye(r), rtol=0, atol=1e-5)
    torch.testing.assert_close(singular_values_fp32(w), svd.S, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(12, 7), (7, 12)])
def test_alpha_one_is_after_bit_for_bit_and_alpha_zero_has_before_spectrum(shape):
    before, after = _pair(shape)
    after = after.to(torch.bfloat16)
    svd = svd_fp32(after)
    s_before = singular_values_fp32(before)
    shift = sigma_shift(svd, s_before)
    out = dict(blend_weights(after, shift, [0.0, 0.5, 1.0]))
    assert out[1.0] is after  # not recomputed: same dtype, same bits
    torch.testing.assert_close(out[0.0], (svd.U * s_before) @ svd.Vh, rtol=1e-5, atol=1e-5)
    for alpha in (0.0, 0.5):
        torch.testing.assert_close(torch.linalg.svdvals(out[alpha]), blended_spectrum(svd.S, s_before, alpha),
                                   rtol=1e-5, atol=1e-5)


def test_blending_a_weight_with_itself_changes_nothing():
    _, w = _pair((10, 6))
    svd = svd_fp32(w)
    assert sigma_shift(svd, svd.S.clone()) is None
    for _, out in blend_weights(w, None, [0.0, 0.3, 1.0]):
        assert torch.equal(out, w)


def test_rank_blends_only_the_top_singular_values():
    before, after = _pair((16, 10), scale=0.5)
    svd = svd_fp32(after)
    s_before = singular_values_fp32(before)
    k = 3
    out = dict(blend_weights(after, sigma_shift(svd, s_before, rank=k), [0.0]))[0.0]
    # In the after model's singular basis, the blended weight is diagonal with the blended spectrum.
    core = svd.U.T @ out @ svd.Vh.T
    expected = torch.cat([s_before[:k], svd.S[k:]])
    torch.testing.assert_close(torch.diagonal(core), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(core - torch.diag(torch.diagonal(core)), torch.zeros(10, 10), rtol=0, atol=1e-5)
    torch.testing.assert_close(blended_spectrum(svd.S, s_before, 0.0, rank=k), expected)


def test_alphas_are_linear_in_the_spectrum():
    before, after = _pair((8, 8), seed=3)
    svd = svd_fp32(after)
    s_before = singular_values_fp32(before)
    out = dict(blend_weights(after, sigma_shift(svd, s_before), [0.0, 0.25, 1.0]))
    torch.testing.assert_close(out[0.25], 0.25 * out[1.0] + 0.75 * out[0.0], rtol=1e-5, atol=1e-5)


def test_linear_path_is_exact_at_the_ends_and_linear_between():
    before, after = _pair((6, 4), seed=2)
    before16 = before.to(torch.bfloat16)
    out = dict(interpolate_weights(before16, after, [0.0, 0.5, 1.0]))
    assert out[0.0] is before16 and out[1.0] is after  # the tensors themselves, dtype and bits kept
    assert out[0.5].dtype == torch.float32
    torch.testing.assert_close(out[0.5], (before16.float() + after) / 2)
