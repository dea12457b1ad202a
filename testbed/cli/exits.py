"""How every command ends: one table from what was raised to exit code and stderr.

Commands return 0 (done, every verdict passed) or 1 (a verdict failed) and raise the rest;
`outcome` is the only place that turns an exception into an exit code and a message, so
the codes mean the same for every command:

    0  done                      1  ran, and a verdict or the work failed
    2  bad input, or the lab could not do it (the one line says which and why)
    128+N  stopped by signal N (130: Ctrl-C), after tearing down what it made
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from testbed.cli.common import PROG, CliError
from testbed.core.errors import TestbedError, WorkFailed
from testbed.kernel.signals import Interrupted

OK, FAILED, BAD_INPUT = 0, 1, 2


@dataclass(frozen=True)
class Outcome:
    """An exit code and the lines for stderr (none: the command already said it)."""

    code: int
    lines: tuple[str, ...] = ()
    expected: bool = True  # False: a bug, whose traceback TESTBED_DEBUG=1 shows

    def text(self) -> str:
        return "".join(f"{PROG}: {line}\n" for line in self.lines)


@dataclass(frozen=True)
class Rule:
    """One row of the table: what was raised, its exit code, what stderr says."""

    kind: type[BaseException]
    code: Callable[[BaseException], int]
    words: Callable[[BaseException, str], tuple[str, ...]]
    expected: bool = True


def _said(exc: BaseException, command: str) -> tuple[str, ...]:
    return ()  # the command already said what it stopped and tore down, or nobody listens


def _own_lines(exc: BaseException, command: str) -> tuple[str, ...]:
    return tuple(exc.lines()) if isinstance(exc, TestbedError) else (str(exc),)


def _a_bug(exc: BaseException, command: str) -> tuple[str, ...]:
    first = (str(exc).strip().splitlines() or [""])[0]
    return (f"{command} failed: {type(exc).__name__}: {first}",)


# The first row that matches wins, so a subclass comes before its base.
TABLE: tuple[Rule, ...] = (
    Rule(Interrupted, lambda exc: exc.exit_code, _said),  # type: ignore[attr-defined]
    Rule(KeyboardInterrupt, lambda exc: 130, _said),
    Rule(BrokenPipeError, lambda exc: OK, _said),  # `testbed plan | head`: the reader left
    Rule(CliError, lambda exc: exc.code, _own_lines),  # type: ignore[attr-defined]
    Rule(WorkFailed, lambda exc: FAILED, _own_lines),
    Rule(TestbedError, lambda exc: BAD_INPUT, _own_lines),
    Rule(Exception, lambda exc: BAD_INPUT, _a_bug, expected=False),
)


def outcome(exc: BaseException, command: str) -> Outcome | None:
    """The exit code and message for what `command` raised; None: not ours to map."""
    for rule in TABLE:
        if isinstance(exc, rule.kind):
            return Outcome(rule.code(exc), rule.words(exc, command), rule.expected)
    return None


def message(exc: BaseException, command: str = "") -> str:
    """The stderr text of one error, for a command that reports it and goes on."""
    found = outcome(exc, command)
    return found.text() if found else ""
