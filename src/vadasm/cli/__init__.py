"""The `vadasm` command. Thin: each subcommand parses flags, calls the library, formats results.

Subcommands live one group per module in this package and register themselves on `app`, which lives
in cli/app.py so that the command modules never name this package in an import (no import circle).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer >= 0.29 vendors click

from vadasm.cli.app import app
from vadasm.errors import VadasmError
from vadasm.io.output import locks_held_for_the_run


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
        methods_cmd,
        moe_cmd,
        push_cmd,
        testbed_cmd,
        tokensurgeon_cmd,
        transfer_cmd,
        tune_cmd,
    )


class Terminated(BaseException):
    """SIGTERM/SIGHUP as an exception, so `finally` blocks run and the temp output folder is removed.

    A BaseException: no `except Exception` on the way up can swallow it."""


def _terminate(signum: int, frame) -> None:
    for sig in TERMINATING_SIGNALS:  # a second signal must not interrupt the cleanup
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signal.Signals(signum).name)


TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def main() -> None:
    """Console entry point: user errors and OS errors (full disk, read-only folder ...) become one
    line on stderr and exit code 2; SIGTERM cleans up like Ctrl-C and exits 143."""
    _register_subcommands()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _terminate) for sig in TERMINATING_SIGNALS} if in_main_thread else {}
    try:
        with locks_held_for_the_run():  # an output's lock is kept from its first check to its rename
            code = app(prog_name="vadasm", standalone_mode=False)  # usage errors: one line, below
        if isinstance(code, int) and code:
            sys.exit(code)
    except NoArgsIsHelpError as err:
        print(err.format_message())
        sys.exit(0)
    except UsageError as err:
        command = err.ctx.command_path if err.ctx else "vadasm"
        print(f"error: {command}: {' '.join(err.format_message().split())} (see {command} --help)", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except VadasmError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        where = f"{os.fsdecode(err.filename)}: " if err.filename else ""
        reason = err.strerror or (str(err).splitlines() or [type(err).__name__])[0]
        print(f"error: {where}{reason}", file=sys.stderr)
        sys.exit(2)
    except Terminated as signal_name:
        print(f"error: stopped by {signal_name}", file=sys.stderr)
        sys.exit(128 + signal.Signals[str(signal_name)].value)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
