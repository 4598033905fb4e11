"""The `vadasm` command. Thin: each subcommand parses flags, calls the library, formats results.

Subcommands live one group per module in this package and register themselves on `app`.
"""

from __future__ import annotations

import sys

import typer

from vadasm.errors import VadasmError

app = typer.Typer(
    name="vadasm",
    help="Training-free model merging: merge, graft vision, blend in SVD space, and measure it honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_subcommands() -> None:
    # Imported for their side effect: each module adds its commands to `app`.
    from vadasm.cli import (  # noqa: F401
        align_cmd,
        blend_cmd,
        card_cmd,
        eval_cmd,
        graft_cmd,
        inspect_cmd,
        merge_cmd,
        moe_cmd,
        push_cmd,
        testbed_cmd,
        transfer_cmd,
        tune_cmd,
    )


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    _register_subcommands()
    try:
        app()  # click handles --help and usage errors itself (exit 2 with usage text)
    except VadasmError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
