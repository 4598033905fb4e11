import torch

from vadasm.methods import dare_merge, generalized_task_arithmetic, sign_consensus_mask, ties_merge
from vadasm.methods.sparsify import magnitude_prune, random_prune


def test_task_arithmetic_with_weight_zero_is_the_base():
    base = torch.randn(8, 5)
    out = generalized_task_arithmetic(base, [torch.randn(8, 5), torch.randn(8, 5)], weight=[0.0, 0.0])
    assert torch.equal(out, base)


def test_task_arithmetic_adds_weighted_deltas_by_hand():
    base = torch.tensor([1.0, 2.0, 3.0])
    a = torch.tensor([2.0, 2.0, 1.0])  # delta [1, 0, -2]
    b = torch.tensor([1.0, 4.0, 3.0])  # delta [0, 2, 0]
    out = generalized_task_arithmetic(base, [a, b], weight=[0.5, 1.0], lambda_=2.0)
    # base + 2 * (0.5*[1,0,-2] + [0,2,0]) = [1,2,3] + [1,4,-2]
    assert torch.allclose(out, torch.tensor([2.0, 6.0, 1.0]))


def test_magnitude_prune_keeps_the_largest_entries():
    delta = torch.tensor([0.1, -5.0, 0.3, 2.0, -0.2, 0.0])
    kept = magnitude_prune(delta, density=0.34)  # k = 2
    assert torch.equal(kept, torch.tensor([0.0, -5.0, 0.0, 2.0, 0.0, 0.0]))
    assert torch.equal(magnitude_prune(delta, 1.0), delta)
    assert magnitude_prune(delta, 0.0).abs().sum() == 0


def test_sign_election_by_mass_not_by_count():
    # Two small positive deltas against one large negative one: 'sum' elects '-', 'count' elects '+'.
    stacked = torch.tensor([[0.1], [0.2], [-1.0]])
    assert sign_consensus_mask(stacked, "sum").squeeze(1).tolist() == [False, False, True]
    assert sign_consensus_mask(stacked, "count").squeeze(1).tolist() == [True, True, False]


def test_ties_keeps_only_the_elected_sign():
    torch.manual_seed(0)
    base = torch.zeros(200)
    models = [torch.randn(200) for _ in range(3)]
    out = ties_merge(base, models, density=1.0, normalize=True)
    elected = torch.sign(torch.stack(models).sum(0))
    nonzero = out != 0
    # every surviving entry carries the elected sign, and equals the mean of the agreeing deltas
    assert torch.all(torch.sign(out[nonzero]) == elected[nonzero])
    stacked = torch.stack(models)
    agree = torch.sign(stacked) == elected
    expected = (stacked * agree).sum(0) / agree.sum(0).clamp(min=1)
    assert torch.allclose(out, expected, atol=1e-6)


def test_ties_hand_checked_example():
    base = torch.tensor([0.0, 0.0, 0.0, 0.0])
    a = torch.tensor([3.0, -1.0, 0.5, 2.0])
    b = torch.tensor([-1.0, -2.0, 0.4, 2.0])
    # density 0.5 keeps 2 entries each: a -> [3, 0, 0, 2], b -> [-1, -2, 0, 2] -> [0, -2, 0, 2]
    # elected signs by mass: [+, -, +(tie 0), +]; mean of agreeing: [3, -2, 0, 2]
    out = ties_merge(base, [a, b], density=0.5)
    assert torch.allclose(out, torch.tensor([3.0, -2.0, 0.0, 2.0]))


def test_dare_keeps_the_expected_value():
    delta = torch.linspace(-1, 1, 50)
    runs = torch.stack([
        random_prune(delta, 0.3, rescale=True, generator=torch.Generator().manual_seed(s)) for s in range(4000)
    ])
    # each entry's mean over seeds is the original (standard error ~ |d| * sqrt(0.7/0.3/4000) ~ 0.024|d|)
    assert torch.allclose(runs.mean(0), delta, atol=0.1)
    assert (runs != 0).float().mean().item() == __import__("pytest").approx(0.3, abs=0.01)


def test_dare_is_seeded_and_sparse():
    torch.manual_seed(0)
    base, model = torch.zeros(1000), torch.randn(1000)
    out1 = dare_merge(base, [model], density=0.2, seed=7)
    out2 = dare_merge(base, [model], density=0.2, seed=7)
    out3 = dare_merge(base, [model], density=0.2, seed=8)
    assert torch.equal(out1, out2)
    assert not torch.equal(out1, out3)
    kept = out1 != 0
    assert 0.15 < kept.float().mean() < 0.25
    assert torch.allclose(out1[kept], model[kept] / 0.2)


def test_magnitude_cut_streams_over_chunks_and_breaks_ties_by_position():
    from vadasm.methods.sparsify import apply_cut, magnitude_cuts

    delta = torch.tensor([1.0, -3.0, 2.0, -2.0, 0.5, 2.0, -2.0, 3.0])
    # k = 4: |3| twice, then two of the four |2| entries: the first two in flat order
    assert torch.equal(magnitude_prune(delta, 0.5), torch.tensor([0.0, -3.0, 2.0, -2.0, 0.0, 0.0, 0.0, 3.0]))
    for bounds in ([0, 8], [0, 3, 8], [0, 1, 2, 5, 6, 8]):
        parts = [delta[a:b] for a, b in zip(bounds, bounds[1:])]
        (cut,) = magnitude_cuts(lambda parts=parts: [[p.abs()] for p in parts], delta.numel(), [0.5])
        chunked = torch.cat([apply_cut(p, cut, a) for p, a in zip(parts, bounds)])
        assert torch.equal(chunked, magnitude_prune(delta, 0.5))


def test_magnitude_prune_keeps_exactly_k_like_topk():
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        delta = torch.randn(int(torch.randint(1, 3000, (), generator=gen)), generator=gen)
        if trial % 2:
            delta = (delta * 4).round() / 4  # many equal magnitudes
        density = float(torch.rand((), generator=gen))
        k = max(1, int(density * delta.numel()))
        kept = magnitude_prune(delta + 10, density) != 0  # shifted: no entry is zero
        assert kept.sum() == k
        threshold = torch.topk((delta + 10).abs(), k).values.min()
        assert ((delta + 10).abs()[kept] >= threshold).all()


def test_sign_election_zeros_never_agree_and_ties_go_to_plus():
    stacked = torch.tensor([[0.0, 1.0, 2.0], [0.0, -1.0, -3.0]])
    # column 0: all zero -> '+' elected, but a zero delta agrees with neither sign
    # column 1: mass 0 -> '+'; column 2: mass -1 -> '-'
    assert sign_consensus_mask(stacked, "sum").tolist() == [[False, True, False], [False, False, True]]
    # by count: one '+' against one '-' in columns 1 and 2 -> '+'
    assert sign_consensus_mask(stacked, "count").tolist() == [[False, True, True], [False, False, False]]
