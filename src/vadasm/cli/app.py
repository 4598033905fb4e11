"""The Typer `app` every command registers on, apart from cli/__init__.py so that the `*_cmd`
modules import it from here and the package that imports them is not imported back (no circle).

`vadasm.cli` re-exports `app`; note the package attribute `vadasm.cli.app` is this Typer object,
not this module (read the module as sys.modules["vadasm.cli.app"] if ever needed).
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="vadasm",
    help="Training-free model merging: merge, graft vision, blend in SVD space, and measure it honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from vadasm.version import __version__

        typer.echo(f"vadasm {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit.")) -> None:
    """Training-free model merging: merge, graft vision, blend in SVD space, and measure it honestly."""
