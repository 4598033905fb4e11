"""One declaration per option: a dataclass field carries its own help text and CLI flag.

Options dataclasses anywhere (merge/, graft/, blend/ ...) declare each field with `option()`, so the
help text lives next to the field and the CLI (`vadasm.cli.options.options_from`) derives its flags
from the dataclass: a flag and its field cannot drift.

- The flag is `--field-name` unless `flag=` names it. A bool whose default is False is a switch
  (`--x`); one whose default is True gets `--x/--no-x`; `flag="--x/--y"` spells both sides.
- A field whose type is another options dataclass (declared with `default_factory=`) is flattened
  into that dataclass's flags, without a prefix; its defaults come from the factory's instance.
- `short="-k"`: a one-letter alias beside the long flag.
- `cli=False`: set by code (e.g. `progress`, which the CLI derives from --quiet), never by a flag.
- `parse=`: the flag is text that `parse` turns into the field's value (a comma list, a dtype
  name); `default` is then written as that text (None: no value) and parsed for the field's default,
  so the default is declared once, as a user would type it.

This module imports only the standard library, so any layer may use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

META_KEY = "vadasm.option"

# Help texts of options many commands share, declared once for every options dataclass and CLI alias.
FORCE_HELP = (
    "Replace the output folder if it exists: only an earlier vadasm output (it holds vadasm_config.json "
    "or another vadasm summary) or an empty folder, never a file, another folder or an input; the old "
    "one is deleted only once the new one is in place.")
ALLOW_PICKLE_HELP = "Accept .bin/.pt pickle weights (they can run code when loaded; only for trusted files)."
TRUST_REMOTE_CODE_HELP = "Accept models whose config needs custom code (auto_map)."
DEVICE_HELP = "Where the arithmetic runs: cpu, cuda, cuda:N, mps, or auto (cuda when present, else cpu)."
SHARD_SIZE_HELP = "Largest output shard, e.g. 5GB, 500MB."


@dataclasses.dataclass(frozen=True)
class OptionMeta:
    """What the CLI needs beyond the field's name, type and default."""

    help: str | Callable[[], str]  # a callable is asked when the CLI is built (e.g. to list registered methods)
    flag: str | None = None  # e.g. "--out-dtype"; None means "--" + field name with "-" for "_"
    cli: bool = True  # False: the field is set by code, never by a flag
    metavar: str | None = None
    short: str | None = None  # e.g. "-k", beside the long flag
    parse: Callable[[str], Any] | None = None  # flag text -> field value
    text: str | None = None  # with `parse`: the default as the flag's text

    def help_text(self) -> str:
        """The help text, from `help` called now when it is a callable."""
        return self.help() if callable(self.help) else self.help


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str | Callable[[], str],
    flag: str | None = None,
    cli: bool = True,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    metavar: str | None = None,
    short: str | None = None,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """A `dataclasses.field` carrying its help text and flag, read back by `option_meta`."""
    if flag is not None and not flag.startswith("--"):
        raise ValueError(f"option flag {flag!r} must start with '--'")
    if short is not None and (len(short) != 2 or short[0] != "-" or short[1] == "-"):
        raise ValueError(f"option short flag {short!r} must be '-' and one letter")
    text = None
    if parse is not None and isinstance(default, str):
        text, default, default_factory = default, dataclasses.MISSING, lambda: parse(text)
    meta = {META_KEY: OptionMeta(help=help, flag=flag, cli=cli, metavar=metavar, short=short, parse=parse, text=text)}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def option_meta(field: dataclasses.Field[Any]) -> OptionMeta | None:
    """The `OptionMeta` of a field declared with `option()`, or None for a plain field."""
    return field.metadata.get(META_KEY)


def flag_name(field: dataclasses.Field[Any]) -> str:
    """The CLI flag of a field: its declared `flag=` (the first side of `--x/--y`), else `--field-name`."""
    meta = option_meta(field)
    if meta is not None and meta.flag is not None:
        return meta.flag.split("/")[0]
    return "--" + field.name.replace("_", "-")
