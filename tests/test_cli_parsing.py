"""The ``workbench`` command's parser: every command is there and explains itself (no server, no Docker)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from workbench.cli import build_parser


def command_paths() -> Iterator[list[str]]:
    """Every leaf command of ``workbench``, e.g. ``["files", "put"]``."""

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> Iterator[list[str]]:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            yield prefix
        for action in actions:
            for name, child in action.choices.items():
                yield from walk(child, [*prefix, name])

    yield from walk(build_parser(), [])


CLIENT_COMMANDS = [
    ["sessions", "ls"], ["sessions", "create"], ["sessions", "rm"], ["sessions", "interrupt"],
    ["sessions", "restart"], ["exec"], ["attach"], ["files", "ls"], ["files", "put"], ["files", "get"],
    ["files", "rm"],
]  # fmt: skip


def test_every_client_command_is_there() -> None:
    assert {" ".join(path) for path in CLIENT_COMMANDS} <= {" ".join(path) for path in command_paths()}


@pytest.mark.parametrize("command", list(command_paths()), ids=" ".join)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*command, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: workbench {' '.join(command)}")


@pytest.mark.parametrize("command", [*CLIENT_COMMANDS, ["serve"], ["db", "upgrade"]], ids=" ".join)
def test_client_commands_describe_themselves(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]
    assert not description.startswith(("options:", "positional arguments:")), text
