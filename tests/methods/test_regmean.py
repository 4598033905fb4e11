import pytest
import torch

from vadasm.errors import VadasmError
from vadasm.methods import get_method
from vadasm.methods.registry import method_names
from vadasm.methods.regmean import regmean, regmean_or_average, shrink_gram


def gram(x: torch.Tensor) -> torch.Tensor:
    return x.T @ x / x.shape[0]


def regression_loss(w, xs, ws, scales=(1.0, 1.0)):
    return sum(s * ((x @ w.T - x @ wi.T) ** 2).sum() / x.shape[0] for x, wi, s in zip(xs, ws, scales))


def test_one_model_gives_its_own_weight():
    w, x = torch.randn(4, 6), torch.randn(30, 6)
    assert torch.allclose(regmean([w], [gram(x)], alpha=1.0), w, atol=1e-6)


def test_equal_grams_give_the_weighted_average():
    w1, w2, g = torch.randn(4, 6), torch.randn(4, 6), gram(torch.randn(30, 6))
    out = regmean([w1, w2], [g, g], model_weight=[1.0, 3.0], alpha=0.7)
    assert torch.allclose(out, (w1 + 3 * w2) / 4, atol=1e-6)


def test_exact_regmean_is_least_squares_on_the_stacked_inputs():
    torch.manual_seed(0)
    w1, w2, x1, x2 = torch.randn(5, 8), torch.randn(5, 8), torch.randn(40, 8), torch.randn(25, 8)
    out = regmean([w1, w2], [gram(x1), gram(x2)], alpha=1.0)
    # Same objective as a plain least squares fit of both models' outputs (rows scaled by 1/sqrt(n)).
    inputs = torch.cat([x1 / 40 ** 0.5, x2 / 25 ** 0.5]).double()
    targets = torch.cat([x1 @ w1.T / 40 ** 0.5, x2 @ w2.T / 25 ** 0.5]).double()
    expected = torch.linalg.lstsq(inputs, targets).solution.T
    assert torch.allclose(out.double(), expected, atol=1e-5)


def test_models_with_disjoint_inputs_each_keep_their_behaviour():
    # Model 1 only ever sees the first 3 features, model 2 the last 3: one weight serves both exactly,
    # where the average (or task arithmetic over a base) serves neither.
    torch.manual_seed(1)
    w1, w2 = torch.randn(4, 6), torch.randn(4, 6)
    x1 = torch.cat([torch.randn(20, 3), torch.zeros(20, 3)], 1)
    x2 = torch.cat([torch.zeros(20, 3), torch.randn(20, 3)], 1)
    out = regmean([w1, w2], [gram(x1), gram(x2)], alpha=0.5)
    assert torch.allclose(x1 @ out.T, x1 @ w1.T, atol=1e-5)
    assert torch.allclose(x2 @ out.T, x2 @ w2.T, atol=1e-5)
    assert not torch.allclose(x1 @ ((w1 + w2) / 2).T, x1 @ w1.T, atol=1e-2)


def test_regmean_never_loses_to_task_arithmetic_on_its_own_objective():
    torch.manual_seed(2)
    base = torch.randn(6, 10)
    w1, w2 = base + 0.3 * torch.randn(6, 10), base + 0.3 * torch.randn(6, 10)
    x1, x2 = torch.randn(50, 10) @ torch.randn(10, 10), torch.randn(50, 10)
    for scales in ((1.0, 1.0), (1.0, 10.0)):
        out = regmean([w1, w2], [gram(x1), gram(x2)], model_weight=scales, alpha=1.0)
        task_arithmetic = base + (w1 - base) + (w2 - base)
        assert regression_loss(out, (x1, x2), (w1, w2), scales) <= regression_loss(
            task_arithmetic, (x1, x2), (w1, w2), scales) + 1e-6


def test_a_larger_model_weight_pulls_towards_that_model_on_its_inputs():
    torch.manual_seed(3)
    w1, w2, x1, x2 = torch.randn(4, 6), torch.randn(4, 6), torch.randn(30, 6), torch.randn(30, 6)
    errors = [((x2 @ regmean([w1, w2], [gram(x1), gram(x2)], model_weight=[1.0, s]).T - x2 @ w2.T) ** 2).sum()
              for s in (1.0, 10.0, 100.0)]
    assert errors[0] > errors[1] > errors[2]


def test_shrink_gram_scales_only_the_off_diagonal():
    g = torch.tensor([[4.0, 2.0], [2.0, 9.0]])
    assert torch.equal(shrink_gram(g, 0.0), torch.diag(torch.tensor([4.0, 9.0])))
    assert torch.equal(shrink_gram(g, 0.5), torch.tensor([[4.0, 1.0], [1.0, 9.0]]))
    with pytest.raises(ValueError):
        shrink_gram(g, 1.5)


def test_mismatched_gram_is_refused():
    with pytest.raises(ValueError, match="do not match"):
        regmean([torch.randn(4, 6)], [torch.eye(5)])


def test_hand_checked_exact_and_per_feature_cases():
    # Each model sees one feature: the merged row takes feature 1 from model 1 and feature 2 from model 2.
    out = regmean([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])],
                  [torch.diag(torch.tensor([1.0, 0.0])), torch.diag(torch.tensor([0.0, 1.0]))], alpha=1.0)
    assert torch.allclose(out, torch.tensor([[1.0, 1.0]]))
    # alpha 0 keeps only the diagonals (4, 1) and (1, 1): per feature (4*1 + 1*3) / 5 and (1*1 + 1*3) / 2.
    out = regmean([torch.tensor([[1.0, 1.0]]), torch.tensor([[3.0, 3.0]])],
                  [torch.tensor([[4.0, 2.0], [2.0, 1.0]]), torch.eye(2)], alpha=0.0)
    assert torch.allclose(out, torch.tensor([[7 / 5, 2.0]]))


def test_tensors_without_grams_are_the_weighted_average():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.allclose(regmean_or_average([a, b], None, [1.0, 3.0], alpha=0.9), (a + 3 * b) / 4, atol=1e-6)


def test_registered_as_a_data_aware_method_with_the_grafts_alpha():
    method = get_method("regmean")
    assert method.needs_data and method.base_is_input and not method.needs_base and not method.rows_independent
    assert method.global_params == {"alpha": 0.9, "calibration_samples": 128}
    assert method_names(needs_data=True) == ["regmean"]
    with pytest.raises(ValueError, match="'weight' must be > 0"):
        method.param("weight").check(0.0)


def test_singular_grams_are_one_line_naming_alpha():
    method = get_method("regmean")
    zeros = [torch.zeros(2, 2), torch.zeros(2, 2)]
    with pytest.raises(VadasmError, match=r"singular matrix .*alpha 1.0"):
        method.func(None, [torch.ones(3, 2), torch.ones(3, 2)], weight=[1.0, 1.0], alpha=1.0, calibration=["", ""],
                    calibration_samples=1, grams=zeros)
