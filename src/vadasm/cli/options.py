"""Typer options generated from an options dataclass, so a flag and its field cannot drift.

`@options_from(MergeOptions)` replaces the command's `options` parameter by one typer option per
field (declared with `vadasm.options.option`: flag, help, default, type from the field) and calls
the command with the built dataclass instance. The command's other parameters (arguments, --json,
--quiet ...) are left alone. Typer reads `inspect.signature`, which honours `__signature__`.
Two flags with one name (a field against a field or against a command parameter) are refused
when the command is defined, not silently shadowed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Union

import typer
from typer.models import OptionInfo

from vadasm.options import flag_name, option_meta

_TYPER_TYPES = (str, int, float, bool)


@dataclasses.dataclass(frozen=True)
class _Flag:
    """One generated typer option: where its value goes in the dataclass and how it is declared."""

    path: tuple[str, ...]  # field names from the outer dataclass down to this field
    parameter: inspect.Parameter
    parse: Callable[[str], Any] | None
    omitted_is_default: bool  # None from typer means "not given": the field keeps its own default


def options_from(cls: type, *, param: str = "options",
                 defaults: Mapping[str, Any] | None = None) -> Callable[[Callable], Callable]:
    """Decorator: the command's parameter `param` becomes the flags of dataclass `cls`.

    `defaults` gives a command its own default for a field (by field name), shown in --help.
    """
    defaults = dict(defaults or {})
    flags = _flags(cls, (), cls(), defaults) if _constructible(cls) else _flags(cls, (), None, defaults)
    unknown = set(defaults) - {f.parameter.name for f in flags}
    if unknown:
        raise TypeError(f"options_from({cls.__name__}): defaults for unknown fields {sorted(unknown)}")

    def decorate(func: Callable) -> Callable:
        hints = typing.get_type_hints(func, include_extras=True)
        params = [p.replace(annotation=hints.get(p.name, p.annotation), kind=inspect.Parameter.KEYWORD_ONLY)
                  for p in inspect.signature(func).parameters.values()]
        names = [p.name for p in params]
        if param not in names:
            raise TypeError(f"{func.__name__}: options_from({cls.__name__}) needs a parameter named '{param}'")
        at = names.index(param)
        merged = [*params[:at], *(f.parameter for f in flags), *params[at + 1:]]
        _check_clashes(func.__name__, merged)

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            values = {f.parameter.name: kwargs.pop(f.parameter.name) for f in flags}
            return func(**kwargs, **{param: build(cls, flags, values)})

        command.__signature__ = inspect.Signature(merged, return_annotation=hints.get("return", None))
        command.__annotations__ = {p.name: p.annotation for p in merged}
        return command

    return decorate


def build(cls: type, flags: list[_Flag], values: Mapping[str, Any], path: tuple[str, ...] = ()) -> Any:
    """The `cls` instance for the flag values by parameter name (nested dataclasses built first)."""
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        inner = [f for f in flags if f.path[:len(path) + 1] == (*path, field.name)]
        if not inner:
            continue
        if len(inner) > 1 or inner[0].path != (*path, field.name):
            kwargs[field.name] = build(_field_type(cls, field), inner, values, (*path, field.name))
            continue
        flag = inner[0]
        value = values[flag.parameter.name]
        if value is None and flag.omitted_is_default:
            continue
        kwargs[field.name] = flag.parse(value) if flag.parse is not None and value is not None else value
    return cls(**kwargs)


def _flags(cls: type, path: tuple[str, ...], instance: Any, defaults: dict[str, Any]) -> list[_Flag]:
    flags: list[_Flag] = []
    for field in dataclasses.fields(cls):
        meta = option_meta(field)
        if not field.init or (meta is not None and not meta.cli):
            continue
        kind = _field_type(cls, field)
        if dataclasses.is_dataclass(kind):
            nested = getattr(instance, field.name) if instance is not None else _default(field)
            flags += _flags(kind, (*path, field.name), nested, defaults)
            continue
        if meta is None:
            raise TypeError(f"{cls.__name__}.{field.name}: declare it with vadasm.options.option(help=...) "
                            "or cli=False")
        flags.append(_flag(cls, field, kind, path, instance, defaults))
    return flags


def _flag(cls: type, field: dataclasses.Field, kind: Any, path: tuple[str, ...], instance: Any,
          defaults: dict[str, Any]) -> _Flag:
    meta = option_meta(field)
    assert meta is not None
    if field.name in defaults:
        default = defaults[field.name]
    elif meta.parse is not None:
        default = meta.text
    elif instance is not None:
        default = getattr(instance, field.name)
    else:
        default = _default(field)
    if meta.parse is not None:
        annotation: Any = str if default is not None else str | None
    else:
        annotation = _cli_type(kind, f"{cls.__name__}.{field.name}")
    omitted = typing.get_origin(annotation) is list or typing.get_origin(_strip_none(annotation)) is list
    if omitted:
        annotation, default = _strip_none(annotation) | None, None if default in (None, [], ()) else default
    if default is inspect.Parameter.empty and annotation is bool:
        default = False
    if meta.flag is not None:
        decls: tuple[str, ...] = (meta.flag,)
    elif annotation is bool and default is not False:
        decls = (f"{flag_name(field)}/--no-{flag_name(field)[2:]}",) if meta.short else ()
    else:
        decls = (flag_name(field),)
    decls += (meta.short,) if meta.short else ()
    info = typer.Option(*decls, help=meta.help_text(), metavar=meta.metavar)
    parameter = inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                  annotation=Annotated[annotation, info])
    return _Flag((*path, field.name), parameter, meta.parse, omitted)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return inspect.Parameter.empty


def _constructible(cls: type) -> bool:
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in dataclasses.fields(cls) if f.init)


def _field_type(cls: type, field: dataclasses.Field) -> Any:
    return typing.get_type_hints(cls)[field.name]


def _strip_none(kind: Any) -> Any:
    if typing.get_origin(kind) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(kind) if a is not type(None)]
        return rest[0] if len(rest) == 1 else kind
    return kind


def _cli_type(kind: Any, where: str) -> Any:
    """The type typer parses for a field: the field's own, or `str` for a union of several types."""
    optional = kind is not _strip_none(kind) or kind is type(None)
    inner = _strip_none(kind)
    if typing.get_origin(inner) in (Union, types.UnionType):
        members = [a for a in typing.get_args(inner) if a is not type(None)]
        if str not in members:
            raise TypeError(f"{where}: a flag cannot hold {kind}; give the option a parse= function")
        inner = str
    elif typing.get_origin(inner) is list:
        if typing.get_args(inner)[0] not in _TYPER_TYPES:
            raise TypeError(f"{where}: a flag cannot hold {kind}; give the option a parse= function")
    elif inner not in _TYPER_TYPES:
        raise TypeError(f"{where}: a flag cannot hold {kind}; give the option a parse= function")
    return inner | None if optional else inner


def _declared_flags(parameter: inspect.Parameter) -> list[str]:
    """Every flag string a typer parameter answers to (both sides of `--x/--no-x`); none for arguments."""
    infos = [a for a in getattr(parameter.annotation, "__metadata__", ()) if isinstance(a, typer.models.ParameterInfo)]
    if isinstance(parameter.default, typer.models.ParameterInfo):
        infos.append(parameter.default)
    if infos and not isinstance(infos[0], OptionInfo):
        return []
    decls = [*(infos[0].param_decls or ())] if infos else []
    if infos and isinstance(infos[0].default, str) and infos[0].default.startswith("-"):
        decls.append(infos[0].default)
    names = [name for decl in decls for name in decl.split("/") if name.startswith("-")]
    return names or ["--" + parameter.name.replace("_", "-")]


def _check_clashes(command: str, parameters: list[inspect.Parameter]) -> None:
    seen: dict[str, str] = {}
    for parameter in parameters:
        for name in [f"parameter {parameter.name}", *_declared_flags(parameter)]:
            if name in seen:
                raise TypeError(f"{command}: {name} is declared twice ({seen[name]} and {parameter.name}); "
                                "rename one with option(flag=...)")
            seen[name] = parameter.name
