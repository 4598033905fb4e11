"""RAM and RAM+ (tensor-local) on hand-checked deltas."""

import torch

from vadasm.methods import ram_merge, ramplus_tl_merge


def _models():
    base = torch.zeros(4)
    # deltas: [1, 0, 2, 0], [3, 0, 0, 0], and one below epsilon everywhere
    return base, [torch.tensor([1.0, 0.0, 2.0, 0.0]), torch.tensor([3.0, 0.0, 0.0, 0.0]),
                  torch.tensor([0.0, 0.0, 0.0, 1e-7])]


def test_ram_averages_only_where_several_models_changed_an_entry():
    base, models = _models()
    # entry 0: changed by two -> (1 + 3) / 2; entry 2: only model 0 -> kept whole; entry 3: below epsilon
    assert torch.equal(ram_merge(base, models, epsilon=1e-5), torch.tensor([2.0, 0.0, 2.0, 0.0]))


def test_ramplus_boosts_unique_entries_by_the_shared_over_unique_ratio():
    base, models = _models()
    # model 0: 1 shared, 1 unique entry -> rho 1, clamped to alpha 0.9 -> boost 1 + 0.5 * 0.9 = 1.45
    merged = ramplus_tl_merge(base, models, r=0.5, alpha=0.9, epsilon=1e-5)
    assert torch.allclose(merged, torch.tensor([2.0, 0.0, 2.9, 0.0]))
    # r = 0 is plain RAM
    assert torch.equal(ramplus_tl_merge(base, models, r=0.0, epsilon=1e-5), ram_merge(base, models, epsilon=1e-5))


def test_one_model_is_reproduced_and_no_models_give_the_base():
    torch.manual_seed(0)
    base = torch.randn(5, 3)
    model = base + torch.randn(5, 3)
    assert torch.allclose(ram_merge(base, [model]), model)
    assert torch.allclose(ramplus_tl_merge(base, [model]), model)  # no shared entries: boost 1
    assert torch.equal(ram_merge(base, []), base)
