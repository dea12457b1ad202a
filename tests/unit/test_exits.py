"""The CLI's one table from exception to exit code and stderr, and `main` going through it."""

from __future__ import annotations

import signal

import pytest

from testbed import cli
from testbed.cli import exits
from testbed.cli.common import CliError
from testbed.core.errors import (
    CommandFailed,
    LabError,
    NeedsRoot,
    NotFound,
    TestbedError,
    UsageError,
    WorkFailed,
)
from testbed.core.scenario import ScenarioError
from testbed.kernel.signals import Interrupted


def several_problems() -> ScenarioError:
    first = ScenarioError("lab.yaml", 3, "spec.type: 'Nodeport' is not a Service type")
    second = ScenarioError("lab.yaml", 9, "spec.replicas: -1 is below 0")
    error = ScenarioError(first.file, first.line, first.reason)
    error.problems, error.more = (first, second), 4
    return error


@pytest.mark.parametrize(
    ("raised", "code", "stderr"),
    [
        (Interrupted(signal.SIGTERM), 143, ""),
        (Interrupted(signal.SIGINT), 130, ""),
        (KeyboardInterrupt(), 130, ""),
        (BrokenPipeError(), 0, ""),
        (CliError("no lab 'x' (testbed ls lists them)"), 2, "testbed: no lab 'x'"),
        (CliError("a verdict-like refusal", 3), 3, "testbed: a verdict-like"),
        (NeedsRoot(), 2, "testbed: needs root (CAP_NET_ADMIN): run with sudo\n"),
        (UsageError("bench: unknown section(s) x"), 2, "testbed: bench: unknown section"),
        (NotFound("x: no such scenario file"), 2, "testbed: x: no such scenario file\n"),
        (LabError("lab id tb-x is taken"), 2, "testbed: lab id tb-x is taken\n"),
        (CommandFailed("tb-a-node-1", ["iptables-save"], "boom\nmore"), 2, "in tb-a-node-1: boom"),
        (WorkFailed("go build failed in /c:\nline 1\nline 2"), 1, "/c:\nline 1\nline 2\n"),
        (ValueError("bad\nsecond"), 2, "testbed: plan failed: ValueError: bad\n"),
    ],
)
def test_each_kind_of_ending_has_its_code_and_words(raised, code, stderr):
    ended = exits.outcome(raised, "plan")
    assert ended is not None and ended.code == code
    assert stderr in ended.text()
    assert ended.text() == "" or ended.text().startswith("testbed: ")


def test_a_file_with_several_problems_is_one_prefixed_line_each():
    text = exits.outcome(several_problems(), "run").text()
    assert text.splitlines() == [
        "testbed: lab.yaml:3: spec.type: 'Nodeport' is not a Service type",
        "testbed: lab.yaml:9: spec.replicas: -1 is below 0",
        "testbed: lab.yaml: 4 more problems not shown",
    ]


def test_only_a_bug_is_unexpected_and_exits_are_not_ours():
    assert not exits.outcome(RuntimeError("x"), "up").expected
    assert all(exits.outcome(e, "up").expected for e in (LabError("x"), KeyboardInterrupt()))
    assert exits.outcome(SystemExit(3), "up") is None  # argparse's own exits pass through


def test_no_row_is_hidden_behind_an_earlier_one():
    """The first match wins: a row whose kind an earlier row already catches never runs."""
    for i, later in enumerate(exits.TABLE):
        for earlier in exits.TABLE[:i]:
            assert not issubclass(later.kind, earlier.kind), (later.kind, earlier.kind)


def test_every_error_of_the_family_maps_to_bad_input_or_failed_work():
    kinds = {TestbedError, *TestbedError.__subclasses__()}
    for kind in kinds:
        rule = next(r for r in exits.TABLE if issubclass(kind, r.kind))
        assert rule.kind is not Exception, f"{kind.__name__} would read as a bug"


def test_main_maps_what_a_command_raises(monkeypatch, capsys):
    def fails(args):
        raise WorkFailed("the build failed")

    monkeypatch.setattr(cli, "cmd_ls", fails)
    assert cli.main(["ls"]) == 1
    assert capsys.readouterr().err == "testbed: the build failed\n"


def test_main_shows_a_bugs_traceback_only_when_asked(monkeypatch, capsys):
    def buggy(args):
        raise KeyError("oops")

    monkeypatch.setattr(cli, "cmd_ls", buggy)
    monkeypatch.delenv("TESTBED_DEBUG", raising=False)
    assert cli.main(["ls"]) == 2
    assert capsys.readouterr().err == "testbed: ls failed: KeyError: 'oops'\n"
    monkeypatch.setenv("TESTBED_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(["ls"])


def test_debug_does_not_turn_an_expected_error_into_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("TESTBED_DEBUG", "1")
    assert cli.main(["plan", "no-such-scenario-here"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such scenario file" in err


def test_a_bad_scenario_file_through_main(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: testbed/v1\nkind: Lab\nmetadata: {name: x}\nspec: {nodes: 0}\n")
    assert cli.main(["plan", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"testbed: {bad}:") and "Traceback" not in err
