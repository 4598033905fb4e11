"""Small helpers shared by subcommands: output formatting and common options.

The aliases below serve commands without an options dataclass; their help texts are the ones the
options dataclasses declare (`vadasm.options`), so a flag reads the same in every command.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from vadasm.errors import VadasmError
from vadasm.io.writer import parse_size
from vadasm.options import ALLOW_PICKLE_HELP, DEVICE_HELP, FORCE_HELP, TRUST_REMOTE_CODE_HELP

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or chatter; errors still go to stderr.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object with the results (for scripts).")]
Force = Annotated[bool, typer.Option("--force", help=FORCE_HELP)]
AllowPickle = Annotated[bool, typer.Option("--allow-pickle", help=ALLOW_PICKLE_HELP)]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help=TRUST_REMOTE_CODE_HELP)]
Device = Annotated[str, typer.Option(help=DEVICE_HELP)]
_DEVICE_KINDS = ("cpu", "cuda", "mps")
MAX_THREADS = 1024


def emit(payload: dict, as_json: bool, lines: list[str], quiet: bool = False) -> None:
    """Print JSON for scripts, or human lines unless quiet."""
    if as_json:
        typer.echo(json.dumps(payload, indent=2, default=str))
    elif not quiet:
        for line in lines:
            typer.echo(line)


def check_run_flags(*, device: str | None = None, threads: int | None = None,
                    shard_size: str | None = None, device_here: bool = True) -> str | None:
    """Check the flags many commands share before any model is opened; returns the device to use.

    One helper for every command, so `--threads 0`, `--device bogus` or `--shard-size -5MB` fail
    the same way (one line, exit 2) wherever they are given. None means the flag was not given.
    `device_here=False` (work sent to a Ray cluster): the device name is checked, not this machine.
    """
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise VadasmError(f"--threads {threads}: give a whole number from 1 to {MAX_THREADS}")
    if shard_size is not None:
        try:
            parse_size(shard_size)
        except VadasmError as err:
            raise VadasmError(f"--shard-size: {err}") from None
    return None if device is None else resolve_device(device, here=device_here)


def resolve_device(device: str, here: bool = True) -> str:
    """'auto' made concrete; a device torch cannot use here (when `here`) refused in one line."""
    import torch

    text = device.strip().lower()
    shown = device if len(device) <= 40 else device[:37] + "..."
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, colon, index = text.partition(":")
    if kind not in _DEVICE_KINDS or (colon and (kind != "cuda" or not index.isdigit())):
        raise VadasmError(f"--device {shown}: unknown device (use cpu, cuda, cuda:N, mps or auto)")
    if not here:
        return text
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise VadasmError(f"--device {shown}: cuda is not available on this machine ({torch_build()})")
        count = torch.cuda.device_count()
        if colon and int(index) >= count:
            raise VadasmError(f"--device {shown}: this machine has {count} CUDA device(s), numbered from 0")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise VadasmError(f"--device {shown}: mps is not available on this machine ({torch_build()})")
    return text


def parse_flag_value(flag: str, text: str) -> Any:
    """A KEY=VALUE flag's value read as YAML (numbers, booleans, lists), bounded like a recipe; one line if not."""
    from vadasm.merge.recipe_yaml import RecipeYamlError, load_yaml_text, short

    try:
        return load_yaml_text(text)
    except RecipeYamlError as err:
        raise VadasmError(f"{flag} {short(text)}: {err}") from None


def torch_build() -> str:
    """'torch 2.13, CPU build' or 'torch 2.13, CUDA 12.4 build': what error lines say about torch."""
    import torch

    version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    if torch.version.cuda:
        return f"torch {version}, CUDA {torch.version.cuda} build"
    if getattr(torch.version, "hip", None):
        return f"torch {version}, ROCm {torch.version.hip} build"
    return f"torch {version}, CPU build"
