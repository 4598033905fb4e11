"""Stage 1, the pair: open both models, view their language models by the text model's own names,
decide the pair class, and register the image token in the recipient's tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vadasm.arch import Architecture, architecture_for
from vadasm.errors import VadasmError
from vadasm.graft.embedding_maps import embed_scale
from vadasm.graft.tokens import ImageTokenChoice, choose_image_token
from vadasm.io import Checkpoint
from vadasm.io.hf_load import load_with_transformers

SUPPORTED_DONORS = ("llava", "llava_next")


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


def vision_arch(checkpoint: Checkpoint, role: str) -> Architecture:
    """The architecture of a vision-language model that can give (or keep) its vision; else one line why not."""
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


def load_tokenizer(path: Path):
    """The model's tokenizer, loaded by transformers (its failures worded as one line)."""
    from transformers import AutoTokenizer

    return load_with_transformers(lambda: AutoTokenizer.from_pretrained(path), path, "tokenizer")


def load_processor(path: Path):
    """The model's processor; one that has no image processor is refused."""
    from transformers import AutoProcessor

    processor = load_with_transformers(lambda: AutoProcessor.from_pretrained(path), path, "image processor")
    if not hasattr(processor, "image_processor"):
        raise VadasmError(f"{path}: no image processor (preprocessor_config.json) beside the weights")
    return processor


def donor_image_token(tokenizer, config: dict) -> str | None:
    """The token the donor's config names as its image token, if its tokenizer has that id."""
    index = config.get("image_token_index", config.get("image_token_id"))
    return tokenizer.convert_ids_to_tokens(index) if index is not None and index < len(tokenizer) else None


def register_image_token(d_tok, r_tok, donor_config: dict, requested: str | None, where: Path) -> ImageTokenChoice:
    """The image token in the recipient's tokenizer (`r_tok`, changed in place): the one `requested`, else
    the donor's if the recipient has it, else a reserved one, else a new one; registered as a special
    added token (also when reused) so text around it never splits it."""
    from tokenizers import AddedToken

    donor_token = donor_image_token(d_tok, donor_config)
    taken = {t for t in (r_tok.bos_token, r_tok.eos_token, r_tok.pad_token, r_tok.unk_token) if t}
    image_token = choose_image_token(r_tok.get_vocab(), donor_token, requested, taken)
    r_tok.add_tokens([AddedToken(image_token.token, special=True, normalized=False)], special_tokens=True)
    new_id = r_tok.convert_tokens_to_ids(image_token.token)
    if image_token.token_id not in (None, new_id):
        raise VadasmError(f"{where}: registering {image_token.token!r} as a special token moved it "
                          f"from id {image_token.token_id} to {new_id}")
    image_token.token_id = new_id
    return image_token


def token_strings(tokenizer, rows: int) -> list[str]:
    """Each id decoded on its own; special tokens become '' (control tokens are not anchors)."""
    strings = tokenizer.batch_decode([[i] for i in range(rows)])
    for i in tokenizer.all_special_ids:
        if i < rows:
            strings[i] = ""
    return strings
