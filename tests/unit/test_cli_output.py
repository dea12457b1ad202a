"""How wide a command prints, and the one way to name a lab (no root, no lab)."""

from __future__ import annotations

import argparse

import pytest

from testbed.cli import build_parser, output
from testbed.cli.common import CliError, lab_of


def test_columns_sets_the_width_and_wide_or_json_need_none(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert output.width(argparse.Namespace(output="table")) == 80
    assert output.width(argparse.Namespace(output="wide")) is None
    assert output.width(argparse.Namespace(output="json")) is None
    monkeypatch.setenv("COLUMNS", "20")
    assert output.width(argparse.Namespace(output="table")) == output.MIN_WIDTH


def test_a_pipe_without_columns_gets_whole_rows(monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert output.width(argparse.Namespace(output="table")) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["probe", "L", "--from", "client"],
        ["probe", "--lab", "L", "--from", "client"],
        ["down", "L"],
        ["down", "--lab", "L"],
        ["lb", "--lab", "L"],
        ["trace", "--lab", "L", "--from", "client", "--to", "web"],
        ["exec", "--lab", "L", "client", "--", "true"],
        ["shell", "client", "--lab", "L"],
        ["scale", "web", "--replicas", "2", "--lab", "L"],
        ["delete", "pod", "web-0", "--lab", "L"],
        ["set-policy", "web", "--external", "Local", "--lab", "L"],
    ],
)
def test_every_lab_command_takes_lab(argv: list[str]) -> None:
    assert lab_of(build_parser().parse_args(argv)) == "L"


def test_two_different_labs_named_is_bad_input() -> None:
    args = build_parser().parse_args(["probe", "a", "--lab", "b", "--from", "client"])
    with pytest.raises(CliError, match="two labs named"):
        lab_of(args)


@pytest.mark.parametrize("command", ["run", "probe", "plan", "ls", "lb"])
def test_json_output_on_the_commands_that_report(command: str) -> None:
    argv = {"probe": ["probe", "--from", "c"]}.get(command, [command])
    assert build_parser().parse_args([*argv, "-o", "json"]).output == "json"
