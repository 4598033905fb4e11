"""The closed-form no-donor baseline (`--projector closed-form`): the donor's vision tower joined to the
recipient by ONE least-squares linear map, without the donor's projector or language model.

The map reads what the donor's projector reads (the tower's `vision_feature_layer`, CLS dropped as the
donor's `vision_feature_select_strategy` says) and is fitted from each calibration image's pooled (mean)
token onto the recipient's mean input embedding of the image's text ("red circle"), then applied to every
image token at run time: the recipe of small "closed-form mmproj" tools. It answers whether the donor's
projector adds anything: a graft that does not beat this baseline did not need the donor's projector.

How it is stored: a stock LLaVA whose projector is linear. transformers builds the projector as
linear_1 -> ACT2FN[projector_hidden_act] -> linear_2, and ACT2FN has "linear" (the identity), so the map is
linear_1 (weight and bias), linear_2 is the identity with zero bias, and config.json says
`"projector_hidden_act": "linear"`: the loaded model computes exactly the map (multiplying by an identity
matrix and adding zeros is exact in floating point), with no custom code.

Shared with `--map calibrated` (calibrated_map.py): reading the calibration items, the recipient-side
targets and the donor tower's features (`calibration_set`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vadasm.arch import Architecture
from vadasm.errors import VadasmError
from vadasm.graft.calibration import vision_features
from vadasm.graft.calibration_fit import CalibrationFit, fit_and_score
from vadasm.graft.caption_data import caption_items
from vadasm.graft.options import GraftOptions
from vadasm.graft.pairing import TextView, load_processor
from vadasm.graft.result import GraftResult
from vadasm.io import Checkpoint


@dataclass
class CalibrationSet:
    """Calibration images through the donor's tower, and the recipient's embeddings of their texts."""

    features: torch.Tensor  # [n, tokens, d_in] what the donor's projector receives, per image token
    targets: torch.Tensor  # [n, d_out] mean effective input embedding of each text's tokens (recipient)
    token_sets: list[set[int]]  # each text's recipient token ids
    vocab: torch.Tensor  # [rows, d_out] the recipient's effective input embeddings


def calibration_set(opts: GraftOptions, donor_ck: Checkpoint, donor_arch: Architecture, r_text: TextView, r_tok,
                    needed: int, what: str) -> CalibrationSet:
    """The items of --calibration-data through the donor's tower; refuses fewer than `needed` items."""
    source = str(donor_ck.path / "config.json")
    if donor_arch.model_type != "llava":
        raise VadasmError(f"{source}: {what} needs a llava donor (one fixed grid of image tokens per image); this "
                          f"donor is '{donor_arch.model_type}'")
    pm = opts.projector
    items = caption_items(pm.calibration_data, pm.calibration_samples, opts.seed)
    if len(items) < needed:
        raise VadasmError(f"{pm.calibration_data}: {len(items)} calibration items for {what}; the least-squares fit "
                          f"needs at least {needed} (its input width + 1): give more items or a larger "
                          "--calibration-samples")
    rows = min(len(r_tok), r_text.shapes()[r_text.embed_name][0])
    vocab = r_text.effective_embeddings(rows)
    special = set(r_tok.all_special_ids)
    token_sets, targets = [], []
    for item in items:
        encoded = r_tok(" " + item.text, add_special_tokens=False)["input_ids"]  # the words as inside a sentence
        ids = [i for i in encoded if i < rows and i not in special]
        if not ids:
            raise VadasmError(f"{pm.calibration_data}: text {item.text!r} has no token in the recipient's vocabulary")
        token_sets.append(set(ids))
        targets.append(vocab[ids].double().mean(0))
    processor = load_processor(donor_ck.path)
    flat = vision_features(donor_ck, donor_arch, processor.image_processor, [item.image for item in items])
    return CalibrationSet(flat.reshape(len(items), -1, flat.shape[-1]), torch.stack(targets), token_sets, vocab)


def closed_form_projector(opts: GraftOptions, result: GraftResult, donor_ck: Checkpoint, donor_arch: Architecture,
                          r_text: TextView, r_tok) -> tuple[dict[str, torch.Tensor], dict]:
    """The linear projector (linear_1 = the map, linear_2 = identity) and its fit record in `result`."""
    config = donor_ck.config
    layers = config.get("vision_feature_layer", -2)
    d_in = config["vision_config"]["hidden_size"] * (1 if isinstance(layers, int) else len(layers))
    data = calibration_set(opts, donor_ck, donor_arch, r_text, r_tok, d_in + 1, "--projector closed-form")
    pm = opts.projector
    fmap, scores = fit_and_score(data.features, data.targets, pm.calibration_ridge, False, opts.seed,
                                 data.token_sets, data.vocab)
    width = data.targets.shape[1]
    strategy = config.get("vision_feature_select_strategy", "default")
    result.projector["closed_form"] = asdict(CalibrationFit(
        "closed-form projector", pm.calibration_data, len(data.features),
        f"donor tower features (vision_feature_layer {layers}, '{strategy}' tokens), mean of each image's "
        f"{data.features.shape[1]} tokens", d_in, False, pm.calibration_ridge, round(fmap.scale, 6),
        scores["fit"], scores["heldout_items"], scores["heldout"], scores["heldout_control"],
        ["the donor's projector and language model are not used; linear projector (projector_hidden_act "
         "'linear', linear_2 = identity)"]))
    w1, b1 = fmap.as_linear()
    eye = torch.eye(width, dtype=torch.float64)
    return {"linear_1.weight": w1, "linear_1.bias": b1, "linear_2.weight": eye,
            "linear_2.bias": torch.zeros(width, dtype=torch.float64)}, {}


def linear_projector_config(folder: Path) -> None:
    """Mark the written config's projector as linear (identity activation, biases on both linears)."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text())
    config["projector_hidden_act"] = "linear"
    config["multimodal_projector_bias"] = True
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
