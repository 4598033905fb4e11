"""config.json checked against the tensors it describes.

A config that disagrees with its weights (8 layers said, 4 stored; a vocabulary larger than the
embedding) makes a merge use wrong layer positions or write a model transformers cannot load, so
it is refused when the model is opened. The fields checked are the ones the architecture table
names for the family (`config` in `vadasm/arch/data/<model_type>.json`); layers are counted the way
the table assigns them, so the check and the merge agree on what a layer is.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from vadasm.arch.table import Architecture, architecture_for, load_spec, supported_model_types
from vadasm.errors import VadasmError
from vadasm.io.safetensors_header import shown

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_model_type(config: dict, config_file: Path) -> str:
    """model_type as a plain name: it picks a file of the architecture table, so never a path."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not _PLAIN_NAME.fullmatch(model_type):
        raise VadasmError(f"{config_file}: model_type {shown(model_type)} is not an architecture name")
    return model_type


def check_config_against_tensors(config_file: Path, config: dict, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a config whose numbers are not positive integers or contradict the tensors' shapes.

    Families missing from the table are not checked here: the commands that need the table refuse
    them with the list of supported ones, and blend reads them by name hints.
    """
    model_type = check_model_type(config, config_file)
    if model_type not in supported_model_types():
        return
    spec = load_spec(model_type)
    if spec.get("vision"):
        text_config = config.get(spec["text_config_key"])
        if text_config is not None and not isinstance(text_config, dict):
            raise VadasmError(f"{config_file}: {spec['text_config_key']} must be an object")
        if isinstance(text_config, dict) and text_config.get("model_type") is not None:
            check_model_type(text_config, config_file)
    try:
        arch = architecture_for(config, list(shapes), source=str(config_file))
    except VadasmError:  # a vision model whose language model the table does not list
        return
    sizes = _positive_sizes(config_file, arch.text.spec.get("config", {}), arch.text_config)
    _check_layers(config_file, arch, shapes, sizes.get("num_layers"))
    _check_embedding_shapes(config_file, arch, shapes, sizes.get("vocab_size"), sizes.get("hidden_size"))
    # transformers writes inf/nan as {"__float__": "Infinity"} (Granite 4's time_step_limit) and reads them back.
    from transformers import PreTrainedConfig

    config = PreTrainedConfig._decode_special_floats(config)
    _check_against_transformers(config_file, config, shapes)


def _positive_sizes(config_file: Path, fields: dict, text_config: dict) -> dict[str, tuple[str, int]]:
    """Each size the table names (num_layers, hidden_size, ...) -> (config key, value), all checked."""
    sizes: dict[str, tuple[str, int]] = {}
    for meaning, names in fields.items():
        for key in [names] if isinstance(names, str) else names:
            value = text_config.get(key)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise VadasmError(f"{config_file}: {key} must be a positive integer, found {shown(value)}")
            sizes.setdefault(meaning, (key, value))
    return sizes


def _check_layers(config_file: Path, arch: Architecture, shapes: dict, num_layers: tuple[str, int] | None) -> None:
    if num_layers is None:
        return
    key, expected = num_layers
    found = {role.layer for name in shapes
             if (role := arch.role(name)).part == "text" and role.layer is not None}
    # DeepSeek-V3 stores its multi-token-prediction layers after the last counted one.
    extra = arch.text_config.get("num_nextn_predict_layers")
    allowed = [expected] + ([expected + extra] if isinstance(extra, int) and extra > 0 else [])
    if not any(found == set(range(count)) for count in allowed):
        raise VadasmError(f"{config_file}: {key} is {expected} but the weights hold {_describe_layers(found)}")


def _check_embedding_shapes(config_file: Path, arch: Architecture, shapes: dict, vocab: tuple[str, int] | None,
                            hidden: tuple[str, int] | None) -> None:
    """The embedding (and a stored LM head) must be [vocab_size, hidden_size]."""
    names = [*arch.text.spec.get("embed", [])[:1], arch.text.spec.get("lm_head")]
    for text_name in filter(None, names):
        name = arch.layout.from_text_name(text_name) if arch.layout is not None else text_name
        shape = shapes.get(name)
        if shape is None:
            continue
        if len(shape) != 2:
            raise VadasmError(f"{config_file}: tensor '{name}' has shape {list(shape)}, expected [vocab, hidden]")
        for pair, size, what in ((vocab, shape[0], "rows"), (hidden, shape[1], "columns")):
            if pair is not None and pair[1] != size:
                raise VadasmError(f"{config_file}: {pair[0]} is {pair[1]} but tensor '{name}' has {size} {what}")


def _describe_layers(found: set[int]) -> str:
    if not found:
        return "no layers"
    ordered = sorted(found)
    count = f"{len(ordered)} layer{'s' if len(ordered) > 1 else ''}"
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{count} ({ordered[0]}-{ordered[-1]})"
    return f"{count} ({', '.join(map(str, ordered[:8]))}{', ...' if len(ordered) > 8 else ''})"



def _check_against_transformers(config_file: Path, config: dict, shapes: dict[str, tuple[int, ...]]) -> None:
    """transformers' own config class must accept the config (the type of every field it declares, e.g.
    `tie_word_embeddings: 0.5`), and every stored tensor that the model it builds also names must have the
    shape it expects (head counts, widths ... any field that sizes a tensor): outputs copy the config, and
    an output transformers cannot load is a wrong output."""
    refusal, expected = _what_transformers_makes(json.dumps(config, sort_keys=True))
    if refusal:
        raise VadasmError(f"{config_file}: {refusal}")
    for name, shape in shapes.items():
        want = expected.get(name)
        if want is not None and want != tuple(shape):
            raise VadasmError(f"{config_file}: tensor {shown(name)} has shape {list(shape)}, but this config makes "
                              f"transformers expect {list(want)}")


@functools.lru_cache(maxsize=16)
def _what_transformers_makes(config_json: str) -> tuple[str | None, dict[str, tuple[int, ...]]]:
    """(why transformers refuses the config or cannot build its model, or None; tensor name -> shape of the
    model class named in `architectures`, built on the meta device: no memory, under a second at 135M).
    Unknown model types and classes that are not stock transformers ones give (None, {}). Cached: a base
    and its fine-tunes share one config, and the config is parsed once for both checks."""
    import torch
    import transformers  # imported here: seconds, and only real checkpoints need it

    config = json.loads(config_json)
    if config["model_type"] not in transformers.CONFIG_MAPPING:
        return None, {}
    try:
        parsed = transformers.CONFIG_MAPPING[config["model_type"]].from_dict(dict(config))
    except Exception as err:  # noqa: BLE001 - whatever transformers raises, the config is unusable
        reason = " ".join(line.strip() for line in str(err).splitlines()[:2]) or type(err).__name__
        return f"transformers refuses this config ({reason[:300]})", {}
    names = config.get("architectures")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        return (None if names is None else
                f"transformers cannot build a model from this config (architectures {shown(names)} is not a "
                "list of class names)"), {}
    model_class = getattr(transformers, names[0], None)
    if not isinstance(model_class, type):
        return None, {}
    try:
        with torch.device("meta"):
            model = model_class(parsed)
    except Exception as err:  # noqa: BLE001 - whatever transformers raises, it cannot build the model
        reason = " ".join(str(err).split()) or type(err).__name__
        return f"transformers cannot build a model from this config ({reason[:300]})", {}
    return None, {name: tuple(t.shape) for name, t in model.state_dict().items()}
