"""Principal angles, Procrustes rotations and their composition on constructed examples."""

import math

import torch

from vadasm.blend import composition_error, measure_chain, principal_angles, procrustes_rotation, svd_fp32
from vadasm.blend.rotation_math import null_step


def _orthonormal(m, k, seed=0):
    q, _ = torch.linalg.qr(torch.randn(m, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_angles_zero_for_same_subspace_and_ninety_for_orthogonal():
    q = _orthonormal(10, 6)
    same = q[:, :3] @ _orthonormal(3, 3, seed=1)  # another basis of the same span
    assert principal_angles(q[:, :3], same, 3).abs().max() < 1e-7
    angles = principal_angles(q[:, :3], q[:, 3:6], 3)
    torch.testing.assert_close(angles, torch.full((3,), math.pi / 2, dtype=torch.float64))


def test_known_angle_is_recovered():
    q = _orthonormal(8, 3)
    theta = 0.3
    turned = torch.stack([math.cos(theta) * q[:, 0] + math.sin(theta) * q[:, 2], q[:, 1]], dim=1)
    angles = principal_angles(q[:, :2], turned, 2)
    torch.testing.assert_close(angles, torch.tensor([0.0, theta], dtype=torch.float64), rtol=0, atol=1e-9)


def test_procrustes_recovers_a_rotation_and_composes_inside_a_subspace():
    a = _orthonormal(12, 4)
    r1, r2 = _orthonormal(4, 4, seed=2), _orthonormal(4, 4, seed=3)
    b, c = a @ r1, a @ r1 @ r2
    torch.testing.assert_close(procrustes_rotation(a, b, 4), r1)
    err = composition_error(procrustes_rotation(a, b, 4), procrustes_rotation(b, c, 4), procrustes_rotation(a, c, 4))
    assert err < 1e-10


def test_self_chain_is_zero_and_null_chain_is_not():
    w = torch.randn(24, 16, generator=torch.Generator().manual_seed(0))
    chain = [w, w.clone(), w.clone()]
    for m in measure_chain([svd_fp32(x) for x in chain], chain, k=4):
        assert m.angle_left_max_deg < 1e-3 and m.angle_right_max_deg < 1e-3
        assert m.spectrum_rel_change == 0 and m.delta_rel_norm == 0
        assert m.compose_err_left is None or m.compose_err_left < 1e-5
    gen = torch.Generator().manual_seed(1)
    n1 = null_step(w, 0.3 * float(torch.linalg.matrix_norm(w)), gen)
    torch.testing.assert_close(float(torch.linalg.matrix_norm(n1 - w)), 0.3 * float(torch.linalg.matrix_norm(w)))
    n2 = null_step(n1, 0.3 * float(torch.linalg.matrix_norm(w)), gen)
    null = [w, n1, n2]
    measures = measure_chain([svd_fp32(x) for x in null], null, k=4)
    assert all(m.angle_left_mean_deg > 1 for m in measures)
    assert measures[1].compose_err_left > 1e-3  # pair (0, 2) carries the composition error
