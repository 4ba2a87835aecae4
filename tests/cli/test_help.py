"""Every command's help follows the conventions: values as words, no type tags, a help line for every option."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from cliplens.cli import app

TYPE_TAG = re.compile(r"<(str|int|float|bool|path|list\[[^\]]*\]|[a-z]+ range)[^>]*>|\[\d*x[<>]=|[<>]=x\]")


def _commands(group, path=()):
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


ROOT = typer.main.get_command(app)
COMMANDS = list(_commands(ROOT))


def test_every_command_is_walked():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"classify", "caption", "index", "search", "rank", "eval", "audit", "dream", "serve", "train",
            "models list", "banks calibrate", "bench embed"} <= names
    assert len(names) >= 30


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=" ".join)
def test_help_has_no_type_tags_and_every_option_has_help(path):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert not TYPE_TAG.search(text), TYPE_TAG.search(text).group(0)
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "<" not in usage, usage
    command = dict(COMMANDS)[path]
    for param in command.params:
        assert getattr(param, "help", None), f"{' '.join(path)}: {param.name} has no help line"
        if "cliplens[" in param.help:  # an extra to install keeps its brackets
            assert re.search(r"cliplens\[\w+\]", text), f"{param.name}: the extra's name lost its brackets"


def test_group_help_has_no_type_tags():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert not TYPE_TAG.search(result.output)


def test_the_checks_catch_a_type_tag_and_a_missing_help_line():
    """The walker's own checks, on a command written without the conventions."""
    bare = typer.Typer()

    @bare.command()
    def run(size: int = typer.Option(3, "--size", min=1)) -> None:
        """A command with a typed, ranged option and no help line."""

    result = CliRunner().invoke(bare, ["--help"], env={"COLUMNS": "200"})
    assert TYPE_TAG.search(result.output)
    assert not typer.main.get_command(bare).params[0].help


#: The commands whose --json answer is the HTTP API's, and the endpoint each names in its help.
HTTP_ANSWERS = {"classify": "POST /v1/classify", "caption": "POST /v1/caption", "rank": "POST /v1/rank",
                "search": "POST /v1/search"}


def test_json_help_promises_the_http_fields_only_where_the_api_has_them():
    """``--json`` says "the fields of the HTTP API" only on commands the service also answers, naming its
    endpoint; on every other command (train, demo-data, bench ...) it promises one JSON object, no more."""
    seen = set()
    for path, command in COMMANDS:
        flag = next((p for p in command.params if "--json" in getattr(p, "opts", ())), None)
        if flag is None:
            continue
        name = " ".join(path)
        seen.add(name)
        if name in HTTP_ANSWERS:
            assert f"the HTTP API's {HTTP_ANSWERS[name]}" in flag.help, (name, flag.help)
        else:
            assert "HTTP" not in flag.help and "one JSON object on stdout" in flag.help, (name, flag.help)
    assert set(HTTP_ANSWERS) | {"train", "demo-data", "bench embed", "embed", "eval"} <= seen
