"""Loading a checkpoint with transformers' own classes, for the commands that run a model (eval, tune,
align, moe gates): the folder passes our reader's checks first, and whatever transformers raises
becomes one line naming the folder, instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from vadasm.errors import VadasmError
from vadasm.io.checkpoint import Checkpoint

T = TypeVar("T")


def check_model_folder(path: Path) -> None:
    """Run the reader's checks (headers, shards inside the folder, config against tensors, sidecars)
    on a safetensors folder; pickle-only folders are left to transformers' own safe loading."""
    if any(Path(path).glob("*.safetensors")):
        Checkpoint.open(path)


def load_with_transformers(load: Callable[[], T], path: Path, what: str) -> T:
    """`load()`, with any failure of transformers (missing tokenizer backend, bad file ...) as one line."""
    try:
        return load()
    except (VadasmError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - transformers raises many types; the user needs the reason
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise VadasmError(f"{path}: transformers cannot load the {what} ({reason})") from None
