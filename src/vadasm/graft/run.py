"""Run a graft: open -> classify the pair -> fit maps (B/C) -> plan tensors -> for each tensor
read, transform, write -> config, processor, provenance.

The output is a stock LLaVA / LLaVA-Next checkpoint: the recipient's language model (merged with
the donor's language delta in class A), the donor's vision tower, and the donor's projector moved
into the recipient's embedding space (class B/C). Follow one weight by reading `graft` top to bottom.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from vadasm.arch import Architecture, VisionLayout, architecture_for, load_spec
from vadasm.errors import VadasmError
from vadasm.graft.embedding_maps import (
    CONTROLS,
    MAP_METHODS,
    EmbeddingMap,
    MapQuality,
    control_map,
    embed_scale,
    fit_map,
    retrieval_quality,
    shared_anchors,
    split_anchors,
)
from vadasm.graft.grams import layer_relative_name
from vadasm.graft.pairs import PairClass, classify_pair
from vadasm.graft.projector import (
    ZERO_PRESERVING_ACTS,
    fold_affine_map,
    resize_hidden,
    svd_subspace_reduction,
)
from vadasm.graft.tokens import ImageTokenChoice, choose_image_token, vision_chat_template
from vadasm.io import (
    DEFAULT_SHARD_SIZE,
    Checkpoint,
    InputWatch,
    PlannedTensor,
    ShardedWriter,
    atomic_output_dir,
    check_output_free,
    parse_dtype,
    parse_size,
)
from vadasm.io.hf_load import load_with_transformers
from vadasm.io.provenance import natural_key, tensor_seed
from vadasm.methods import get_method
from vadasm.methods.regmean import regmean
from vadasm.version import __version__

SUPPORTED_DONORS = ("llava", "llava_next")
TEXT_METHODS = ("task_arithmetic", "ties", "dare_linear", "dare_ties", "regmean")
OUTPUT_LAYOUT = "transformers<4.52"  # the names transformers itself writes (and every version reads)


@dataclass
class GraftOptions:
    """Everything that decides the output (recorded as the recipe) plus how to run."""

    base: str | None = None  # common base of donor LM and recipient (class A language merge)
    beta: float = 1.0  # weight of the donor's language delta (1 = add it once, as the donor learnt it)
    merge_method: str = "task_arithmetic"  # or ties, dare_linear, dare_ties, regmean
    density: float = 1.0  # fraction of the donor delta kept by ties / dare
    # regmean: each model's task (a built-in task's train split, or a JSONL file) and the weight of the
    # donor's term; linear layers are solved from input Gram matrices, other tensors by task arithmetic.
    donor_data: str | None = None
    recipient_data: str | None = None
    regmean_samples: int = 128
    regmean_alpha: float = 0.9
    regmean_donor_weight: float = 1.0
    # first fraction of layers keep the recipient's weights; None: 0.2 for the task-vector methods, 0 for
    # regmean (whose point is to fix those layers: on the testbed protecting them cost 20 vision points)
    protect_ratio: float | None = None
    map_method: str = "lstsq"  # class B/C projector map: lstsq, procrustes or omp
    ridge: float = 0.0
    omp_k: int = 64
    heldout: int = 1000  # anchors held out to score the maps
    min_anchors: int = 1000
    projector_variance: float | None = None  # svd_subspace_reduction of the projector linears
    vision_from: str = "recipient"  # when the recipient already sees: keep its vision, or "donor"
    image_token: str | None = None
    calibration_images: str | None = None  # folder of images run through the donor's tower
    calibration_limit: int = 64
    text_only: bool = False  # write the merged language model only (class A)
    seed: int = 0
    dtype: str | None = None
    shard_size: str | int = DEFAULT_SHARD_SIZE
    force: bool = False
    allow_pickle: bool = False
    trust_remote_code: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.protect_ratio is None:
            self.protect_ratio = 0.0 if self.merge_method == "regmean" else 0.2

    def recipe(self) -> dict:
        run_only = {"force", "progress", "shard_size", "allow_pickle", "trust_remote_code"}
        return {k: v for k, v in asdict(self).items() if k not in run_only}


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


@dataclass
class TextView:
    """A checkpoint's language model addressed by the text model's own tensor names."""

    checkpoint: Checkpoint
    arch: Architecture
    names: dict[str, str]  # text name -> name in the checkpoint

    @classmethod
    def of(cls, checkpoint: Checkpoint, arch: Architecture) -> TextView:
        names = {}
        for name in checkpoint.keys():
            text_name = name if arch.layout is None else arch.layout.to_text_name(name)
            if text_name is not None:
                names[text_name] = name
        return cls(checkpoint, arch, names)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {t: self.checkpoint.shape(n) for t, n in self.names.items()}

    def get(self, text_name: str) -> torch.Tensor:
        return self.checkpoint.get_checked(self.names[text_name])

    @property
    def embed_name(self) -> str:
        return self.arch.text.spec["embed"][0]

    @property
    def lm_head_name(self) -> str:
        return self.arch.text.spec["lm_head"]

    @property
    def tied(self) -> bool:
        return self.lm_head_name not in self.names

    def effective_embeddings(self, rows: int) -> torch.Tensor:
        """The first `rows` token embeddings as the first layer receives them (scale included)."""
        cfg = self.arch.text_config
        scale = embed_scale(self.arch.text.model_type, self.arch.text.config_value(cfg, "hidden_size"))
        return self.get(self.embed_name)[:rows].float() * scale


@dataclass
class Step:
    """One output tensor: where it goes, what it is made from, and how."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    action: str
    compute: Callable[[], torch.Tensor]


def graft(donor: str | Path, recipient: str | Path, output: str | Path, options: GraftOptions | None = None
          ) -> GraftResult:
    """Give `recipient` the donor VLM's vision (tower + projector), training-free, in the folder `output`.

    The pair class (A: shared base; B: same tokenizer, other sizes; C: other tokenizer) decides what
    is possible: class A also merges the donor's language delta over `options.base`; B and C keep
    the recipient's language model and map the projector into its embedding space. Bad inputs are a
    one-line `VadasmError`; the output is written atomically. Returns what was done and why.
    """
    opts = options or GraftOptions()
    started = time.perf_counter()
    output = Path(output)
    check_output_free(output, opts.force, _input_paths(opts, donor, recipient))
    _check_options(opts)
    open_ = {"allow_pickle": opts.allow_pickle, "trust_remote_code": opts.trust_remote_code}
    donor_ck, recipient_ck = Checkpoint.open(donor, **open_), Checkpoint.open(recipient, **open_)
    watch = InputWatch([donor_ck, recipient_ck])  # fingerprints at open; checked again before the rename
    donor_arch = _vision_arch(donor_ck, "donor")
    recipient_arch = architecture_for(recipient_ck.config, recipient_ck.keys(), str(recipient_ck.path / "config.json"))
    if recipient_arch.has_vision:
        _vision_arch(recipient_ck, "recipient")
    d_text, r_text = TextView.of(donor_ck, donor_arch), TextView.of(recipient_ck, recipient_arch)
    d_tok, r_tok = _tokenizer(donor_ck.path), _tokenizer(recipient_ck.path)
    pair = classify_pair(donor_arch.text.model_type, recipient_arch.text.model_type, d_text.shapes(),
                         r_text.shapes(), d_tok.get_vocab() == r_tok.get_vocab())
    result = GraftResult(str(output), str(donor_ck.path), str(recipient_ck.path), pair, "", "", None)

    sees = recipient_arch.has_vision
    if sees and pair.label != "A":
        raise VadasmError(f"{recipient_ck.path}: the recipient already sees, and its language model does not share "
                          f"the donor's base ({pair.describe()}); their vision cannot be merged")
    if opts.text_only and pair.label != "A":
        raise VadasmError(f"{recipient_ck.path}: a text-only merge needs a class A pair (shared base); this is "
                          f"{pair.describe()}. Cross-size weight deltas are not task vectors (SPEC §4)")
    vision_ck, vision_arch = (recipient_ck, recipient_arch) if sees and opts.vision_from == "recipient" else (
        donor_ck, donor_arch)

    # The language model: class A merges the donor's delta over the base; B/C keep the recipient.
    base_view = _base_view(opts, pair, r_text, result) if pair.label == "A" else None
    watch.add(base_view.checkpoint if base_view else None)
    if pair.label != "A":
        result.language_model = "recipient unchanged (no shared base; cross-size deltas are not task vectors)"
    num_layers = recipient_arch.num_layers() or 1
    protected = round(opts.protect_ratio * num_layers)

    # The image token, in the recipient's tokenizer.
    image_token = None
    if not opts.text_only and not (sees and opts.vision_from == "recipient"):
        donor_token = _donor_image_token(d_tok, donor_ck.config)
        taken = {t for t in (r_tok.bos_token, r_tok.eos_token, r_tok.pad_token, r_tok.unk_token) if t}
        image_token = choose_image_token(r_tok.get_vocab(), donor_token, opts.image_token, taken)
        # Registered as a special added token (also when reused) so text around it never splits it.
        from tokenizers import AddedToken

        r_tok.add_tokens([AddedToken(image_token.token, special=True, normalized=False)], special_tokens=True)
        new_id = r_tok.convert_tokens_to_ids(image_token.token)
        if image_token.token_id not in (None, new_id):
            raise VadasmError(f"{recipient_ck.path}: registering {image_token.token!r} as a special token moved it "
                              f"from id {image_token.token_id} to {new_id}")
        image_token.token_id = new_id
        result.image_token = image_token
    embed_rows = r_text.shapes()[r_text.embed_name][0]
    new_rows = max(embed_rows, image_token.token_id + 1) if image_token else embed_rows
    if new_rows != embed_rows:
        result.warnings.append(f"embeddings resized {embed_rows} -> {new_rows} rows for the image token "
                               "(new rows = mean embedding)")

    # The projector: unchanged (A, or vision kept from a seeing recipient) or mapped (B/C).
    projector, extra = _projector_tensors(vision_ck, vision_arch)
    if pair.label != "A" and not opts.text_only:
        projector, extra = _map_projector(opts, result, donor_ck, donor_arch, d_text, r_text, d_tok, r_tok,
                                          projector, extra)
    if opts.projector_variance is not None and not opts.text_only:
        _reduce_projector(projector, opts.projector_variance, result)

    # Plan every output tensor, then one loop: compute, write.
    out_dtype = parse_dtype(opts.dtype) if opts.dtype else None
    text_layout = None if opts.text_only else _output_layout(vision_arch.model_type)
    # RegMean's forward passes (minutes) come after every check above has passed. beta 0 means "no donor
    # language delta" for every method: the recipient's language model as is.
    regmean_merge = base_view is not None and opts.merge_method == "regmean" and opts.beta != 0
    grams = _regmean_grams(opts, donor_ck, recipient_ck) if regmean_merge else None
    steps = _text_steps(r_text, base_view, d_text, opts, protected, new_rows, text_layout, out_dtype, grams)
    if not opts.text_only:
        steps += _vision_steps(vision_ck, vision_arch, text_layout, projector, extra, out_dtype)
    plan = [PlannedTensor(s.name, s.shape, s.dtype) for s in steps]
    roles = {"donor": donor_ck, "recipient": recipient_ck, "base": base_view.checkpoint if base_view else None}
    with atomic_output_dir(output, opts.force, _input_paths(opts, donor_ck.path, recipient_ck.path)) as tmp:
        writer = ShardedWriter(tmp, plan, parse_size(opts.shard_size))
        for step in tqdm(steps, desc=f"graft (class {pair.label})", unit="tensor", disable=not opts.progress):
            writer.write(step.name, step.compute())
        writer.close()
        if opts.text_only:
            result.kind = recipient_arch.model_type
            _write_text_sidecars(tmp, recipient_ck, plan)
        else:
            result.kind = vision_arch.model_type
            _write_vision_sidecars(tmp, vision_ck, recipient_ck, r_text, r_tok, image_token, new_rows,
                                   projector, plan, sees and opts.vision_from == "recipient")
        result.tensors = len(steps)
        # Nothing that varies run to run (wall-clock seconds, the output path): two grafts of the same
        # inputs give byte-identical folders. The seconds are returned and printed only.
        provenance = {
            "tool": "vadasm", "version": __version__, "kind": "graft",
            "recipe": opts.recipe(),
            "inputs": {role: {"path": str(ck.path), "fingerprint": watch.fingerprint(ck)}
                       for role, ck in roles.items() if ck},
            "result": {k: v for k, v in result.to_dict().items() if k not in ("output", "seconds")},
            "scores": {},
        }
        (tmp / "vadasm_config.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n")
        watch.refuse_changed("graft")
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _input_paths(opts: GraftOptions, donor: str | Path, recipient: str | Path) -> list[str | Path | None]:
    """Every folder or file the graft reads: the output may not touch any of them."""
    return [donor, recipient, opts.base, opts.calibration_images, opts.donor_data, opts.recipient_data]


def record_scores(output: str | Path, scores: dict) -> None:
    """Add measured scores to an output's vadasm_config.json (written after evaluation)."""
    path = Path(output) / "vadasm_config.json"
    provenance = json.loads(path.read_text())
    provenance["scores"] = scores
    path.write_text(json.dumps(provenance, indent=2, default=str) + "\n")


def _check_options(opts: GraftOptions) -> None:
    if opts.vision_from not in ("recipient", "donor"):
        raise VadasmError(f"--vision-from must be 'recipient' or 'donor', not {opts.vision_from!r}")
    if opts.merge_method not in TEXT_METHODS:
        raise VadasmError(f"--merge-method: {opts.merge_method!r} unknown (choose from {', '.join(TEXT_METHODS)})")
    if opts.map_method not in MAP_METHODS:
        raise VadasmError(f"--map: {opts.map_method!r} unknown (choose from {', '.join(MAP_METHODS)})")
    if not 0 <= opts.protect_ratio <= 1:
        raise VadasmError(f"--protect: {opts.protect_ratio} is not a fraction of layers in [0, 1]")
    if opts.merge_method == "regmean":
        if not (opts.donor_data and opts.recipient_data):
            raise VadasmError("--merge-method regmean needs --donor-data and --recipient-data (the task each model "
                              "was fine-tuned for: easyvqa, arith, or a JSONL file)")
        if not 0 <= opts.regmean_alpha <= 1 or opts.regmean_donor_weight <= 0 or opts.regmean_samples < 1:
            raise VadasmError("regmean: --regmean-alpha must lie in [0, 1], --regmean-donor-weight be > 0 and "
                              "--regmean-samples >= 1")
    if opts.calibration_images and not Path(opts.calibration_images).expanduser().is_dir():
        raise VadasmError(f"{opts.calibration_images}: calibration image folder not found")
    if opts.projector_variance is not None and not 0 < opts.projector_variance <= 1:
        raise VadasmError(f"--projector-variance: {opts.projector_variance} is not in (0, 1]")


def _vision_arch(checkpoint: Checkpoint, role: str) -> Architecture:
    source = str(checkpoint.path / "config.json")
    arch = architecture_for(checkpoint.config, checkpoint.keys(), source)
    if not arch.has_vision:
        raise VadasmError(f"{source}: the {role} has no vision tower (model_type '{arch.model_type}'); "
                          f"a vision donor is a {' or '.join(SUPPORTED_DONORS)} checkpoint")
    if arch.model_type not in SUPPORTED_DONORS:
        raise VadasmError(f"{source}: vision architecture '{arch.model_type}' is not supported for grafting "
                          f"(supported: {', '.join(SUPPORTED_DONORS)})")
    if not any(n.startswith(arch.layout.projector) for n in checkpoint.keys()):
        raise VadasmError(f"{checkpoint.path}: no projector tensors ({arch.layout.projector}*) found")
    return arch


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    return load_with_transformers(lambda: AutoTokenizer.from_pretrained(path), path, "tokenizer")


def _donor_image_token(tokenizer, config: dict) -> str | None:
    index = config.get("image_token_index", config.get("image_token_id"))
    return tokenizer.convert_ids_to_tokens(index) if index is not None and index < len(tokenizer) else None


def _base_view(opts: GraftOptions, pair: PairClass, r_text: TextView, result: GraftResult) -> TextView | None:
    if opts.base is None:
        result.language_model = "recipient unchanged (pass --base to merge the donor's language delta)"
        result.warnings.append("class A without --base: the donor's language-model update is not merged; "
                               "its projector may expect it")
        return None
    base_ck = Checkpoint.open(opts.base, allow_pickle=opts.allow_pickle, trust_remote_code=opts.trust_remote_code)
    base_arch = architecture_for(base_ck.config, base_ck.keys(), str(base_ck.path / "config.json"))
    view = TextView.of(base_ck, base_arch)
    if base_arch.text.model_type != r_text.arch.text.model_type:
        raise VadasmError(f"{base_ck.path / 'config.json'}: base text architecture '{base_arch.text.model_type}' "
                          f"differs from the recipient's '{r_text.arch.text.model_type}'")
    for name, shape in r_text.shapes().items():
        if view.shapes().get(name) != shape:
            raise VadasmError(f"{base_ck.path}: tensor '{name}' has shape {view.shapes().get(name)}, recipient "
                              f"has {shape}; --base must be the common base of donor and recipient")
    protected = round(opts.protect_ratio * (r_text.arch.num_layers() or 1))
    detail = {"task_arithmetic": "",
              "regmean": f" (alpha {opts.regmean_alpha}, donor weight {opts.regmean_donor_weight}, grams on "
                         f"{opts.donor_data} / {opts.recipient_data}; other tensors by task arithmetic)",
              }.get(opts.merge_method, f" (density {opts.density})")
    result.language_model = (f"recipient + {opts.beta} x (donor LM - base) by {opts.merge_method}{detail}"
                             + f"; layers 0-{protected - 1} protected" * (protected > 0)
                             + "; embeddings and head from the recipient")
    return view


def _regmean_grams(opts: GraftOptions, donor: Checkpoint, recipient: Checkpoint) -> tuple[dict, dict]:
    """(donor, recipient) input Grams of every language-model linear, each on its own task."""
    from vadasm.graft.grams import cached_grams

    return tuple(cached_grams(str(ck.path), ck.fingerprint(), source, opts.regmean_samples, opts.seed,
                              progress=opts.progress)
                 for ck, source in ((donor, opts.donor_data), (recipient, opts.recipient_data)))


def _text_steps(r_text: TextView, base: TextView | None, donor: TextView, opts: GraftOptions, protected: int,
                rows: int, layout: VisionLayout | None, out_dtype: torch.dtype | None,
                grams: tuple[dict, dict] | None = None) -> list[Step]:
    method = get_method("task_arithmetic" if opts.merge_method == "regmean" else opts.merge_method)
    steps = []
    for text_name in sorted(r_text.names, key=natural_key):
        role = r_text.arch.text.role(text_name)
        shape = r_text.checkpoint.shape(r_text.names[text_name])
        dtype = out_dtype or r_text.checkpoint.dtype(r_text.names[text_name])
        out_name = layout.from_text_name(text_name) if layout else text_name
        gram_key = layer_relative_name(text_name)

        def recipient_tensor(name=text_name):
            return r_text.get(name)

        if role.role in ("embed", "lm_head") and rows != shape[0]:
            steps.append(Step(out_name, (rows, *shape[1:]), dtype, "resize_recipient",
                              lambda name=text_name: _grow_rows(r_text.get(name), rows)))
        elif base is None or role.role in ("embed", "lm_head") or not dtype.is_floating_point:
            steps.append(Step(out_name, shape, dtype, "copy_recipient", recipient_tensor))
        elif role.layer is not None and role.layer < protected:
            steps.append(Step(out_name, shape, dtype, "copy_recipient (protected layer)", recipient_tensor))
        elif grams is not None and all(gram_key in g for g in grams):
            pair_grams = tuple(g[gram_key] for g in grams)
            steps.append(Step(out_name, shape, dtype, "merge (regmean)",
                              lambda name=text_name, g=pair_grams: _regmean_language(opts, name, r_text, base,
                                                                                      donor, g)))
        else:
            steps.append(Step(out_name, shape, dtype, "merge",
                              lambda name=text_name: _merge_language(method, opts, name, r_text, base, donor)))
    return steps


def _regmean_language(opts: GraftOptions, name: str, recipient: TextView, base: TextView, donor: TextView,
                      grams: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The linear weight that best reproduces the recipient on its task's inputs and base + beta x donor
    delta on the donor's (RegMean), instead of adding both deltas everywhere."""
    base_weight = base.get(name).float()
    donor_weight = base_weight + opts.beta * (donor.get(name).float() - base_weight)
    donor_gram, recipient_gram = grams
    return regmean([recipient.get(name).float(), donor_weight], [recipient_gram, donor_gram],
                   model_weight=[1.0, opts.regmean_donor_weight], alpha=opts.regmean_alpha)


def _merge_language(method, opts: GraftOptions, name: str, recipient: TextView, base: TextView,
                    donor: TextView) -> torch.Tensor:
    """recipient + beta * prune(donor - base), through the registry's task-vector methods: the
    recipient's own delta enters with weight 1 and density 1, so it is never pruned."""
    generator = torch.Generator().manual_seed(tensor_seed(opts.seed, name))
    return method.func(
        base.get(name).float(), [recipient.get(name).float(), donor.get(name).float()],
        weight=[1.0, opts.beta], density=[1.0, opts.density], normalize=False,
        rescale=True, generator=generator, **{"lambda": 1.0},
    )


def _grow_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """Append rows equal to the mean row (a new token starts as an average token)."""
    extra = tensor.float().mean(0, keepdim=True).expand(rows - tensor.shape[0], *tensor.shape[1:])
    return torch.cat([tensor.float(), extra]).to(tensor.dtype)


def _output_layout(model_type: str) -> VisionLayout:
    d = load_spec(model_type)["layouts"][OUTPUT_LAYOUT]
    return VisionLayout(OUTPUT_LAYOUT, d["text"], d["vision_tower"], d["projector"], tuple(d.get("extra", ())))


def _projector_tensors(checkpoint: Checkpoint, arch: Architecture) -> tuple[dict[str, torch.Tensor], dict]:
    """The projector by its own names (linear_1.weight, ...) and the extras (image_newline)."""
    layout = arch.layout
    projector = {n[len(layout.projector):]: checkpoint.get_checked(n).double()
                 for n in checkpoint.keys() if n.startswith(layout.projector)}
    expected = {"linear_1.weight", "linear_2.weight"}
    if not expected <= projector.keys():
        raise VadasmError(f"{checkpoint.path}: projector has {sorted(projector)}, expected a LLaVA "
                          "linear_1 -> act -> linear_2 projector")
    extra = {n: checkpoint.get_checked(n).double() for n in checkpoint.keys() if arch.role(n).part == "vision_extra"}
    return projector, extra


def _map_projector(opts: GraftOptions, result: GraftResult, donor_ck: Checkpoint, donor_arch: Architecture,
                   d_text: TextView, r_text: TextView, d_tok, r_tok, projector: dict, extra: dict
                   ) -> tuple[dict, dict]:
    """Fit every map on shared anchors, score them against controls, fold the chosen one."""
    d_rows = min(len(d_tok), d_text.shapes()[d_text.embed_name][0])
    r_rows = min(len(r_tok), r_text.shapes()[r_text.embed_name][0])
    d_strings, r_strings = _token_strings(d_tok, d_rows), _token_strings(r_tok, r_rows)
    d_ids, r_ids = shared_anchors(d_strings, r_strings)
    if len(d_ids) < opts.min_anchors:
        raise VadasmError(f"{r_text.checkpoint.path}: the tokenizers share only {len(d_ids)} tokens with identical "
                          f"decoded strings (need at least {opts.min_anchors} anchors to fit an embedding map)")
    x = d_text.effective_embeddings(d_rows)
    y = r_text.effective_embeddings(r_rows)
    generator = torch.Generator().manual_seed(opts.seed)
    fit, held = split_anchors(len(d_ids), opts.heldout, generator)
    result.anchors = len(d_ids)
    x_fit, y_fit = x[d_ids[fit]], y[r_ids[fit]]

    features = _calibration(opts, donor_ck, donor_arch)
    donor_tokens = None
    if features is not None:
        acts = _act(donor_ck.config)(features.double() @ projector["linear_1.weight"].T
                                     + projector.get("linear_1.bias", 0))
        donor_out = acts @ projector["linear_2.weight"].T + projector.get("linear_2.bias", 0)
        donor_tokens = _nearest_strings(donor_out, x, d_strings)

    maps: dict[str, EmbeddingMap] = {}
    for method in MAP_METHODS:
        maps[method] = fit_map(x_fit, y_fit, method, ridge=opts.ridge, omp_k=opts.omp_k)
    for control in CONTROLS:
        maps[control] = control_map(x_fit, y_fit, control, generator)
    for name, fmap in maps.items():
        quality = retrieval_quality(fmap, x[d_ids[held]], r_ids[held], y)
        agreement = None
        if donor_tokens is not None:
            mapped = _nearest_strings(fmap(donor_out), y, r_strings)
            agreement = sum(a == b for a, b in zip(donor_tokens, mapped)) / len(mapped)
        result.maps.append(MapFit(name, name in CONTROLS, quality, agreement))
    _judge_maps(result)

    chosen = fit_map(x[d_ids], y[r_ids], opts.map_method, ridge=opts.ridge, omp_k=opts.omp_k)
    result.chosen_map = opts.map_method
    w2, b2 = fold_affine_map(projector["linear_2.weight"], projector.get("linear_2.bias"), chosen.matrix,
                             chosen.scale, chosen.mu_in, chosen.mu_out)
    width = r_text.arch.text.config_value(r_text.arch.text_config, "hidden_size")
    act_name = donor_ck.config.get("projector_hidden_act", "gelu")
    if width != w2.shape[1] and act_name not in ZERO_PRESERVING_ACTS:
        raise VadasmError(f"{donor_ck.path / 'config.json'}: projector activation '{act_name}' has act(0) != 0; "
                          "cannot resize its hidden width exactly or approximately")
    w1, b1, w2, b2, resize = resize_hidden(projector["linear_1.weight"], projector.get("linear_1.bias"), w2, b2,
                                           width, acts if features is not None else None)
    mapped = {"linear_1.weight": w1, "linear_1.bias": b1, "linear_2.weight": w2, "linear_2.bias": b2}
    result.projector["hidden"] = asdict(resize)
    if features is not None:
        graft_out = _act(donor_ck.config)(features.double() @ w1.T + b1) @ w2.T + b2
        target = chosen(donor_out)
        result.projector["resize_relative_error_on_calibration"] = round(
            float((graft_out - target).norm() / target.norm()), 5)
    elif not resize.exact:
        result.warnings.append(f"projector hidden width cut {resize.old_width} -> {resize.new_width} by weight norms "
                               f"only ({100 * resize.dropped_weight_share:.1f}% of |W2|^2 dropped); pass "
                               "--calibration-images to choose units on real features and compensate")
    new_extra = {name: chosen(t[None])[0] for name, t in extra.items()}  # image_newline lives in text space
    return mapped, new_extra


def _token_strings(tokenizer, rows: int) -> list[str]:
    """Each id decoded on its own; special tokens become '' (control tokens are not anchors)."""
    strings = tokenizer.batch_decode([[i] for i in range(rows)])
    for i in tokenizer.all_special_ids:
        if i < rows:
            strings[i] = ""
    return strings


def _judge_maps(result: GraftResult) -> None:
    """Say, every run, whether each map beats the best control on held-out retrieval."""
    controls = [m for m in result.maps if m.control]
    best = max(controls, key=lambda m: m.quality.top1)
    for m in result.maps:
        if not m.control and m.quality.top1 <= best.quality.top1:
            result.warnings.append(f"map '{m.method}' does not beat the '{best.method}' control on held-out anchors "
                                   f"(top-1 {100 * m.quality.top1:.1f}% vs {100 * best.quality.top1:.1f}%)")


def _calibration(opts: GraftOptions, donor_ck: Checkpoint, donor_arch: Architecture) -> torch.Tensor | None:
    if not opts.calibration_images:
        return None
    from vadasm.graft.calibration import image_files, vision_features

    processor = _donor_processor(donor_ck.path)
    return vision_features(donor_ck, donor_arch, processor.image_processor,
                           image_files(opts.calibration_images, opts.calibration_limit))


def _act(config: dict):
    from transformers.activations import ACT2FN

    return ACT2FN[config.get("projector_hidden_act", "gelu")]


def _nearest_strings(vectors: torch.Tensor, vocab: torch.Tensor, strings: list[str], chunk: int = 512) -> list[str]:
    vocab_n = torch.nn.functional.normalize(vocab.float(), dim=1)
    out = []
    for start in range(0, len(vectors), chunk):
        v = torch.nn.functional.normalize(vectors[start:start + chunk].float(), dim=1)
        out += [strings[i] for i in (v @ vocab_n.T).argmax(1).tolist()]
    return out


def _reduce_projector(projector: dict, variance: float, result: GraftResult) -> None:
    report = {}
    for name in ("linear_1.weight", "linear_2.weight"):
        red = svd_subspace_reduction(projector[name], variance)
        projector[name] = red.weight
        report[name] = {"rank": red.rank, "full_rank": red.full_rank, "variance_kept": round(red.variance_kept, 5),
                        "dense_parameters": red.dense_parameters, "factored_parameters": red.factored_parameters}
        if red.factored_parameters >= red.dense_parameters:
            result.warnings.append(f"projector {name}: rank {red.rank} factors would take {red.factored_parameters:,} "
                                   f"parameters, not fewer than the dense {red.dense_parameters:,}: no size saving")
    result.projector["svd_subspace_reduction"] = report
    result.projector["svd_storage"] = ("dense rank-r reconstruction (stock LLaVA layers are dense): the file size "
                                       "is unchanged; factored_parameters is what U_r S_r and V_r^T would take")


def _vision_steps(checkpoint: Checkpoint, arch: Architecture, layout: VisionLayout, projector: dict, extra: dict,
                  out_dtype: torch.dtype | None) -> list[Step]:
    steps = []
    for name in sorted(checkpoint.keys(), key=natural_key):
        if arch.role(name).part != "vision_tower":
            continue
        out_name = layout.vision_tower + name[len(arch.layout.vision_tower):]
        steps.append(Step(out_name, checkpoint.shape(name), out_dtype or checkpoint.dtype(name), "copy_donor",
                          lambda name=name: checkpoint.get_checked(name)))
    first_projector = next(n for n in checkpoint.keys() if n.startswith(arch.layout.projector))
    reference_dtype = checkpoint.dtype(first_projector)
    for short, tensor in sorted(projector.items()):
        steps.append(Step(layout.projector + short, tuple(tensor.shape), out_dtype or reference_dtype, "projector",
                          lambda tensor=tensor: tensor))
    for name, tensor in sorted(extra.items()):
        out_name = next(e for e in layout.extra if e.split(".")[-1] == name.split(".")[-1])
        steps.append(Step(out_name, tuple(tensor.shape), out_dtype or reference_dtype, "extra",
                          lambda tensor=tensor: tensor))
    return steps


def _write_text_sidecars(out: Path, recipient: Checkpoint, plan: list[PlannedTensor]) -> None:
    for file in recipient.sidecar_files():
        shutil.copy2(file, out / file.name)
    config = dict(recipient.config)
    _set_dtype(config, plan)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _write_vision_sidecars(out: Path, vision_ck: Checkpoint, recipient_ck: Checkpoint, r_text: TextView, r_tok,
                           image_token: ImageTokenChoice | None, rows: int, projector: dict,
                           plan: list[PlannedTensor], keep_recipient_vision: bool) -> None:
    """config.json (vision source's, with the recipient's text_config) and the processor."""
    config = {k: v for k, v in vision_ck.config.items() if k != "transformers_version"}
    text_config = dict(recipient_ck.config.get("text_config") or recipient_ck.config)
    text_config.pop("transformers_version", None)
    key = r_text.arch.text.spec["config"]["vocab_size"]
    text_config[key if isinstance(key, str) else key[0]] = rows
    text_config["tie_word_embeddings"] = r_text.tied
    config["text_config"] = text_config
    config["tie_word_embeddings"] = r_text.tied
    config["multimodal_projector_bias"] = "linear_1.bias" in projector
    for field_name in ("image_token_index", "image_token_id"):
        if image_token and (field_name in config or field_name == "image_token_index"):
            config[field_name] = image_token.token_id
    _set_dtype(config, plan)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation = recipient_ck.path / "generation_config.json"
    if generation.is_file():
        shutil.copy2(generation, out / generation.name)
    if keep_recipient_vision:
        for file in vision_ck.sidecar_files():
            if file.name != "generation_config.json":
                shutil.copy2(file, out / file.name)
        return
    donor_processor = _donor_processor(vision_ck.path)
    processor = type(donor_processor)(
        image_processor=donor_processor.image_processor,
        tokenizer=r_tok,
        patch_size=donor_processor.patch_size,
        vision_feature_select_strategy=donor_processor.vision_feature_select_strategy,
        chat_template=vision_chat_template(getattr(r_tok, "chat_template", None), image_token.token),
        image_token=image_token.token,
        num_additional_image_tokens=donor_processor.num_additional_image_tokens,
    )
    processor.save_pretrained(out)


def _donor_processor(path: Path):
    from transformers import AutoProcessor

    processor = load_with_transformers(lambda: AutoProcessor.from_pretrained(path), path, "image processor")
    if not hasattr(processor, "image_processor"):
        raise VadasmError(f"{path}: no image processor (preprocessor_config.json) beside the weights")
    return processor


def _set_dtype(config: dict, plan: list[PlannedTensor]) -> None:
    dtypes = {p.dtype for p in plan if p.dtype.is_floating_point}
    if len(dtypes) == 1:
        config["dtype" if "dtype" in config or "torch_dtype" not in config else "torch_dtype"] = str(
            next(iter(dtypes))).removeprefix("torch.")
