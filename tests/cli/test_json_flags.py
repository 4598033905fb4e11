"""`--json` means the same on every command: a flag that prints JSON to stdout; a file is `--json-out FILE`."""

import typer

from vadasm.cli import _register_subcommands, app


def _commands(command, prefix: str = ""):
    if hasattr(command, "commands"):  # a group (typer ships its own click, so no isinstance check)
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{prefix} {name}".strip())
    else:
        yield prefix, command


def test_json_is_a_flag_everywhere_and_json_out_takes_a_file():
    _register_subcommands()
    seen = []
    for name, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            if "--json" in getattr(param, "opts", []):
                assert param.is_flag, f"vadasm {name}: --json takes a value; make it a flag and add --json-out FILE"
                seen.append(name)
            if "--json-out" in getattr(param, "opts", []):
                assert not param.is_flag, f"vadasm {name}: --json-out must take a file"
    assert {"eval", "tune", "merge", "graft", "blend"} <= set(seen)
