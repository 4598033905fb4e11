"""What a graft did and why: the pair class, the maps and their controls, the projector, the warnings.

Returned by `graft`, printed by the CLI (`lines`) and recorded in vadasm_config.json (`to_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from vadasm.graft.embedding_maps import MapQuality
from vadasm.graft.pairs import PairClass
from vadasm.graft.tokens import ImageTokenChoice


@dataclass
class MapFit:
    """One map variant (or control) scored on held-out anchors, and on real projector outputs."""

    method: str
    control: bool
    quality: MapQuality
    projector_token_agreement: float | None = None  # nearest-token agreement on calibration images


@dataclass
class GraftResult:
    output: str
    donor: str
    recipient: str
    pair: PairClass
    kind: str  # output model_type
    language_model: str
    image_token: ImageTokenChoice | None
    anchors: int | None = None
    maps: list[MapFit] = field(default_factory=list)
    chosen_map: str | None = None
    projector: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    tensors: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"pair: {self.pair.describe()}", f"language model: {self.language_model}"]
        if self.image_token:
            out.append(f"image token: {self.image_token.token!r} (id {self.image_token.token_id}, "
                       f"{self.image_token.how})")
        if self.maps:
            out.append(f"embedding maps on {self.anchors} shared anchor tokens "
                       f"(held-out {self.maps[0].quality.heldout}):")
            out.append(f"  {'map':<18}{'top1':>7}{'top10':>7}{'cosine':>8}{'proj-agree':>11}")
            for m in self.maps:
                agree = "-" if m.projector_token_agreement is None else f"{100 * m.projector_token_agreement:.1f}"
                mark = " (control)" if m.control else (" <- used" if m.method == self.chosen_map else "")
                out.append(f"  {m.method:<18}{100 * m.quality.top1:>7.1f}{100 * m.quality.top10:>7.1f}"
                           f"{m.quality.cosine:>8.3f}{agree:>11}{mark}")
        for key in ("closed_form", "calibrated_map"):
            if key in self.projector:
                out += fit_lines(self.projector[key])
        hidden = self.projector.get("hidden")
        if hidden:
            share = 100 * hidden["dropped_weight_share"]
            how = "exact" if hidden["exact"] else f"{hidden['criterion']}, {share:.1f}% of |W2|^2 on dropped units"
            out.append(f"projector hidden width {hidden['old_width']} -> {hidden['new_width']} ({how})")
        if "resize_relative_error_on_calibration" in self.projector:
            out.append("projector output error of the cut on calibration images: "
                       f"{100 * self.projector['resize_relative_error_on_calibration']:.2f}% (relative)")
        for name, red in self.projector.get("svd_subspace_reduction", {}).items():
            out.append(f"projector {name}: rank {red['rank']}/{red['full_rank']} keeps "
                       f"{100 * red['variance_kept']:.1f}% of variance; {red['factored_parameters']:,} parameters "
                       f"factored vs {red['dense_parameters']:,} dense (stored dense)")
        out += [f"WARNING: {w}" for w in self.warnings]
        out.append(f"wrote {self.tensors} tensors ({self.kind}) -> {self.output} in {self.seconds:.1f}s")
        return out


def fit_lines(fit: dict) -> list[str]:
    """Two lines for a calibration fit (`calibration_fit.CalibrationFit` as a dict)."""
    def hit(quality: dict) -> str:
        return "-" if quality["label_hit"] is None else f"{100 * quality['label_hit']:.1f}%"

    held, control = fit["heldout"], fit["heldout_control"]
    return [f"{fit['mode']}: {fit['items']} items from {fit['source']}; input: {fit['input']} (width "
            f"{fit['input_width']}); scale {fit['scale']:.3f}",
            f"  relative residual: fit {fit['fit']['relative_residual']:.3f}, held-out ({fit['heldout_items']} "
            f"items) {held['relative_residual']:.3f} vs {control['relative_residual']:.3f} for shuffled pairs; "
            f"nearest token is one of the text's: held-out {hit(held)} vs {hit(control)} shuffled"]
