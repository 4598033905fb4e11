"""CLI flags generated from options dataclasses (`vadasm.options.option` + `cli.options.options_from`)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from vadasm.blend import BlendOptions
from vadasm.cli import _register_subcommands, app
from vadasm.cli.merge_cmd import RecipeFlags
from vadasm.cli.options import options_from
from vadasm.merge import MergeOptions
from vadasm.options import flag_name, option, option_meta

_register_subcommands()
RUNNER = CliRunner()


def _halves(text: str) -> list[float]:
    return [float(part) / 2 for part in text.split(",")]


@dataclasses.dataclass
class Selection:
    pattern: list[str] = option(default_factory=list, help="A pattern; repeat for each.")
    embeddings: bool = option(False, flag="--with-embeddings/--without-embeddings", help="Embeddings too.")


def _wide_selection() -> Selection:
    return Selection(embeddings=True)


@dataclasses.dataclass
class Toy:
    size: str | int = option("5GB", help="Largest shard.")
    count: int | None = option(None, short="-n", help="How many.")
    scales: list[float] = option("2,4", parse=_halves, help="Comma-separated scales, halved.")
    force: bool = option(False, help="Replace the output.")
    colour: bool = option(True, help="Colour the output.")
    selection: Selection = option(default_factory=_wide_selection, help="Which tensors.")
    progress: bool = option(True, cli=False, help="Set by code.")


@dataclasses.dataclass
class Clash:
    out: str = option("a", help="One.", flag="--output")
    output: str = option("b", help="Two.")


@dataclasses.dataclass
class JsonToo:
    as_json: bool = option(False, flag="--json", help="Also JSON.")


@dataclasses.dataclass
class Outer:
    pattern: str = option("x", help="Outer pattern.")
    selection: Selection = option(default_factory=Selection, help="Which tensors.")


@dataclasses.dataclass
class Bare:
    size: int = 3


def _app_for(command) -> typer.Typer:
    toy_app = typer.Typer()
    toy_app.command("toy")(command)
    toy_app.command("other")(lambda: None)  # two commands: typer keeps the "toy" subcommand name
    return toy_app


def _toy_command(seen: list):
    @options_from(Toy)
    def toy(path: Annotated[str, typer.Argument()], options: Toy,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        seen.append((path, options, as_json))

    return toy


def _invoke(seen: list, *args: str):
    return RUNNER.invoke(_app_for(_toy_command(seen)), ["toy", *args], env={"COLUMNS": "250"})


def test_help_shows_each_field_flag_with_its_help_and_default():
    text = _invoke([], "--help").output
    for flag, help_text in (("--size", "Largest shard. [default: 5GB]"), ("--count", "How many."),
                            ("--scales", "Comma-separated scales, halved. [default: 2,4]"),
                            ("--force", "Replace the output."), ("--pattern", "A pattern; repeat for each."),
                            ("--with-embeddings", "Embeddings too. [default: with-embeddings]")):
        line = next((line for line in text.splitlines() if f" {flag} " in line), "")
        assert help_text in line, (flag, text)
    assert "--no-colour" in text and "--without-embeddings" in text and "--no-force" not in text
    assert "--progress" not in text and "--selection" not in text  # cli=False skipped; nested flattened
    assert "--json" in text


def test_defaults_reach_the_dataclass_as_the_field_defaults():
    seen: list = []
    result = _invoke(seen, "here")
    assert result.exit_code == 0, result.output
    assert seen == [("here", Toy(), False)]
    assert seen[0][1].scales == [1.0, 2.0] and seen[0][1].selection == Selection([], True)


def test_flag_values_reach_the_dataclass_and_nested_fields():
    seen: list = []
    result = _invoke(seen, "there", "--size", "3MB", "-n", "7", "--scales", "1,3", "--force", "--no-colour",
                     "--pattern", "a*", "--pattern", "re:b", "--without-embeddings", "--json")
    assert result.exit_code == 0, result.output
    [(path, options, as_json)] = seen
    assert (path, as_json) == ("there", True)
    assert options == Toy(size="3MB", count=7, scales=[0.5, 1.5], force=True, colour=False,
                          selection=Selection(["a*", "re:b"], False))


def test_a_command_default_overrides_the_field_default_in_help_and_value():
    seen: list = []

    @options_from(Toy, defaults={"count": 3})
    def toy(options: Toy) -> None:
        seen.append(options)

    toy_app = _app_for(toy)
    assert "[default: 3]" in RUNNER.invoke(toy_app, ["toy", "--help"], env={"COLUMNS": "250"}).output
    assert RUNNER.invoke(toy_app, ["toy"]).exit_code == 0
    assert seen == [Toy(count=3)]
    with pytest.raises(TypeError, match="unknown fields"):
        options_from(Toy, defaults={"colour_depth": 8})


def test_two_fields_with_one_flag_are_refused_when_the_command_is_defined():
    def command(options: Clash) -> None:
        """Never runs."""

    with pytest.raises(TypeError, match="--output is declared twice"):
        options_from(Clash)(command)


def test_a_field_flag_clashing_with_a_command_parameter_is_refused():
    def command(options: JsonToo, json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
        """Never runs."""

    with pytest.raises(TypeError, match="--json is declared twice"):
        options_from(JsonToo)(command)


def test_a_nested_field_named_like_an_outer_one_is_refused():
    def command(options: Outer) -> None:
        """Never runs."""

    with pytest.raises(TypeError, match="declared twice"):
        options_from(Outer)(command)


def test_a_field_without_help_or_a_command_without_the_parameter_is_refused():
    with pytest.raises(TypeError, match="declare it with"):
        options_from(Bare)
    with pytest.raises(TypeError, match="needs a parameter named 'options'"):
        options_from(Toy)(lambda path: None)
    with pytest.raises(ValueError, match="must start with '--'"):
        option(1, help="x", flag="-n")
    with pytest.raises(ValueError, match="one letter"):
        option(1, help="x", short="--n")


def test_option_keeps_its_metadata_and_parses_a_text_default():
    field = {f.name: f for f in dataclasses.fields(Toy)}
    assert option_meta(field["scales"]).text == "2,4" and Toy().scales == [1.0, 2.0]
    assert flag_name(field["count"]) == "--count"
    assert flag_name(dataclasses.fields(Selection)[1]) == "--with-embeddings"


def _cli_fields(cls: type) -> list[dataclasses.Field]:
    found = []
    for field in dataclasses.fields(cls):
        meta = option_meta(field)
        if field.init and meta is not None and meta.cli:
            found.append(field)
    return found


@pytest.mark.parametrize(("command", "classes"), [("merge", (MergeOptions, RecipeFlags)), ("blend", (BlendOptions,))])
def test_every_options_field_has_its_flag_in_the_command_help(command, classes):
    """Drift is impossible by construction (the flags are generated); this documents it."""
    text = RUNNER.invoke(app, [command, "--help"], env={"COLUMNS": "250"}).output
    flags = [flag_name(f) for cls in classes for f in _cli_fields(cls)]
    assert len(flags) >= 8
    for flag in flags:
        assert f" {flag} " in text, (flag, text)
