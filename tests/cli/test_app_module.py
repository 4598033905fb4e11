"""`app` lives in vadasm.cli.app (so commands never import the package that imports them); the package
re-exports it, and its attribute `app` must stay the Typer object, not the submodule of the same name."""

from __future__ import annotations

import sys

import typer

import vadasm.cli
import vadasm.cli.merge_cmd  # noqa: F401  (imports vadasm.cli.app after the package is loaded)


def test_package_attribute_app_is_the_typer_app() -> None:
    assert isinstance(vadasm.cli.app, typer.Typer)
    assert vadasm.cli.app is sys.modules["vadasm.cli.app"].app
    assert callable(vadasm.cli.main) and callable(vadasm.cli._register_subcommands)
