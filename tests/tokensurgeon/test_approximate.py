import pytest
import torch

from vadasm.tokensurgeon import omp_combination, predict_rows, retrieval_top1


def test_omp_picks_the_most_correlated_atom_then_refits_by_least_squares():
    # Hand-checked: inner products with [3, 4, 0] are 6, 8, 0, 7 -> atom 1 (coefficient 2 leaves
    # residual [3, 0, 0]); then 6, -, 0, 3 -> atom 0 (coefficient 1.5); the fit is exact.
    atoms = torch.tensor([[2.0, 0, 0], [0, 2, 0], [0, 0, 1], [1, 1, 1]])
    idx, coef = omp_combination(torch.tensor([[3.0, 4, 0]]), atoms, k=2)
    assert idx.tolist() == [[1, 0]]
    assert coef[0].tolist() == pytest.approx([2.0, 1.5])


def test_omp_refuses_more_atoms_than_there_are_and_caps_k_at_the_width():
    atoms = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="cannot choose 6 of 5"):
        omp_combination(torch.randn(2, 3), atoms, k=6)
    idx, coef = omp_combination(atoms[:2] * 2, atoms, k=5)
    assert idx.shape == coef.shape == (2, 3)
    assert torch.allclose(torch.einsum("bk,bkd->bd", coef, atoms.double()[idx]), atoms[:2].double() * 2)


def _linear_pair(d_in: int, d_out: int, n: int, orthogonal: bool = False):
    gen = torch.Generator().manual_seed(0)
    donor = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
    matrix = torch.randn(d_in, d_out, generator=gen, dtype=torch.float64)
    if orthogonal:
        matrix = torch.linalg.qr(matrix)[0]
    return donor, matrix


@pytest.mark.parametrize("method", ["lstsq", "procrustes"])
def test_maps_recover_an_exact_affine_relation(method):
    donor, matrix = _linear_pair(6, 6, 60, orthogonal=True)
    model = donor @ matrix + 0.5
    predicted = predict_rows(method, donor[50:], donor[:50], model[:50], batch_size=4)
    assert torch.allclose(predicted, model[50:].float(), atol=1e-4)


def test_omp_applies_the_donor_space_coefficients_to_the_model_rows():
    # With k = width the donor row is reconstructed exactly, so a linear relation carries over.
    donor, matrix = _linear_pair(4, 7, 40)
    model = donor @ matrix
    predicted = predict_rows("omp", donor[30:], donor[:30], model[:30], k=4, batch_size=3)
    assert torch.allclose(predicted, model[30:].float(), atol=1e-4)
    # ...and with fewer atoms than the width it is an approximation, not the truth.
    rough = predict_rows("omp", donor[30:], donor[:30], model[:30], k=2)
    assert not torch.allclose(rough, model[30:].float(), atol=1e-2)


def test_predict_rows_reports_progress_and_refuses_unknown_methods():
    donor, matrix = _linear_pair(3, 3, 20)
    seen = []
    predict_rows("lstsq", donor[:7], donor, donor @ matrix, batch_size=3, progress=seen.append)
    assert seen == [3, 3, 1]
    with pytest.raises(ValueError, match="unknown token surgery method 'mean'"):
        predict_rows("mean", donor, donor, donor)


def test_retrieval_top1_counts_rows_whose_nearest_vocabulary_row_is_their_own():
    vocab = torch.tensor([[1.0, 0], [0, 1], [-1, 0]])
    predicted = torch.tensor([[2.0, 0.1], [0.1, 3], [0.9, 0.1]])
    assert retrieval_top1(predicted, vocab, torch.tensor([0, 1, 2])) == pytest.approx(2 / 3)
