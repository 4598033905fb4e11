"""How to run a blend sweep: the options `vadasm blend` derives its flags from (one declaration each)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vadasm.blend.select import TensorSelector
from vadasm.errors import VadasmError
from vadasm.io import DEFAULT_SHARD_SIZE, parse_dtype
from vadasm.options import (
    ALLOW_PICKLE_HELP,
    DEVICE_HELP,
    FORCE_HELP,
    SHARD_SIZE_HELP,
    TRUST_REMOTE_CODE_HELP,
    option,
)

INCLUDE_HELP = "Only tensors matching this glob (whole name) or 're:REGEX' (searched). Repeatable."
EXCLUDE_HELP = "Leave out tensors matching this glob or 're:REGEX'. Repeatable."


def parse_alphas(text: str) -> list[float]:
    """'0,0.5,1' -> [0.0, 0.5, 1.0]; anything but finite numbers is refused in one line."""
    try:
        alphas = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise VadasmError(f"--alphas '{text}': expected comma-separated numbers, e.g. 0,0.2,0.4,0.6,0.8,1.0") from None
    if not all(a == a and abs(a) != float("inf") for a in alphas):
        raise VadasmError(f"--alphas '{text}': alphas must be finite numbers")
    return alphas


def _dtype_or_none(text: str) -> torch.dtype | None:
    return parse_dtype(text) if text else None


@dataclass
class BlendOptions:
    """One sweep's settings; `selector` is built from include/exclude/include_embeddings (bad patterns fail here)."""

    alphas: list[float] = option("0,0.2,0.4,0.6,0.8,1.0", parse=parse_alphas, help=(
        "Comma-separated alphas: 1 keeps the after model, 0 gives it the before model's singular values."))
    rank: int | None = option(None, help="Blend only the top-k singular values (the rest stay as after).")
    from_decomposition: str | None = option(None, help=(
        "Reuse the after model's SVDs from a 'vadasm decompose' folder instead of computing them."))
    include: list[str] = option(default_factory=list, help=INCLUDE_HELP)
    exclude: list[str] = option(default_factory=list, help=EXCLUDE_HELP)
    include_embeddings: bool = option(True, flag="--include-embeddings/--exclude-embeddings", help=(
        "Token embeddings and LM head: SVD-blended like every other 2-D weight (default, as the seed), "
        "or left out of the SVD and interpolated linearly, a*W_after + (1-a)*W_before, so alpha 0 has "
        "the before model's and alpha 1 the after model's exactly (recorded in svd_blend_meta.json)."))
    dtype: torch.dtype | None = option(None, parse=_dtype_or_none, help=(
        "Output dtype (float32, bfloat16, float16); default: each tensor keeps the after model's."))
    shard_size: str = option(DEFAULT_SHARD_SIZE, help=SHARD_SIZE_HELP)
    device: str = option("cpu", help=DEVICE_HELP)  # `vadasm blend` defaults to auto, resolved by the CLI
    force: bool = option(False, help=FORCE_HELP)
    allow_pickle: bool = option(False, help=ALLOW_PICKLE_HELP)
    trust_remote_code: bool = option(False, help=TRUST_REMOTE_CODE_HELP)
    progress: bool = option(True, cli=False, help="Progress bars (the CLI turns them off for --quiet and --json).")
    selector: TensorSelector = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.selector = TensorSelector(list(self.include), list(self.exclude), self.include_embeddings)
