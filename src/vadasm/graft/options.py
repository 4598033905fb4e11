"""What a graft is asked to do: one typed declaration per option, read by the CLI (`vadasm graft` flags),
the recorded recipe, tuning and validation alike.

`GraftOptions` nests four parts (the language merge, its RegMean settings, the projector map, the output)
around the vision-side options. Each field is declared with `vadasm.options.option`, so its help text is
the flag's; `vadasm.cli.options.options_from` flattens the parts into flags without a prefix, and
`GraftOptions.flat(...)` builds the same nesting from flat field names (tests, tuning, scripts).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vadasm.errors import VadasmError
from vadasm.graft.caption_data import check_caption_source
from vadasm.graft.embedding_maps import MAP_METHODS
from vadasm.io import DEFAULT_SHARD_SIZE
from vadasm.methods import method_names
from vadasm.options import ALLOW_PICKLE_HELP, FORCE_HELP, TRUST_REMOTE_CODE_HELP, option

RUN_ONLY = ("shard_size", "force", "allow_pickle", "trust_remote_code", "progress")  # not in the recipe
# Added by issue 15: recorded in the recipe only when a calibration fit is used (--projector closed-form or
# --calibration-data), so every graft that does not use them records the same recipe as before.
CALIBRATION_FIT = ("projector_mode", "calibration_data", "calibration_samples", "calibration_ridge")
PROJECTOR_MODES = ("donor", "closed-form")
CALIBRATED_MAP = "calibrated"


def text_methods() -> list[str]:
    """Class A's language-merge methods: every registered method that merges a delta onto a base (asked
    now, so a method registered after this module is imported is offered too), and graft's own RegMean."""
    return [*method_names(merges_deltas=True), "regmean"]


def _merge_method_help() -> str:
    return (f"Class A: {', '.join(text_methods()[:-1])}, or regmean (linear layers solved from each model's "
            "inputs on its own task; needs --donor-data and --recipient-data).")


@dataclass
class RegMeanOptions:
    """RegMean: each model's task (a built-in task's train split, or a JSONL file) and the weight of the
    donor's term; linear layers are solved from input Gram matrices, other tensors by task arithmetic."""

    donor_data: str | None = option(
        None, help="Class A, regmean: the donor's task, a built-in task (easyvqa; its train split) or a JSONL "
                   "file of {\"text\", \"answer\", \"image\"} records (image paths relative to the file).")
    recipient_data: str | None = option(
        None, help="Class A, regmean: the recipient's task (e.g. arith), same forms as --donor-data.")
    regmean_samples: int = option(128, help="Class A, regmean: calibration items per model.")
    regmean_alpha: float = option(
        0.9, help="Class A, regmean: scale of the Gram matrices' off-diagonal (0 = per-feature average, "
                  "1 = exact regression).")
    regmean_donor_weight: float = option(
        1.0, help="Class A, regmean: weight of reproducing the donor on its task relative to the recipient on "
                  "its own (tune it: vadasm tune --param regmean_donor_weight=...).")


@dataclass
class LanguageMergeOptions:
    """Class A: the donor's language delta over the common base, merged into the recipient."""

    base: str | None = option(
        None, help="Class A: the common base of the donor's LM and the recipient; enables the language merge.")
    beta: float = option(1.0, help="Class A: weight of the donor's language delta (donor LM - base).")
    merge_method: str = option("task_arithmetic", help=_merge_method_help)
    density: float = option(1.0, help="Class A, ties/dare: fraction of the donor delta kept.")
    regmean: RegMeanOptions = option(default_factory=RegMeanOptions, help="RegMean's settings.")
    # None: 0.2 for the task-vector methods, 0 for regmean (whose point is to fix those first layers:
    # on the testbed protecting them cost 20 vision points)
    protect_ratio: float | None = option(
        None, flag="--protect", help="Class A: fraction of the first layers that keep the recipient's weights "
                                     "(default 0.2; 0 for regmean).")

    def __post_init__(self) -> None:
        if self.protect_ratio is None:
            self.protect_ratio = 0.0 if self.merge_method == "regmean" else 0.2


@dataclass
class ProjectorMapOptions:
    """Class B/C: the embedding map folded into the donor's projector, and how it is scored."""

    map_method: str = option(
        "lstsq", flag="--map", help="Class B/C: embedding map folded into the projector: lstsq, procrustes or omp "
                                    "(fitted on shared anchor tokens), or calibrated (the projector's linear_2 "
                                    "refitted on --calibration-data: its hidden units on each image onto the "
                                    "recipient's embeddings of the image's text).")
    ridge: float = option(0.0, help="Class B/C, lstsq: relative ridge penalty (0 = plain least squares).")
    omp_k: int = option(64, help="Class B/C, omp: donor dimensions per recipient dimension.")
    heldout: int = option(1000, help="Class B/C: anchor tokens held out to score the maps.")
    min_anchors: int = option(1000, help="Class B/C: refuse tokenizers sharing fewer anchor tokens.")
    projector_variance: float | None = option(
        None, help="Store the projector's linears at the rank keeping this fraction of variance (seed: 0.95).")
    projector_mode: str = option(
        "donor", flag="--projector", help="'donor': the donor's projector (moved by --map for class B/C); "
                                          "'closed-form': no-donor baseline, the donor's tower joined to the "
                                          "recipient by one least-squares linear map from pooled patch features "
                                          "onto the recipient's embeddings of each image's text "
                                          "(--calibration-data).")
    calibration_data: str | None = option(
        None, help="--projector closed-form / --map calibrated: images with text, easyvqa (its train split; "
                   "text = each image's colour and shape) or a JSONL file of {\"image\", \"text\"} records "
                   "(image paths relative to the file).")
    calibration_samples: int = option(
        1024, help="--calibration-data: at most this many items (the fit needs its input width + 1).")
    calibration_ridge: float = option(
        0.001, help="--calibration-data fits: relative ridge penalty (times the mean eigenvalue of the Gram).")


@dataclass
class OutputOptions:
    """How the output is written (only `dtype` changes its tensors, so only it is part of the recipe)."""

    dtype: str | None = option(None, help="Output dtype; default: each tensor keeps its source dtype.")
    shard_size: str | int = option(DEFAULT_SHARD_SIZE, help="Largest output shard, e.g. 5GB.")
    force: bool = option(False, help=FORCE_HELP)
    allow_pickle: bool = option(False, help=ALLOW_PICKLE_HELP)
    trust_remote_code: bool = option(False, help=TRUST_REMOTE_CODE_HELP)
    progress: bool = option(True, cli=False, help="Progress bars (the CLI turns them off with --quiet or --json).")


@dataclass
class GraftOptions:
    """Everything that decides the output (recorded as the recipe) plus how to run."""

    language: LanguageMergeOptions = option(default_factory=LanguageMergeOptions, help="The language merge.")
    projector: ProjectorMapOptions = option(default_factory=ProjectorMapOptions, help="The projector map.")
    vision_from: str = option(
        "recipient", help="When the recipient already sees: keep its vision ('recipient') or take the donor's "
                          "('donor').")
    image_token: str | None = option(
        None, help="Image token in the recipient's tokenizer (default: donor's if present, else a reserved "
                   "token, else '<image>' added).")
    calibration_images: str | None = option(
        None, help="Folder of images run through the donor's tower: picks projector units when the recipient "
                   "is narrower and measures whether projector outputs survive the map.")
    calibration_limit: int = option(64, help="At most this many calibration images.")
    text_only: bool = option(
        False, help="Class A: write only the merged language model (recipient's architecture).")
    seed: int = option(0, help="Seed for anchor splits, controls, DARE masks, eval sampling.")
    output: OutputOptions = option(default_factory=OutputOptions, help="How the output is written.")

    @classmethod
    def flat(cls, **values: Any) -> GraftOptions:
        """The options from flat field names (`GraftOptions.flat(base=..., map_method="omp")`)."""
        left = dict(values)
        options = _build(cls, left)
        if left:
            raise TypeError(f"GraftOptions has no option(s) {sorted(left)}")
        return options

    @classmethod
    def flat_names(cls) -> list[str]:
        """Every option's flat field name, in declaration order (the recipe's key order)."""
        return list(_leaves(cls()))

    def flat_values(self) -> dict[str, Any]:
        """Every option by its flat field name, in declaration order."""
        return _leaves(self)

    def replaced(self, **values: Any) -> GraftOptions:
        """A copy with some options changed, by flat field name."""
        return GraftOptions.flat(**{**self.flat_values(), **values})

    def recipe(self) -> dict:
        """The options that decide the output, as recorded in vadasm_config.json (flat, in order)."""
        pm = self.projector
        fitted = pm.projector_mode != "donor" or pm.calibration_data is not None
        return {k: v for k, v in self.flat_values().items()
                if k not in RUN_ONLY and (fitted or k not in CALIBRATION_FIT)}


def _build(cls: type, values: dict[str, Any]) -> Any:
    """`cls` with its parts built first; takes the fields it uses out of `values`."""
    kinds = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(kinds[f.name]):
            kwargs[f.name] = _build(kinds[f.name], values)
        elif f.name in values:
            kwargs[f.name] = values.pop(f.name)
    return cls(**kwargs)


def _leaves(options: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        out.update(_leaves(value) if dataclasses.is_dataclass(value) else {f.name: value})
    return out


def check_options(opts: GraftOptions) -> None:
    """Refuse contradictory or out-of-range options before any model is opened (one line, naming the flag)."""
    lang, reg = opts.language, opts.language.regmean
    if opts.vision_from not in ("recipient", "donor"):
        raise VadasmError(f"--vision-from must be 'recipient' or 'donor', not {opts.vision_from!r}")
    if lang.merge_method not in text_methods():
        raise VadasmError(f"--merge-method: {lang.merge_method!r} unknown (choose from {', '.join(text_methods())})")
    if opts.projector.map_method not in (*MAP_METHODS, CALIBRATED_MAP):
        raise VadasmError(f"--map: {opts.projector.map_method!r} unknown (choose from "
                          f"{', '.join((*MAP_METHODS, CALIBRATED_MAP))})")
    if not 0 <= lang.protect_ratio <= 1:
        raise VadasmError(f"--protect: {lang.protect_ratio} is not a fraction of layers in [0, 1]")
    if lang.merge_method == "regmean":
        if not (reg.donor_data and reg.recipient_data):
            raise VadasmError("--merge-method regmean needs --donor-data and --recipient-data (the task each model "
                              "was fine-tuned for: easyvqa, arith, or a JSONL file)")
        if not 0 <= reg.regmean_alpha <= 1 or reg.regmean_donor_weight <= 0 or reg.regmean_samples < 1:
            raise VadasmError("regmean: --regmean-alpha must lie in [0, 1], --regmean-donor-weight be > 0 and "
                              "--regmean-samples >= 1")
    if opts.calibration_images and not Path(opts.calibration_images).expanduser().is_dir():
        raise VadasmError(f"{opts.calibration_images}: calibration image folder not found")
    check_calibration_fit(opts)
    variance = opts.projector.projector_variance
    if variance is not None and not 0 < variance <= 1:
        raise VadasmError(f"--projector-variance: {variance} is not in (0, 1]")


def check_calibration_fit(opts: GraftOptions) -> None:
    """The calibration-fitted projectors' options: a source of images with text, and no contradiction."""
    pm = opts.projector
    if pm.projector_mode not in PROJECTOR_MODES:
        raise VadasmError(f"--projector: {pm.projector_mode!r} unknown (choose from {', '.join(PROJECTOR_MODES)})")
    closed = pm.projector_mode == "closed-form"
    for wanted, flag in ((closed, "--projector closed-form"), (pm.map_method == CALIBRATED_MAP, "--map calibrated")):
        if wanted and not pm.calibration_data:
            raise VadasmError(f"{flag} needs --calibration-data (easyvqa, or a JSONL file of {{\"image\", \"text\"}} "
                              "records)")
    if closed and (opts.text_only or pm.projector_variance is not None):
        raise VadasmError("--projector closed-form writes its own linear projector: not with --text-only or "
                          "--projector-variance")
    if pm.calibration_samples < 2 or pm.calibration_ridge < 0:
        raise VadasmError("--calibration-samples must be >= 2 and --calibration-ridge >= 0")
    if pm.calibration_data:
        check_caption_source(pm.calibration_data)
