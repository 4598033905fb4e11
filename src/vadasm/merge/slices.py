"""Which input layers make each output layer: mergekit's `slices:` resolved against the checkpoints.

A `models:` recipe is one slice taking every layer of every model. A slice takes layers
[start, end) from each of its sources (all of one length), merges them with the recipe's method,
and appends them to the output; output layers are numbered in slice order, so stacking slices
(frankenmerges) changes the layer count. Non-layer tensors follow mergekit 0.1.5's planner
(plan.py, pre/post weights): the embeddings and anything else outside the layers come from the
first slice's sources, the final norm and LM head from the last slice's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vadasm.arch import Architecture
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint
from vadasm.merge.recipe import MergeConfig
from vadasm.methods import get_method

# Config lists with one entry per layer, re-indexed like the layers (e.g. sliding/full attention).
LAYER_LISTS = ("layer_types", "no_rope_layers")


@dataclass(frozen=True)
class SliceInput:
    """One source of a slice: the model, its first layer in this slice, its own parameters."""

    model: str
    start: int
    parameters: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class LayerSlice:
    """`length` output layers from `out_start` on, merged from `inputs` (and `base`, if any)."""

    inputs: tuple[SliceInput, ...]
    base: SliceInput | None
    length: int
    out_start: int
    parameters: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def reference(self) -> SliceInput:
        """The source whose tensor names, shapes and dtypes the output follows."""
        return self.base or self.inputs[0]

    @property
    def sources(self) -> list[SliceInput]:
        """Base (if any) and inputs, each once."""
        return list(dict.fromkeys(([self.base] if self.base else []) + list(self.inputs)))


def num_layers_of(checkpoint: Checkpoint, arch: Architecture) -> int:
    """A checkpoint's layer count: its config's, or the layer indices found in its tensor names."""
    text_config = text_config_of(checkpoint.config, arch)
    count = arch.text.config_value(text_config, "num_layers")
    if count is None:
        layers = {arch.role(name).layer for name in checkpoint.keys()} - {None}
        count = max(layers) + 1 if layers else 0
    return int(count)


def text_config_of(config: dict, arch: Architecture) -> dict:
    """The (sub)config that describes the text model's layers."""
    if arch.vision_spec is not None:
        return config.get(arch.vision_spec["text_config_key"]) or config
    return config


def resolve_slices(recipe: MergeConfig, checkpoints: dict[str, Checkpoint], arch: Architecture) -> list[LayerSlice]:
    """The recipe's slices with concrete layer ranges; a range outside its model is refused."""
    method = get_method(recipe.merge_method)
    if recipe.slices is None:
        reference = checkpoints[recipe.base_model or recipe.input_models()[0].model]
        base = SliceInput(recipe.base_model, 0) if recipe.base_model else None
        inputs = tuple(SliceInput(m.model, 0, m.parameters) for m in recipe.input_models())
        return [LayerSlice(inputs, base, num_layers_of(reference, arch), 0)]
    slices, out_start = [], 0
    for i, piece in enumerate(recipe.slices):
        lengths = set()
        for j, src in enumerate(piece.sources):
            start, end = src.layer_range
            available = num_layers_of(checkpoints[src.model], arch)
            if not 0 <= start < end <= available:
                raise VadasmError(f"recipe: slices[{i}].sources[{j}]: layer_range [{start}, {end}] is outside "
                                  f"{src.model} (layers 0 to {available}; the end is exclusive)")
            lengths.add(end - start)
        if len(lengths) != 1:
            raise VadasmError(f"recipe: slices[{i}]: every source must take the same number of layers, "
                              f"got {sorted(lengths)}")
        base_ref = piece.base_model or recipe.base_model
        base_src = next((s for s in piece.sources if s.model == base_ref), None)
        base = SliceInput(base_src.model, base_src.layer_range[0], base_src.parameters) if base_src else None
        inputs = tuple(SliceInput(s.model, s.layer_range[0], s.parameters) for s in piece.sources
                       if method.base_is_input or s is not base_src)
        length = lengths.pop()
        slices.append(LayerSlice(inputs, base, length, out_start, piece.parameters))
        out_start += length
    return slices


def is_identity(slices: list[LayerSlice], checkpoints: dict[str, Checkpoint], arch: Architecture) -> bool:
    """True when every output layer is the same-numbered layer of every input (no renaming)."""
    if len(slices) != 1:
        return False
    only = slices[0]
    return all(s.start == 0 for s in only.sources) and only.length == num_layers_of(
        checkpoints[only.reference.model], arch)


def check_layer_structure(out_layers: dict[int, set[str]], reference: Checkpoint, arch: Architecture) -> None:
    """Refuse an output layer whose tensors differ from those the config describes for that index.

    The output config is the reference's, so a dense layer moved where the reference has a MoE layer
    (deepseek's first_k_dense_replace, llama4's interleave step, qwen's mlp_only_layers) would not
    load; past the reference's depth every layer must look like its (then uniform) layers.
    `out_layers`: output layer -> its tensor names without the layer prefix.
    """
    ref_layers: dict[int, set[str]] = {}
    for name in reference.keys():
        text_name = arch.layout.to_text_name(name) if arch.layout else name
        match = arch.text.layer_pattern.fullmatch(text_name or "")
        if match:
            ref_layers.setdefault(int(match.group("layer")), set()).add(match.group("rest"))
    kinds = {frozenset(v) for v in ref_layers.values()}
    for layer, rests in sorted(out_layers.items()):
        expected = ref_layers.get(layer) if layer in ref_layers else (next(iter(kinds)) if len(kinds) == 1 else None)
        if expected is None or set(expected) != rests:
            raise VadasmError(f"recipe: slices put a layer with other tensors at output layer {layer} than "
                              f"{reference.path / 'config.json'} describes there (e.g. a dense layer where it has "
                              "experts); such layer stacking would not load")


def rename_layer(arch: Architecture, name: str, layer: int) -> str:
    """`name` (a tensor of some layer) as the same tensor of `layer`."""
    text_name = arch.layout.to_text_name(name) if arch.layout else name
    match = arch.text.layer_pattern.fullmatch(text_name or "")
    if match is None:
        raise VadasmError(f"tensor '{name}' is not a layer tensor of {arch.model_type}")
    renamed = arch.text.spec["layer_prefix"].replace("{layer}", str(layer)) + match.group("rest")
    return arch.layout.from_text_name(renamed) if arch.layout else renamed


def output_config(config: dict, slices: list[LayerSlice], checkpoints: dict[str, Checkpoint],
                  arch: Architecture) -> dict:
    """The reference config with the layer count and per-layer lists that follow the slices."""
    config = json_copy(config)
    text_config = text_config_of(config, arch)
    total = sum(s.length for s in slices)
    names = arch.text.spec["config"].get("num_layers") or []
    names = [names] if isinstance(names, str) else list(names)
    present = [n for n in names if n in text_config] or names[:1]
    for name in present:
        text_config[name] = total
    for key in LAYER_LISTS:
        if key not in text_config or not isinstance(text_config[key], list):
            continue
        values = []
        for piece in slices:
            ref = piece.reference
            source = text_config_of(checkpoints[ref.model].config, arch).get(key)
            if not isinstance(source, list) or len(source) < ref.start + piece.length:
                raise VadasmError(f"{checkpoints[ref.model].path / 'config.json'}: '{key}' does not list every "
                                  f"layer, so the output's '{key}' cannot follow the slices")
            values += source[ref.start:ref.start + piece.length]
        text_config[key] = values
    return config


def json_copy(value):
    """A deep copy of a JSON-like value (configs are plain dicts and lists)."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value
