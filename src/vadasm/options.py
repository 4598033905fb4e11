"""One declaration per option: a dataclass field carries its own help text and CLI flag.

Options dataclasses anywhere (merge/, graft/, blend/ ...) declare each field with `option()`, so the
help text lives next to the field and the CLI (`vadasm.cli.options.options_from`) derives its flags
from the dataclass: a flag and its field cannot drift. A field whose type is another options
dataclass (declared with `default_factory=`) is flattened into flags without a prefix.

This module imports only the standard library, so any layer may use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

META_KEY = "vadasm.option"


@dataclasses.dataclass(frozen=True)
class OptionMeta:
    """What the CLI needs beyond the field's name, type and default."""

    help: str
    flag: str | None = None  # e.g. "--out-dtype"; None means "--" + field name with "-" for "_"
    cli: bool = True  # False: the field is set by code, never by a flag
    metavar: str | None = None


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    cli: bool = True,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    metavar: str | None = None,
) -> Any:
    """A `dataclasses.field` carrying its help text and flag, read back by `option_meta`."""
    if flag is not None and not flag.startswith("--"):
        raise ValueError(f"option flag {flag!r} must start with '--'")
    meta = {META_KEY: OptionMeta(help=help, flag=flag, cli=cli, metavar=metavar)}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def option_meta(field: dataclasses.Field[Any]) -> OptionMeta | None:
    """The `OptionMeta` of a field declared with `option()`, or None for a plain field."""
    return field.metadata.get(META_KEY)


def flag_name(field: dataclasses.Field[Any]) -> str:
    """The CLI flag of a field: its declared `flag=`, else `--field-name`."""
    meta = option_meta(field)
    if meta is not None and meta.flag is not None:
        return meta.flag
    return "--" + field.name.replace("_", "-")
