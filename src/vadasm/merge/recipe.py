"""Merge recipes: mergekit's YAML schema for the methods we support, validated at the edge.

`MergeConfig` is the recipe (the seed's name); `ModelConfig` one entry of `models:`. Parameter
values follow mergekit: a scalar, a list of numbers (a gradient across layers) or a list of
`{filter, value}` conditions matched against the tensor name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vadasm.errors import VadasmError, one_line
from vadasm.merge.recipe_params import check_recipe, parameter_scopes
from vadasm.merge.recipe_params import resolve_setting as resolve_setting  # re-exported for merge.tensors
from vadasm.merge.recipe_yaml import read_yaml_mapping
from vadasm.merge.tokenizer_config import TokenizerConfig
from vadasm.methods import get_method

# mergekit keys we accept but that change nothing here (documented in docs/recipes.md).
_IGNORED_KEYS = {"name"}


class ModelConfig(BaseModel):
    """One input model and its per-model parameters (e.g. weight, density)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class SliceSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any] = Field(default_factory=dict)


class Slice(BaseModel):
    """Output layers made from the same-length layer ranges of its sources (merged with the recipe's method)."""

    model_config = ConfigDict(extra="forbid")
    sources: list[SliceSource]
    base_model: str | None = None  # overrides the recipe's base_model for this slice (mergekit)
    parameters: dict[str, Any] = Field(default_factory=dict)


class MergeConfig(BaseModel):
    """A merge recipe. Accepts mergekit's schema for linear / task_arithmetic / ties / dare_* / slerp."""

    model_config = ConfigDict(extra="forbid")
    merge_method: str
    base_model: str | None = None
    models: list[ModelConfig] | None = None
    slices: list[Slice] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None  # union | base | a model of the recipe
    tokenizer: TokenizerConfig | None = None  # mergekit's fuller form of tokenizer_source
    chat_template: str | None = None  # auto | a template name (mergekit's) | a Jinja template
    # vadasm additions (mergekit ignores nothing silently, neither do we):
    seed: int = 0
    exclude_norms: bool = False

    @model_validator(mode="after")
    def _check(self) -> MergeConfig:
        method = get_method(self.merge_method)
        if self.slices is not None and self.models is not None:
            raise ValueError("give either 'models' or 'slices', not both")
        if not self.models and not self.slices:
            raise ValueError("the recipe lists no models")
        for where, entries, base in _input_groups(self):
            listed = [m.model for m in entries]
            if self.slices is not None and len(set(listed)) != len(listed):
                twice = next(m for m in listed if listed.count(m) > 1)
                raise ValueError(f"{where}: '{twice}' is a source twice; a slice merges each model once "
                                 "(as mergekit); stack its ranges as separate slices")
            if method.needs_base and base is None:
                raise ValueError(f"merge method '{method.name}' needs a base_model")
            if self.slices is not None and method.needs_base and base not in {m.model for m in entries}:
                raise ValueError(f"{where}: the base model '{base}' is not among the slice's sources "
                                 "(its layer_range says which base layers to use)")
            inputs = [m for m in entries if not (m.model == base and not method.base_is_input)]
            if method.exact_inputs is not None and len(inputs) != method.exact_inputs:
                raise ValueError(
                    f"{where}: merge method '{method.name}' merges "
                    f"{'the base with ' if base and not method.base_is_input else ''}exactly {method.exact_inputs} "
                    f"{'other ' if base and not method.base_is_input else ''}model(s), got {len(inputs)}"
                )
            if method.min_inputs is not None and len(inputs) < method.min_inputs:
                raise ValueError(f"{where}: merge method '{method.name}' needs at least {method.min_inputs} "
                                 f"models besides the base, got {len(inputs)}")
        known = set(method.model_params) | set(method.global_params)
        entry_params = ([(f"models[{i}].parameters", m.parameters) for i, m in enumerate(self.models or [])]
                        + [(f"slices[{i}].parameters", s.parameters) for i, s in enumerate(self.slices or [])]
                        + [(f"slices[{i}].sources[{j}].parameters", src.parameters)
                           for i, s in enumerate(self.slices or []) for j, src in enumerate(s.sources)])
        for where, params in [("parameters", self.parameters)] + entry_params:
            unknown = set(params) - known
            if unknown:
                raise ValueError(
                    f"{where}: unknown parameter(s) {sorted(unknown)} for '{method.name}' (known: {sorted(known)})"
                )
        check_recipe(self, method)  # every value typed and range-checked; whole-recipe rules (recipe_params)
        if method.needs_data:
            from vadasm.merge.calibration import check_calibration_settings  # imports the graft, which imports us

            check_calibration_settings([(where, params) for where, params, _ in parameter_scopes(self)])
        _check_tokenizer(self)
        return self

    def input_models(self) -> list[ModelConfig]:
        """The models whose tensors are combined (the base is separate for task-vector methods).
        For a `models:` recipe; a `slices:` recipe has these per slice (vadasm.merge.slices)."""
        method = get_method(self.merge_method)
        if method.base_is_input:
            models = list(self.models or [])
            if method.base_joins_inputs and self.base_model and self.base_model not in {m.model for m in models}:
                models.append(ModelConfig(model=self.base_model))  # mergekit merges it as one more input
            return models
        return [m for m in self.models or [] if m.model != self.base_model]

    def referenced_models(self) -> list[str]:
        """Every model the recipe names, base first, each once."""
        refs = [self.base_model] if self.base_model else []
        refs += [m.model for m in self.models or []]
        for piece in self.slices or []:
            refs += ([piece.base_model] if piece.base_model else []) + [src.model for src in piece.sources]
        return list(dict.fromkeys(refs))


def _check_tokenizer(recipe: MergeConfig) -> None:
    """tokenizer_source / tokenizer: name the union, the base or a model of the recipe."""
    if recipe.tokenizer_source is not None and recipe.tokenizer is not None:
        raise ValueError("give either 'tokenizer_source' or 'tokenizer', not both")
    refs = set(recipe.referenced_models())
    source = recipe.tokenizer.source if recipe.tokenizer else recipe.tokenizer_source
    where = "tokenizer.source" if recipe.tokenizer else "tokenizer_source"
    if source is not None and source not in ("union", "base") and source not in refs:
        raise ValueError(f"{where} '{source}' is neither 'union', 'base' nor a model of the recipe")
    for token, spec in ((recipe.tokenizer.tokens if recipe.tokenizer else None) or {}).items():
        model = spec.source_model()
        if model is not None and model not in refs:
            raise ValueError(f"tokenizer.tokens[{token!r}].source: '{model}' is not a model of the recipe")


def _input_groups(recipe: MergeConfig) -> list[tuple[str, list[ModelConfig], str | None]]:
    """(where, entries, base) for each set of models merged together: `models:`, or each slice."""
    if recipe.slices is None:
        return [("models", list(recipe.models or []), recipe.base_model)]
    return [(f"slices[{i}]", [ModelConfig(model=src.model, parameters=src.parameters) for src in piece.sources],
             piece.base_model or recipe.base_model) for i, piece in enumerate(recipe.slices)]


def read_recipe_yaml(path: str | Path) -> dict:
    """The recipe file as a plain mapping, with one-line errors for missing or malformed files.

    Read by `recipe_yaml`: at most 1 MB, UTF-8, aliases and nesting bounded, duplicate keys refused.
    """
    return read_yaml_mapping(path, "recipe", "at least 'merge_method' and 'models'")


def load_recipe(path: str | Path) -> MergeConfig:
    """Read and validate a mergekit-style YAML recipe; any problem is a one-line `VadasmError` naming the file."""
    raw = read_recipe_yaml(path)
    for key in _IGNORED_KEYS & raw.keys():
        raw.pop(key)
    return recipe_from_dict(raw, source=str(path))


def recipe_from_dict(raw: dict, source: str = "recipe") -> MergeConfig:
    try:
        return MergeConfig.model_validate(raw)
    except ValidationError as err:
        raise VadasmError(validation_error_line(source, err)) from None
    except VadasmError as err:
        raise VadasmError(one_line(f"{source}: {err}")) from None


def validation_error_line(source: str, err: ValidationError) -> str:
    """pydantic's first complaint as one line: `SOURCE: key.path: message`."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return one_line(f"{source}: {where + ': ' if where else ''}{message}")
