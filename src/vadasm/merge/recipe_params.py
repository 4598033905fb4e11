"""Recipe checks that need the merge method: typed, range-checked parameters and whole-recipe rules.

Every leaf of every parameter setting (a scalar, each entry of a gradient list, each `value` of
a `{filter, value}` condition) goes through the method's `Param.check` when the recipe is loaded,
and the checked value replaces the written one, so the method receives the declared type
(`normalize: "false"` arrives as False, `weight: "0.5"` as 0.5, as in mergekit's lax parsing).
Then rules no single value can break: a global parameter set per model (it would be ignored),
a required parameter missing, the same model listed twice, linear weights that sum to 0 while
normalising (a division by zero), an unknown dtype, a seed out of range.

Errors are ValueError("<key path>: <problem>"); `recipe_from_dict` adds the file name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vadasm.errors import VadasmError, one_line
from vadasm.io.writer import DTYPE_NAMES
from vadasm.merge.recipe_yaml import short
from vadasm.methods.registry import MergeMethod, Param

_CONDITION_KEYS = {"filter", "value"}
# Methods that divide by the sum of the weights, unguarded, and the parameter that switches it on.
_NORMALIZING = {"linear": "normalize", "multislerp": "normalize_weights"}
_SCALARS = (bool, int, float, str)


def check_leaf(param: Param, value: Any, where: str) -> Any:
    """One value converted by `param.check`; numeric strings count as numbers (mergekit does too)."""
    if param.kind in (int, float) and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value.strip())
    elif param.kind is bool and type(value) is int and value in (0, 1):
        value = bool(value)
    if type(value) is int and abs(value).bit_length() > 1000:  # beyond any float: Param.check would overflow
        raise ValueError(f"{where}: '{param.name}' is too large ({abs(value).bit_length()}-bit integer)")
    try:
        return param.check(value)
    except ValueError as err:
        raise ValueError(f"{where}: {one_line(str(err), 200)}") from None


def check_setting(param: Param, setting: Any, where: str) -> Any:
    """A whole setting (scalar, gradient list or `{filter, value}` conditions) with its leaves checked."""
    if isinstance(setting, dict):
        return [_check_condition(param, setting, where)]
    if isinstance(setting, list):
        if not setting:
            raise ValueError(f"{where}: empty list; give a value, a gradient [a, b, ...] or {{filter, value}} entries")
        if all(isinstance(entry, dict) for entry in setting):
            return [_check_condition(param, entry, f"{where}[{i}]") for i, entry in enumerate(setting)]
        return _check_gradient(param, setting, where)
    return check_leaf(param, setting, where)


def _check_gradient(param: Param, values: list, where: str) -> list:
    for i, entry in enumerate(values):
        if isinstance(entry, (dict, list)):
            raise ValueError(f"{where}[{i}]: a list holds either plain values (a gradient) or "
                             f"{{filter, value}} entries, not {short(entry)}")
    return [check_leaf(param, entry, f"{where}[{i}]") for i, entry in enumerate(values)]


def _check_condition(param: Param, condition: dict, where: str) -> dict:
    extra = set(condition) - _CONDITION_KEYS
    if extra or "value" not in condition:
        problem = f"unknown key(s) {short(sorted(map(str, extra)))}" if extra else "no 'value'"
        raise ValueError(f"{where}: a condition is {{filter: NAME-PART, value: ...}}; {problem}")
    flt = condition.get("filter")
    if flt is not None and not isinstance(flt, str):
        raise ValueError(f"{where}.filter: must be a piece of a tensor name (text), got {short(flt)}")
    value = condition["value"]
    if isinstance(value, dict):
        raise ValueError(f"{where}.value: a condition's value is a value or a gradient list, not a mapping")
    checked = _check_gradient(param, value, f"{where}.value") if isinstance(value, list) else \
        check_leaf(param, value, f"{where}.value")
    if isinstance(value, list) and not value:
        raise ValueError(f"{where}.value: empty list")
    return {**condition, "value": checked}


def parameter_scopes(recipe: Any) -> Iterator[tuple[str, dict, bool]]:
    """(key path, parameters dict, is it one model's) for every place a recipe sets parameters."""
    yield "parameters", recipe.parameters, False
    for i, entry in enumerate(recipe.models or []):
        yield f"models[{i}].parameters", entry.parameters, True
    for i, piece in enumerate(recipe.slices or []):
        yield f"slices[{i}].parameters", piece.parameters, False
        for j, source in enumerate(piece.sources):
            yield f"slices[{i}].sources[{j}].parameters", source.parameters, True


def check_recipe(recipe: Any, method: MergeMethod) -> None:
    """Check and convert every parameter in place, then the whole-recipe rules (see module doc)."""
    declared = {p.name: p for p in method.params}
    for where, params, per_model in parameter_scopes(recipe):
        for key in list(params):
            param = declared.get(key)
            if param is None:
                continue  # unknown keys are refused by the recipe's own check, with the known ones listed
            if per_model and not param.per_model:
                raise ValueError(f"{where}.{key}: '{key}' is a global parameter of '{method.name}' and would be "
                                 "ignored here; set it under the top-level 'parameters'")
            params[key] = check_setting(param, params[key], f"{where}.{key}")
    for group, entries, scopes in _groups(recipe):
        _check_required(method, scopes)
        _check_required_per_model(method, recipe, entries, scopes)
        _check_duplicates(group, entries)
        if method.name in _NORMALIZING:
            inputs = [e for e in entries if method.base_is_input or e[0] != recipe.base_model]
            _check_weight_sum(method, _NORMALIZING[method.name], group, inputs, scopes)
    for key in ("dtype", "out_dtype"):
        value = getattr(recipe, key, None)
        if value is not None and value.lower() not in DTYPE_NAMES:
            raise ValueError(f"{key}: unknown dtype {short(value)} (choose from {', '.join(DTYPE_NAMES)})")
    if not 0 <= recipe.seed < 2**63:
        raise ValueError(f"seed: must be between 0 and 2**63 - 1, got {short(recipe.seed)}")


def _groups(recipe: Any) -> Iterator[tuple[str, list[tuple[str, dict, tuple]], list[dict]]]:
    """(where, [(model, its parameters, layer_range)], shared scopes) per set of models merged together."""
    if recipe.slices is None:
        yield "models", [(m.model, m.parameters, ()) for m in recipe.models or []], [recipe.parameters]
        return
    for i, piece in enumerate(recipe.slices):
        entries = [(s.model, s.parameters, tuple(s.layer_range)) for s in piece.sources]
        yield f"slices[{i}].sources", entries, [piece.parameters, recipe.parameters]


def _check_required(method: MergeMethod, scopes: list[dict]) -> None:
    for param in method.params:
        if param.default is None and not param.per_model and not any(param.name in s for s in scopes):
            raise ValueError(f"parameters: '{param.name}' is required by '{method.name}' ({param.describe()})")


def _check_required_per_model(method: MergeMethod, recipe: Any, entries: list[tuple[str, dict, tuple]],
                              scopes: list[dict]) -> None:
    """A per-model parameter without a default (nuslerp's `weight`) is needed for every model but the base."""
    bases = set() if method.base_is_input else {recipe.base_model} | {s.base_model for s in recipe.slices or []}
    for param in method.params:
        if param.default is None and param.per_model and not any(param.name in s for s in scopes):
            missing = [model for model, params, _ in entries if param.name not in params and model not in bases]
            if missing:
                raise ValueError(f"'{param.name}' is required by '{method.name}' for every model, missing for "
                                 f"{short(missing[0])} (set it in its parameters or in the recipe's)")


def model_identity(ref: str) -> str:
    """The same folder written two ways ('./a', 'a/', a symlink) is one model; Hub ids compare as written."""
    path = Path(ref).expanduser()
    try:
        return str(path.resolve()) if path.exists() else ref.strip()
    except OSError:
        return ref.strip()


def _check_duplicates(group: str, entries: list) -> None:
    seen: dict[tuple, int] = {}
    for i, (model, _, layer_range) in enumerate(entries):
        key = (model_identity(model), layer_range)
        if key in seen:
            raise ValueError(f"{group}[{i}]: model {short(model)} is listed twice (also entry {seen[key]}); "
                             "list each model once and set its weight instead")
        seen[key] = i


def _check_weight_sum(method: MergeMethod, switch: str, group: str, entries: list, scopes: list[dict]) -> None:
    """Refuse weights whose sum is 0, or changes sign across layers, for some tensor while normalising."""
    settings = [[params.get("weight")] + [s.get("weight") for s in scopes] for _, params, _ in entries]
    normalize = [s.get(switch) for s in scopes]
    names, ts = sample_points([v for chain in settings + [normalize] for v in chain if v is not None])
    for name in names:
        sums = []
        for t in ts:
            weights = [first_value(chain, name, t, method.param("weight").default) for chain in settings]
            if not first_value(normalize, name, t, method.param(switch).default) or None in weights:
                sums.append(None)  # not normalised here (or a filter leaves a weight unset: refused when run)
                continue
            sums.append(sum(weights))
        where = f"for tensors containing '{name}'" if name else "for some tensors"
        for t, total in zip(ts, sums):
            if total == 0:
                raise ValueError(f"{group}: the weights sum to 0 {where} (layer position t={t:g}); "
                                 f"with {switch}: true that divides by zero")
        for (t0, a), (t1, b) in zip(zip(ts, sums), zip(ts[1:], sums[1:])):
            if a is not None and b is not None and (a < 0) != (b < 0):
                raise ValueError(f"{group}: the weights' sum changes sign between t={t0:g} and t={t1:g} {where}; "
                                 f"with {switch}: true some layer would be divided by about zero")


def sample_points(settings: list) -> tuple[list[str], list[float]]:
    """Tensor names and layer positions where piecewise-linear settings can change: each filter
    (plus a name matching none) and each gradient's breakpoints (plus 0 and 1)."""
    names, ts = {""}, {0.0, 1.0}

    def walk(setting: Any) -> None:
        if isinstance(setting, dict):
            setting = [setting]
        if isinstance(setting, list):
            if len(setting) > 1:
                ts.update(k / (len(setting) - 1) for k in range(len(setting)))
            for entry in setting:
                if isinstance(entry, dict):
                    if isinstance(entry.get("filter"), str):
                        names.add(entry["filter"])
                    walk(entry.get("value"))

    for setting in settings:
        walk(setting)
    names.discard("*")
    return sorted(names), sorted(ts)


def first_value(chain: list, name: str, t: float, default: Any) -> Any:
    """The first setting in `chain` (most specific first) that gives a value for this tensor."""
    for setting in chain:
        if setting is not None:
            value = resolve_setting(setting, name, t)
            if value is not None:
                return value
    return default


def resolve_setting(setting: Any, tensor_name: str, t: float) -> Any:
    """mergekit's parameter semantics: scalar, gradient over layers (t in [0, 1]), or filters."""
    if isinstance(setting, dict):
        setting = [setting]
    if setting is None or isinstance(setting, (bool, int, float, str)):
        return setting
    if isinstance(setting, list):
        if not setting:
            return None
        if all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in setting):
            scaled = t * (len(setting) - 1)
            i0 = int(scaled)
            i1 = min(len(setting) - 1, i0 + 1)
            frac = scaled - i0
            return (1 - frac) * setting[i0] + frac * setting[i1]
        if all(isinstance(e, (bool, int, float, str)) for e in setting):
            return setting[int(t * (len(setting) - 1))]
        for cond in setting:
            if not isinstance(cond, dict) or "value" not in cond:
                raise VadasmError(f"cannot read parameter setting {setting!r}")
            flt = cond.get("filter")
            if flt is None or flt == "*" or flt in tensor_name:
                return resolve_setting(cond["value"], tensor_name, t)
        return None
    raise VadasmError(f"cannot read parameter setting {setting!r}")
