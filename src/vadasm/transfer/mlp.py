"""Cross-size MLP transfer: pure tensor math, no I/O.

Two models of different widths share no coordinates, so "large minus small" is undefined. What
can be defined: (1) a linear map between the two residual streams, fitted elsewhere on shared
anchor tokens; (2) through it, each donor neuron's input row and output column expressed in the
recipient's residual coordinates; (3) a one-to-one matching of recipient neurons to donor neurons
(Hungarian, on cosine of those transported weights); (4) per matched neuron, the donor's change
(a task vector `donor - donor_base`, or the donor neuron itself in `difference` mode) rescaled to
the recipient neuron's norm. Norm gains feeding the MLP are folded in on both sides so only the
directions the neurons actually read are compared. Shapes of the result are the recipient's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vadasm.align.hungarian import assignment


def layer_pairs(recipient_layers: int, donor_layers: int) -> list[int]:
    """Donor layer for each recipient layer, by relative depth."""
    if recipient_layers == 1:
        return [0]
    return [round(i * (donor_layers - 1) / (recipient_layers - 1)) for i in range(recipient_layers)]


@dataclass
class MlpWeights:
    """One MLP in [out, in] layout with the gain of the norm feeding it (effective gain)."""

    gate: torch.Tensor  # [I, d]
    up: torch.Tensor  # [I, d]
    down: torch.Tensor  # [d, I]
    gain: torch.Tensor  # [d]


@dataclass
class MlpTransfer:
    delta_gate: torch.Tensor
    delta_up: torch.Tensor
    delta_down: torch.Tensor
    matching: torch.Tensor  # recipient neuron i <- donor neuron matching[i]
    matched_cosine: float  # mean cosine of matched pairs (transported weights)
    null_cosine: float  # the same after shuffling the donor's residual coordinates: the control for (2)-(3)


def transport(donor: MlpWeights, to_recipient: torch.Tensor, to_donor: torch.Tensor,
              recipient_gain: torch.Tensor) -> MlpWeights:
    """Donor weights in recipient coordinates.

    `to_recipient` [d_d, d_r] maps donor residual vectors to the recipient's (x_r ~ x_d @ P);
    `to_donor` [d_r, d_d] the other way (x_d ~ x_r @ Q). A donor neuron reads w . x_d ~ (w Q^T) . x_r,
    so input rows go through Q^T; it writes c into x_d, which is c P in x_r. The donor's input gain is
    folded in, the recipient's divided out (so the result sits where the recipient's raw weights do).
    """
    floor = 1e-2 * float(recipient_gain.abs().mean())  # a near-zero gain would blow a row up
    sign = torch.where(recipient_gain < 0, -1.0, 1.0)
    divisor = torch.where(recipient_gain.abs() < floor, sign * floor, recipient_gain)

    def rows(w: torch.Tensor) -> torch.Tensor:
        return (w * donor.gain) @ to_donor.T / divisor

    return MlpWeights(rows(donor.gate), rows(donor.up), to_recipient.T @ donor.down, recipient_gain)


def match_neurons(recipient: MlpWeights, transported: MlpWeights) -> tuple[torch.Tensor, float]:
    """Hungarian matching of every recipient neuron to a distinct donor neuron (needs I_d >= I_r);
    returns the matching and the mean cosine of matched pairs."""
    def features(m: MlpWeights) -> torch.Tensor:
        parts = [m.gate * m.gain, m.up * m.gain, m.down.T]
        return torch.cat([p / p.norm(dim=1, keepdim=True).clamp_min(1e-12) for p in parts], 1) / 3 ** 0.5

    a, b = features(recipient).double(), features(transported).double()
    if b.shape[0] < a.shape[0]:
        raise ValueError(f"donor has {b.shape[0]} MLP neurons, fewer than the recipient's {a.shape[0]}")
    scores = a @ b.T
    rows, cols = _rectangular(scores)
    return cols, float(scores[rows, cols].mean())


def _rectangular(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if scores.shape[0] == scores.shape[1]:
        perm, _ = assignment(scores)
        return torch.arange(len(perm)), perm
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(scores.numpy(), maximize=True)
    order = torch.as_tensor(rows).argsort()
    return torch.as_tensor(rows)[order], torch.as_tensor(cols, dtype=torch.long)[order]


def mlp_transfer(recipient: MlpWeights, donor: MlpWeights, donor_base: MlpWeights | None,
                 to_recipient: torch.Tensor, to_donor: torch.Tensor,
                 generator: torch.Generator | None = None) -> MlpTransfer:
    """The recipient-shaped delta of one MLP (see module docstring).

    With `donor_base`: the donor's task vector, transported, per neuron rescaled by
    ||recipient neuron|| / ||transported donor neuron||. Without: the difference between that
    rescaled donor neuron and the recipient neuron (the seed's "large - small", made defined).
    """
    moved = transport(donor, to_recipient, to_donor, recipient.gain)
    matching, matched = match_neurons(recipient, moved)
    # Null: the same donor with its residual coordinates shuffled (norms and spectra kept, meaning
    # lost). A best matching always finds some cosine; only the excess over this says the map works.
    shuffle = torch.randperm(donor.gain.shape[0], generator=generator)
    shuffled = MlpWeights(donor.gate[:, shuffle], donor.up[:, shuffle], donor.down[shuffle], donor.gain[shuffle])
    _, null = match_neurons(recipient, transport(shuffled, to_recipient, to_donor, recipient.gain))

    def per_neuron(r: torch.Tensor, d: torch.Tensor, base: torch.Tensor | None, axis: int) -> torch.Tensor:
        d = d.index_select(axis, matching)
        scale = r.norm(dim=1 - axis, keepdim=True) / d.norm(dim=1 - axis, keepdim=True).clamp_min(1e-12)
        if base is None:
            return d * scale - r
        return (d - base.index_select(axis, matching)) * scale

    base = transport(donor_base, to_recipient, to_donor, recipient.gain) if donor_base is not None else None
    return MlpTransfer(
        per_neuron(recipient.gate, moved.gate, base.gate if base else None, 0),
        per_neuron(recipient.up, moved.up, base.up if base else None, 0),
        per_neuron(recipient.down, moved.down, base.down if base else None, 1),
        matching, matched, null,
    )


def matched_norm_random(delta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The control: a Gaussian delta with exactly the Frobenius norm of `delta`."""
    noise = torch.randn(delta.shape, generator=generator, dtype=torch.float32)
    norm = float(noise.norm())
    return noise * (float(delta.norm()) / norm) if norm > 0 else noise
