"""Hostile inputs and the promise every command must keep, checked mechanically.

The promise (README, SPEC §6): a bad input or an OS fault ends with exit code 2 and one line on
stderr naming the file; no traceback; nothing written (no output, no temp folder left beside it);
no input changed. Shared by the fast suite (tests/fuzz/) and the randomised campaign
(benchmarks/fuzz.py), so both check the same promise the same way.

Each case builder takes a fresh work folder holding pristine tiny models (see `make_models`) and
returns a `Case`: the command line, the folders that must stay unchanged, the output that must not
appear, and whether the command should be refused or succeed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pico_models import make_text_model, perturbed_copy


@dataclass
class Case:
    argv: list[str]
    inputs: list[Path]  # folders (or files) whose bytes must not change
    output: Path  # must not exist after a refusal
    expect: str = "refuse"  # "refuse" or "succeed"
    mention: str | None = None  # a path or word the error line must contain
    check: Callable[[Path], str | None] | None = None  # after success: None if the output is right


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    traceback: str | None = None
    problems: list[str] = field(default_factory=list)


def make_models(folder: Path) -> dict[str, Path]:
    """A tiny Llama base and two fine-tunes (2 layers, hidden 32, vocab 96), each with a tokenizer file."""
    base = make_text_model(folder / "base", "llama")
    models = {"base": base, "ft1": perturbed_copy(base, folder / "ft1", seed=1),
              "ft2": perturbed_copy(base, folder / "ft2", seed=2)}
    for path in models.values():
        (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}))
    return models


def run_cli(argv: list[str]) -> Outcome:
    """Run `vadasm ARGV` in this process (fast: torch is imported once) and capture what it prints.

    An exception escaping `main()` is what a user would see as a traceback; it is recorded, not raised.
    """
    from vadasm.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["vadasm", *argv]
    code, trace = 0, None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - anything else is a traceback to the user
        import traceback

        code, trace = 1, "".join(traceback.format_exception(exc))
    finally:
        sys.argv = saved
    return Outcome(code, out.getvalue(), err.getvalue(), trace)


def snapshot(paths: list[Path]) -> dict[str, str]:
    """sha256 of every file under the given paths (symlinks recorded by target, never followed)."""
    digests = {}
    for root in paths:
        items = [root] if not root.is_dir() or root.is_symlink() else sorted(root.rglob("*"))
        for item in items:
            if item.is_symlink():
                digests[str(item)] = "link:" + os.readlink(item)
            elif item.is_file():
                digests[str(item)] = hashlib.sha256(item.read_bytes()).hexdigest()
        if not root.exists() and not root.is_symlink():
            digests[str(root)] = "missing"
    return digests


def leftovers(output: Path) -> list[str]:
    """Temp or lock files a run left beside its output."""
    parent = output.parent
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{output.name}.vadasm-"))


def check_promise(case: Case, before: dict[str, str], outcome: Outcome, output_existed: bool = False) -> list[str]:
    """The broken parts of the promise for this run ([] when it was kept)."""
    problems = []
    if outcome.traceback:
        problems.append("traceback: " + outcome.traceback.strip().splitlines()[-1][:200])
    if snapshot(case.inputs) != before:
        problems.append("an input changed or was deleted")
    stray = leftovers(case.output)
    if stray:
        problems.append(f"left behind: {stray}")
    if case.expect == "refuse":
        lines = outcome.stderr.strip().splitlines()
        if outcome.code != 2:
            problems.append(f"exit code {outcome.code}, expected 2")
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"stderr is not one 'error:' line: {outcome.stderr[:300]!r}")
        elif case.mention and case.mention not in lines[0]:
            problems.append(f"error line does not name {case.mention!r}: {lines[0][:300]!r}")
        if (case.output.exists() or case.output.is_symlink()) and not output_existed:
            problems.append("output written although the input was refused")
    else:
        if outcome.code != 0:
            problems.append(f"exit code {outcome.code}, expected success: {outcome.stderr.strip()[:300]}")
        elif case.check is not None:
            wrong = case.check(case.output)
            if wrong:
                problems.append("wrong output: " + wrong)
    return problems


def run_case(case: Case) -> Outcome:
    before, existed = snapshot(case.inputs), case.output.exists() or case.output.is_symlink()
    outcome = run_cli(case.argv)
    outcome.problems = check_promise(case, before, outcome, existed)
    return outcome


# --- raw safetensors, for headers no library would write -------------------------------------------

def write_raw_safetensors(path: Path, header: object | bytes, data: bytes = b"") -> Path:
    """A file with the given header (any JSON value, or raw bytes) and data, as the format lays them out."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def read_raw_safetensors(path: Path) -> tuple[dict, bytes]:
    blob = path.read_bytes()
    (size,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + size]), blob[8 + size:]


def weights_file(model: Path) -> Path:
    return model / "model.safetensors"


def merge_argv(models: dict[str, Path], out: Path, *extra: str, method: str = "task_arithmetic") -> list[str]:
    return ["merge", str(out), "--method", method, "--base", str(models["base"]),
            "--model", str(models["ft1"]), "--model", str(models["ft2"]), "--quiet", *extra]


def rewrite_config(model: Path, **changes) -> None:
    config = json.loads((model / "config.json").read_text())
    for key, value in changes.items():
        if value is _DELETE:
            config.pop(key, None)
        else:
            config[key] = value
    (model / "config.json").write_text(json.dumps(config))


_DELETE = object()


def split_into_shards(model: Path) -> list[Path]:
    """Rewrite a single-file model as two shards plus an index (what a real sharded checkpoint looks like)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights_file(model))
    names = sorted(tensors)
    half = len(names) // 2
    shards = [model / "model-00001-of-00002.safetensors", model / "model-00002-of-00002.safetensors"]
    save_file({n: tensors[n] for n in names[:half]}, shards[0], metadata={"format": "pt"})
    save_file({n: tensors[n] for n in names[half:]}, shards[1], metadata={"format": "pt"})
    weight_map = {n: shards[0].name for n in names[:half]} | {n: shards[1].name for n in names[half:]}
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    weights_file(model).unlink()
    return shards


def copy_models(src: dict[str, Path], dst: Path) -> dict[str, Path]:
    return {name: Path(shutil.copytree(path, dst / name)) for name, path in src.items()}
