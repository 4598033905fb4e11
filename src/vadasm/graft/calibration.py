"""Real image features for the projector: the donor's own vision tower run on the user's images.

Used for two things, both optional: choosing which projector units to keep when the recipient is
narrower than the donor, and measuring whether projector outputs (not just token embeddings)
survive the embedding map. Never synthetic: without images those steps fall back to weights only
and say so.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from vadasm.arch import Architecture
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def image_files(folder: str | Path, limit: int) -> list[Path]:
    """The first `limit` images of a folder (sorted by name, searched recursively)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise VadasmError(f"{folder}: calibration image folder not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VadasmError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files[:limit]


@torch.no_grad()
def vision_features(donor: Checkpoint, arch: Architecture, image_processor, files: list[Path]) -> torch.Tensor:
    """Features the donor's projector receives for these images: [n_images * tokens, vision_dim]."""
    from transformers import AutoConfig, AutoModel

    vision_config = dict(donor.config["vision_config"])
    model_type = vision_config.pop("model_type")
    tower = AutoModel.from_config(AutoConfig.for_model(model_type, **vision_config)).eval()
    prefix = arch.layout.vision_tower
    state = {n[len(prefix):]: donor.get(n).float() for n in donor.keys() if n.startswith(prefix)}
    missing, unexpected = tower.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise VadasmError(f"{donor.path}: vision tower weights do not fit its vision_config "
                          f"(missing {missing[:2]}, unexpected {unexpected[:2]})")
    layers = donor.config.get("vision_feature_layer", -2)
    layers = [layers] if isinstance(layers, int) else list(layers)
    strategy = donor.config.get("vision_feature_select_strategy", "default")
    out = []
    for start in range(0, len(files), 16):
        images = [Image.open(f).convert("RGB") for f in files[start:start + 16]]
        pixels = image_processor(images=images, return_tensors="pt")["pixel_values"]
        if pixels.dim() == 5:  # LLaVA-Next crops: every crop is a tower input
            pixels = pixels.flatten(0, 1)
        hidden = tower(pixel_values=pixels.float(), output_hidden_states=True).hidden_states
        feats = torch.cat([hidden[i] for i in layers], dim=-1)
        if strategy == "default":
            feats = feats[:, 1:]
        out.append(feats.reshape(-1, feats.shape[-1]))
    return torch.cat(out)
