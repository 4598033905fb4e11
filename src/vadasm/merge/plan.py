"""The tensor plan: every output tensor, where its inputs come from and what happens to it.

Decided from the headers alone, before any weight is read, so bad inputs are refused early.
"""

from __future__ import annotations

from dataclasses import dataclass

from vadasm.arch import Architecture
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint
from vadasm.io.provenance import natural_key
from vadasm.merge.slices import LayerSlice, rename_layer

POST_ROLES = ("final_norm", "lm_head")  # planned from the last slice, as mergekit's post_weights


@dataclass
class TensorAction:
    """What happens to one output tensor, and why when it is not a plain merge."""

    name: str
    action: str  # "merge", "copy_base", "truncate_then_merge"
    reason: str = ""
    layer: int | None = None  # output layer
    shape: tuple[int, ...] = ()
    slice: int = 0  # index of the slice whose sources make it
    t: float = 0.0  # position in the slice, 0 -> 1 (gradient parameters); 0 outside the layers
    source_names: dict[str, str] | None = None  # model -> its tensor's name, when it differs from `name`

    def source_name(self, model: str) -> str:
        return (self.source_names or {}).get(model, self.name)


def is_vocabulary_tensor(arch: Architecture, name: str) -> bool:
    """Indexed by token on dim 0: the token embeddings, the LM head and its bias (not position embeddings)."""
    text_name = arch.layout.to_text_name(name) if arch.layout else name
    spec = arch.text.spec
    return text_name in spec["embed"] or text_name in (spec["lm_head"], spec.get("lm_head_bias"))


def plan_tensors(slices: list[LayerSlice], checkpoints: dict[str, Checkpoint], arch: Architecture,
                 exclude_norms: bool = False, vocab_rows: int | None = None) -> list[TensorAction]:
    """Every output tensor with its sources, checked for presence and shape in each of them.

    `vocab_rows`: the output vocabulary's size when a tokenizer is built (tokenizer_source); the
    vocabulary tensors then get that many rows and each input's rows are re-indexed to it."""
    actions = []
    last = len(slices) - 1
    for index, roles_wanted in ((0, "pre"), (last, "post")):
        reference = checkpoints[slices[index].reference.model]
        for name in reference.keys():
            role = arch.role(name)
            if role.layer is None and (role.role in POST_ROLES) == (roles_wanted == "post"):
                actions.append(TensorAction(name, "merge", shape=reference.shape(name), slice=index))
    for index, piece in enumerate(slices):
        ref = piece.reference
        reference = checkpoints[ref.model]
        by_layer: dict[int, list[str]] = {}
        for name in reference.keys():
            layer = arch.role(name).layer
            if layer is not None and ref.start <= layer < ref.start + piece.length:
                by_layer.setdefault(layer - ref.start, []).append(name)
        for offset in range(piece.length):
            out_layer = piece.out_start + offset
            t = offset / (piece.length - 1) if piece.length > 1 else 1.0
            for name in by_layer.get(offset, []):
                renamed = {src.model: rename_layer(arch, name, src.start + offset) for src in piece.sources}
                out_name = rename_layer(arch, name, out_layer)
                names = {m: n for m, n in renamed.items() if n != out_name} or None
                actions.append(TensorAction(out_name, "merge", layer=out_layer, shape=reference.shape(name),
                                            slice=index, t=t, source_names=names))
    for action in actions:
        if vocab_rows is not None and is_vocabulary_tensor(arch, action.name):
            action.shape = (vocab_rows, *action.shape[1:])
            action.action, action.reason = "remap_vocab_then_merge", "rows re-indexed to the output vocabulary"
        _check_sources(action, slices[action.slice], checkpoints, arch, exclude_norms)
    return sorted(actions, key=lambda a: natural_key(a.name))


def _check_sources(action: TensorAction, piece: LayerSlice, checkpoints: dict[str, Checkpoint],
                   arch: Architecture, exclude_norms: bool) -> None:
    """Mark tensors that are copied rather than merged; refuse a missing tensor or a shape mismatch."""
    reference = checkpoints[piece.reference.model]
    ref_name = action.source_name(piece.reference.model)
    role = arch.role(ref_name)
    dtype = reference.dtype(ref_name)
    shape = action.shape
    if not dtype.is_floating_point:
        action.action, action.reason = "copy_base", f"not floating point ({dtype})"
        return
    if role.role == "buffer":
        action.action, action.reason = "copy_base", "buffer, not a weight"
        return
    if exclude_norms and role.role in ("norm", "final_norm"):
        action.action, action.reason = "copy_base", "norm excluded by recipe (exclude_norms)"
        return
    for src in piece.sources:
        other, name = checkpoints[src.model], action.source_name(src.model)
        if name not in other:
            raise VadasmError(f"{other.path}: tensor '{name}' is missing (present in {reference.path})")
        other_shape = other.shape(name)
        if other_shape == shape or (action.action == "remap_vocab_then_merge" and other_shape[1:] == shape[1:]):
            continue
        bigger = len(shape) == len(other_shape) and all(o >= s for o, s in zip(other_shape, shape))
        if role.role in ("embed", "lm_head") and bigger:
            action.action = "truncate_then_merge"
            action.reason = (f"vocabulary size differs ({other.path.name}: {other_shape[0]} rows); "
                             f"merged over the reference's first {shape[0]} rows")
        else:
            raise VadasmError(f"{other.path}: tensor '{name}' has shape {other_shape}, "
                              f"but {reference.path} has {shape}; shapes must match to merge")


def layer_contents(actions: list[TensorAction], arch: Architecture) -> dict[int, set[str]]:
    """Output layer -> its tensor names without the layer prefix."""
    contents: dict[int, set[str]] = {}
    for action in actions:
        if action.layer is not None:
            text_name = arch.layout.to_text_name(action.name) if arch.layout else action.name
            contents.setdefault(action.layer, set()).add(arch.text.layer_pattern.fullmatch(text_name).group("rest"))
    return contents
