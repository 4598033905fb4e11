"""Run a graft: open -> classify the pair -> fit maps (B/C) -> plan tensors -> for each tensor
read, transform, write -> config, processor, provenance.

The output is a stock LLaVA / LLaVA-Next checkpoint: the recipient's language model (merged with
the donor's language delta in class A), the donor's vision tower, and the donor's projector moved
into the recipient's embedding space (class B/C). Follow one weight by reading `graft` top to bottom;
each stage lives in its own module: options, pairing (models, pair class, image token), language
(the language merge), vision (tower and projector map), write (sidecars and provenance).
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from vadasm.arch import architecture_for
from vadasm.errors import VadasmError
from vadasm.graft.calibrated_map import calibrated_projector
from vadasm.graft.closed_form import closed_form_projector, linear_projector_config
from vadasm.graft.language import open_base, protected_layers, regmean_grams, text_steps
from vadasm.graft.options import CALIBRATED_MAP, GraftOptions, check_options
from vadasm.graft.pairing import TextView, load_tokenizer, register_image_token, vision_arch
from vadasm.graft.pairs import classify_pair
from vadasm.graft.result import GraftResult
from vadasm.graft.vision import map_projector, output_layout, projector_tensors, reduce_projector, vision_steps
from vadasm.graft.write import write_graft_provenance, write_text_sidecars, write_vision_sidecars
from vadasm.io import (
    Checkpoint,
    InputWatch,
    PlannedTensor,
    ShardedWriter,
    atomic_output_dir,
    check_output_free,
    parse_dtype,
    parse_size,
)


def graft(donor: str | Path, recipient: str | Path, output: str | Path, options: GraftOptions | None = None
          ) -> GraftResult:
    """Give `recipient` the donor VLM's vision (tower + projector), training-free, in the folder `output`.

    The pair class (A: shared base; B: same tokenizer, other sizes; C: other tokenizer) decides what
    is possible: class A also merges the donor's language delta over `options.language.base`; B and C
    keep the recipient's language model and map the projector into its embedding space. Bad inputs are
    a one-line `VadasmError`; the output is written atomically. Returns what was done and why.
    """
    opts = options or GraftOptions()
    started = time.perf_counter()
    output = Path(output)
    check_output_free(output, opts.output.force, _input_paths(opts, donor, recipient))
    check_options(opts)

    # The pair: both models, their language models by text names, the pair class.
    open_ = {"allow_pickle": opts.output.allow_pickle, "trust_remote_code": opts.output.trust_remote_code}
    donor_ck, recipient_ck = Checkpoint.open(donor, **open_), Checkpoint.open(recipient, **open_)
    watch = InputWatch([donor_ck, recipient_ck])  # fingerprints at open; checked again before the rename
    donor_arch = vision_arch(donor_ck, "donor")
    recipient_arch = architecture_for(recipient_ck.config, recipient_ck.keys(), str(recipient_ck.path / "config.json"))
    if recipient_arch.has_vision:
        vision_arch(recipient_ck, "recipient")
    d_text, r_text = TextView.of(donor_ck, donor_arch), TextView.of(recipient_ck, recipient_arch)
    d_tok, r_tok = load_tokenizer(donor_ck.path), load_tokenizer(recipient_ck.path)
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
    keep_vision = sees and opts.vision_from == "recipient"
    vision_ck, vision_model = (recipient_ck, recipient_arch) if keep_vision else (donor_ck, donor_arch)

    # The language model: class A merges the donor's delta over the base; B/C keep the recipient.
    base_view = open_base(opts, r_text, result) if pair.label == "A" else None
    watch.add(base_view.checkpoint if base_view else None)
    if pair.label != "A":
        result.language_model = "recipient unchanged (no shared base; cross-size deltas are not task vectors)"
    protected = protected_layers(opts, recipient_arch.num_layers())

    # The image token, in the recipient's tokenizer.
    image_token = None
    if not opts.text_only and not keep_vision:
        image_token = register_image_token(d_tok, r_tok, donor_ck.config, opts.image_token, recipient_ck.path)
        result.image_token = image_token
    embed_rows = r_text.shapes()[r_text.embed_name][0]
    new_rows = max(embed_rows, image_token.token_id + 1) if image_token else embed_rows
    if new_rows != embed_rows:
        result.warnings.append(f"embeddings resized {embed_rows} -> {new_rows} rows for the image token "
                               "(new rows = mean embedding)")

    # The projector: unchanged (A, or vision kept from a seeing recipient), mapped (B/C), or fitted on
    # calibration images: refitted (--map calibrated) or replaced by the no-donor baseline (closed-form).
    projector, extra = projector_tensors(vision_ck, vision_model)
    closed_form = opts.projector.projector_mode == "closed-form"
    if closed_form:
        if keep_vision:
            raise VadasmError(f"{recipient_ck.path}: --projector closed-form joins the donor's tower to a text "
                              "recipient; this recipient already sees (pass --vision-from donor to replace its vision)")
        projector, extra = closed_form_projector(opts, result, donor_ck, donor_arch, r_text, r_tok)
    elif pair.label != "A" and not opts.text_only and opts.projector.map_method == CALIBRATED_MAP:
        projector, extra = calibrated_projector(opts, result, donor_ck, donor_arch, r_text, r_tok, projector)
    elif pair.label != "A" and not opts.text_only:
        projector, extra = map_projector(opts, result, donor_ck, donor_arch, d_text, r_text, d_tok, r_tok,
                                         projector, extra)
    if opts.projector.projector_variance is not None and not opts.text_only:
        reduce_projector(projector, opts.projector.projector_variance, result)

    # Plan every output tensor, then one loop: compute, write.
    out_dtype = parse_dtype(opts.output.dtype) if opts.output.dtype else None
    text_layout = None if opts.text_only else output_layout(vision_model.model_type)
    # RegMean's forward passes (minutes) come after every check above has passed. beta 0 means "no donor
    # language delta" for every method: the recipient's language model as is.
    lang = opts.language
    regmean_merge = base_view is not None and lang.merge_method == "regmean" and lang.beta != 0
    grams = regmean_grams(opts, donor_ck, recipient_ck) if regmean_merge else None
    steps = text_steps(r_text, base_view, d_text, opts, protected, new_rows, text_layout, out_dtype, grams)
    if not opts.text_only:
        steps += vision_steps(vision_ck, vision_model, text_layout, projector, extra, out_dtype)
    plan = [PlannedTensor(s.name, s.shape, s.dtype) for s in steps]
    roles = {"donor": donor_ck, "recipient": recipient_ck, "base": base_view.checkpoint if base_view else None}
    with atomic_output_dir(output, opts.output.force, _input_paths(opts, donor_ck.path, recipient_ck.path)) as tmp:
        writer = ShardedWriter(tmp, plan, parse_size(opts.output.shard_size))
        for step in tqdm(steps, desc=f"graft (class {pair.label})", unit="tensor", disable=not opts.output.progress):
            writer.write(step.name, step.compute())
        writer.close()
        if opts.text_only:
            result.kind = recipient_arch.model_type
            write_text_sidecars(tmp, recipient_ck, plan)
        else:
            result.kind = vision_model.model_type
            write_vision_sidecars(tmp, vision_ck, recipient_ck, r_text, r_tok, image_token, new_rows,
                                  projector, plan, keep_vision)
            if closed_form:
                linear_projector_config(tmp)
        result.tensors = len(steps)
        write_graft_provenance(tmp, opts, result, watch, roles)
        watch.refuse_changed("graft")
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _input_paths(opts: GraftOptions, donor: str | Path, recipient: str | Path) -> list[str | Path | None]:
    """Every folder or file the graft reads: the output may not touch any of them."""
    reg = opts.language.regmean
    return [donor, recipient, opts.language.base, opts.calibration_images, reg.donor_data, reg.recipient_data,
            opts.projector.calibration_data]
