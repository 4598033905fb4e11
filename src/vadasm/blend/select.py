"""Which tensors a blend, decomposition or rotation analysis acts on.

Patterns are shell globs matched against the whole tensor name (`*.mlp.*`), or regular
expressions searched in it when prefixed with `re:` (`re:layers\\.(0|1)\\.`). `include_embeddings`
says whether token embeddings and the LM head are processed: `vadasm blend` does so by default, as
the seed did (every 2-D weight); `decompose` and `rotations` leave them out unless asked for, as
their vocabulary-sized SVDs are the most expensive and rarely what an analysis is about.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from vadasm.arch import Architecture, architecture_for
from vadasm.errors import VadasmError

_LAYER = re.compile(r"\.(\d+)\.")
_EMBED_HINTS = ("embed", "lm_head", "wte", "wpe", "word_embeddings")
# The reason given for an embedding or LM head left out by `include_embeddings=False`.
EMBEDDINGS_NOT_SELECTED = "not_selected: embedding or lm_head (pass --include-embeddings)"


def _compile(pattern: str):
    if pattern.startswith("re:"):
        try:
            regex = re.compile(pattern[3:])
        except re.error as err:
            raise VadasmError(f"bad regular expression '{pattern[3:]}': {err}") from None
        return regex.search
    return lambda name: fnmatch.fnmatchcase(name, pattern)


@dataclass
class TensorSelector:
    """Include/exclude patterns plus the embeddings switch; `reason_to_skip` explains a refusal."""

    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    include_embeddings: bool = False

    def __post_init__(self) -> None:
        self._include = [_compile(p) for p in self.include]
        self._exclude = [_compile(p) for p in self.exclude]

    def reason_to_skip(self, name: str, roles: TensorRoles) -> str | None:
        if self._include and not any(match(name) for match in self._include):
            return "not_selected: no --include pattern matches"
        if any(match(name) for match in self._exclude):
            return "not_selected: matches an --exclude pattern"
        if not self.include_embeddings and roles.is_embedding(name):
            return EMBEDDINGS_NOT_SELECTED
        return None


class TensorRoles:
    """Role lookup from the architecture table, falling back to name hints for unknown families.

    Blending needs only "is this an embedding" and "which layer / matrix type", so it works on
    architectures the table does not list yet; `known` records which way was used.
    """

    def __init__(self, config: dict, tensor_names: list[str]):
        try:
            self.arch: Architecture | None = architecture_for(config, tensor_names)
        except VadasmError:
            self.arch = None

    @property
    def known(self) -> bool:
        return self.arch is not None

    def is_embedding(self, name: str) -> bool:
        if self.arch is not None:
            return self.arch.role(name).role in ("embed", "lm_head")
        return any(hint in name for hint in _EMBED_HINTS)

    def layer_and_type(self, name: str) -> tuple[int | None, str]:
        """(layer index, matrix type) for grouping, e.g. (3, "attn_q")."""
        if self.arch is not None:
            role = self.arch.role(name)
            if role.layer is not None and role.role != "unknown":
                return role.layer, role.role
        found = _LAYER.search(name)
        if found is None:
            return None, name.removesuffix(".weight")
        return int(found.group(1)), name[found.end():].removesuffix(".weight")
