"""`--map calibrated` (class B/C): the recipient-side half of the donor's projector refitted on calibration
images and their texts, in closed form (RegMean-style least squares; no gradient training).

Why this one. The anchor-token maps (lstsq, Procrustes, OMP) are fitted only where word embeddings lie.
A LLaVA projector trained by the language model's loss puts its image tokens far from every word
embedding, so those maps are used where they were never fitted: nothing in their fit constrains what they
do to the image tokens. A map fitted on contextual hidden states of shared texts covers more of the space
(mixtures of words in context) but still never sees an image token. This fit is made on the image tokens
themselves: its inputs are the donor projector's hidden units act(linear_1(x)) on real calibration images,
so it is used where it was fitted, and its targets are in the recipient's own input space (the recipient's
mean embedding of each image's text), so no donor-to-recipient word map is needed at all. It keeps the
donor's learnt first layer (what the donor's training found informative in the tower's features) and
replaces linear_2; the no-donor baseline (`--projector closed-form`) fits the same targets from the raw
tower features instead, so the two together show what the donor's projector adds. Its limit: it can only
say what the calibration texts name (for easy-vqa, a colour and a shape).

Every token of an image is fitted to that image's target (the per-token fit of calibration_fit.py), since
the projector is applied per token. When the recipient is narrower than the donor's projector, the units
with the largest |map row| x activation RMS are kept and the map is refitted on them alone (the exact
least-squares answer under that constraint); when wider, dead units are appended (exact for act(0) = 0).
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from vadasm.arch import Architecture
from vadasm.errors import VadasmError
from vadasm.graft.calibration_fit import CalibrationFit, fit_and_score, fit_stats, solve_map
from vadasm.graft.closed_form import calibration_set
from vadasm.graft.options import GraftOptions
from vadasm.graft.pairing import TextView
from vadasm.graft.projector import ZERO_PRESERVING_ACTS, HiddenResize, resize_hidden
from vadasm.graft.result import GraftResult
from vadasm.io import Checkpoint


def projector_hidden(features: torch.Tensor, projector: dict, act, chunk: int = 64) -> torch.Tensor:
    """act(linear_1(x)) for every image token: [n, tokens, hidden] in fp32 (fp64 math, chunked)."""
    w1 = projector["linear_1.weight"].double()
    b1 = projector.get("linear_1.bias")
    out = []
    for start in range(0, len(features), chunk):
        h = features[start:start + chunk].double() @ w1.T
        out.append(act(h + b1.double() if b1 is not None else h).float())
    return torch.cat(out)


def units_to_keep(acts: torch.Tensor, targets: torch.Tensor, ridge: float, width: int) -> tuple[torch.Tensor, float]:
    """The `width` hidden units whose row of the full fit times their activation RMS is largest, and the
    share of |map|^2 (weighted the same way) on the dropped ones."""
    stats = fit_stats(acts, targets, per_token=True)
    full = solve_map(stats, ridge)
    weight = full.matrix.norm(dim=1) * (torch.diagonal(stats.gram) / len(acts)).clamp_min(0).sqrt()
    order = weight.argsort(descending=True)
    share = float(weight[order[width:]].pow(2).sum() / weight.pow(2).sum()) if weight.pow(2).sum() > 0 else 0.0
    return order[:width].sort().values, share


def calibrated_projector(opts: GraftOptions, result: GraftResult, donor_ck: Checkpoint, donor_arch: Architecture,
                         r_text: TextView, r_tok, projector: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """linear_1 and the activation from the donor, linear_2 fitted onto the recipient's embeddings of the
    calibration texts; the fit is recorded in `result` (`projector["calibrated_map"]`, `projector["hidden"]`)."""
    from transformers.activations import ACT2FN

    act_name = donor_ck.config.get("projector_hidden_act", "gelu")
    hidden = projector["linear_1.weight"].shape[0]
    data = calibration_set(opts, donor_ck, donor_arch, r_text, r_tok, hidden + 1, "--map calibrated")
    width = data.targets.shape[1]
    if width > hidden and act_name not in ZERO_PRESERVING_ACTS:
        raise VadasmError(f"{donor_ck.path / 'config.json'}: projector activation '{act_name}' has act(0) != 0; "
                          f"cannot widen its hidden units {hidden} -> {width} exactly")
    pm = opts.projector
    acts = projector_hidden(data.features, projector, ACT2FN[act_name])
    keep, share = torch.arange(hidden), 0.0
    if width < hidden:
        keep, share = units_to_keep(acts, data.targets, pm.calibration_ridge, width)
        acts = acts[..., keep]
    fmap, scores = fit_and_score(acts, data.targets, pm.calibration_ridge, True, opts.seed, data.token_sets,
                                 data.vocab)
    w2, b2 = fmap.as_linear()
    b1 = projector.get("linear_1.bias")
    b1 = b1[keep] if b1 is not None else torch.zeros(len(keep), dtype=torch.float64)
    w1, b1, w2, b2, _ = resize_hidden(projector["linear_1.weight"][keep], b1, w2, b2, width)
    resize = HiddenResize(hidden, width, width >= hidden, "pad" if width >= hidden else "calibrated refit", share)
    result.projector["hidden"] = asdict(resize)
    result.projector["calibrated_map"] = asdict(CalibrationFit(
        "calibrated map", pm.calibration_data, len(data.features),
        "donor projector hidden units act(linear_1(x)), every image token", len(keep), True, pm.calibration_ridge,
        round(fmap.scale, 6), scores["fit"], scores["heldout_items"], scores["heldout"], scores["heldout_control"],
        [f"linear_2 refitted onto the recipient's embeddings of each image's text; {len(keep)} of {hidden} "
         "projector units used"]))
    result.chosen_map = "calibrated"
    return {"linear_1.weight": w1, "linear_1.bias": b1, "linear_2.weight": w2, "linear_2.bias": b2}, {}
