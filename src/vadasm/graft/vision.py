"""Stage 3, vision and projector: the vision tower copied, the projector kept (class A) or moved into the
recipient's embedding space (class B/C: every map fitted on shared anchor tokens, scored against
controls, the chosen one folded into the projector's last linear), optionally stored at reduced rank.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from vadasm.arch import Architecture, VisionLayout, load_spec
from vadasm.errors import VadasmError
from vadasm.graft.embedding_maps import (
    CONTROLS,
    MAP_METHODS,
    EmbeddingMap,
    control_map,
    fit_map,
    retrieval_quality,
    shared_anchors,
    split_anchors,
)
from vadasm.graft.language import Step
from vadasm.graft.options import GraftOptions
from vadasm.graft.pairing import TextView, load_processor, token_strings
from vadasm.graft.projector import ZERO_PRESERVING_ACTS, fold_affine_map, resize_hidden, svd_subspace_reduction
from vadasm.graft.result import GraftResult, MapFit
from vadasm.io import Checkpoint
from vadasm.io.provenance import natural_key

OUTPUT_LAYOUT = "transformers<4.52"  # the names transformers itself writes (and every version reads)


def output_layout(model_type: str) -> VisionLayout:
    """The tensor names the output is written under (the layout every transformers version reads)."""
    d = load_spec(model_type)["layouts"][OUTPUT_LAYOUT]
    return VisionLayout(OUTPUT_LAYOUT, d["text"], d["vision_tower"], d["projector"], tuple(d.get("extra", ())))


def projector_tensors(checkpoint: Checkpoint, arch: Architecture) -> tuple[dict[str, torch.Tensor], dict]:
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


def map_projector(opts: GraftOptions, result: GraftResult, donor_ck: Checkpoint, donor_arch: Architecture,
                  d_text: TextView, r_text: TextView, d_tok, r_tok, projector: dict, extra: dict
                  ) -> tuple[dict, dict]:
    """Fit every map on shared anchors, score them against controls, fold the chosen one."""
    pm = opts.projector
    d_rows = min(len(d_tok), d_text.shapes()[d_text.embed_name][0])
    r_rows = min(len(r_tok), r_text.shapes()[r_text.embed_name][0])
    d_strings, r_strings = token_strings(d_tok, d_rows), token_strings(r_tok, r_rows)
    d_ids, r_ids = shared_anchors(d_strings, r_strings)
    if len(d_ids) < pm.min_anchors:
        raise VadasmError(f"{r_text.checkpoint.path}: the tokenizers share only {len(d_ids)} tokens with identical "
                          f"decoded strings (need at least {pm.min_anchors} anchors to fit an embedding map)")
    x = d_text.effective_embeddings(d_rows)
    y = r_text.effective_embeddings(r_rows)
    generator = torch.Generator().manual_seed(opts.seed)
    fit, held = split_anchors(len(d_ids), pm.heldout, generator)
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
        maps[method] = fit_map(x_fit, y_fit, method, ridge=pm.ridge, omp_k=pm.omp_k)
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

    chosen = fit_map(x[d_ids], y[r_ids], pm.map_method, ridge=pm.ridge, omp_k=pm.omp_k)
    result.chosen_map = pm.map_method
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


def _judge_maps(result: GraftResult) -> None:
    """Say, every run, whether each map beats the best control on held-out retrieval."""
    controls = [m for m in result.maps if m.control]
    best = max(controls, key=lambda m: m.quality.top1)
    for m in result.maps:
        if not m.control and m.quality.top1 <= best.quality.top1:
            result.warnings.append(f"map '{m.method}' does not beat the '{best.method}' control on held-out anchors "
                                   f"(top-1 {100 * m.quality.top1:.1f}% vs {100 * best.quality.top1:.1f}%)")


def _calibration(opts: GraftOptions, donor_ck: Checkpoint, donor_arch: Architecture) -> torch.Tensor | None:
    """The donor tower's features of the calibration images (None without --calibration-images)."""
    if not opts.calibration_images:
        return None
    from vadasm.graft.calibration import image_files, vision_features

    processor = load_processor(donor_ck.path)
    return vision_features(donor_ck, donor_arch, processor.image_processor,
                           image_files(opts.calibration_images, opts.calibration_limit))


def _act(config: dict):
    """The projector's activation function, as transformers applies it."""
    from transformers.activations import ACT2FN

    return ACT2FN[config.get("projector_hidden_act", "gelu")]


def _nearest_strings(vectors: torch.Tensor, vocab: torch.Tensor, strings: list[str], chunk: int = 512) -> list[str]:
    """The token string nearest (cosine) to each vector, in chunks to bound memory."""
    vocab_n = torch.nn.functional.normalize(vocab.float(), dim=1)
    out = []
    for start in range(0, len(vectors), chunk):
        v = torch.nn.functional.normalize(vectors[start:start + chunk].float(), dim=1)
        out += [strings[i] for i in (v @ vocab_n.T).argmax(1).tolist()]
    return out


def reduce_projector(projector: dict, variance: float, result: GraftResult) -> None:
    """Store the projector's linears at the rank keeping `variance` (in place), reported in `result`."""
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


def vision_steps(checkpoint: Checkpoint, arch: Architecture, layout: VisionLayout, projector: dict, extra: dict,
                 out_dtype: torch.dtype | None) -> list[Step]:
    """The vision tower copied, then the (mapped) projector and its extras, named as `layout` writes them."""
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
