"""`testbed up`: build a lab in a child process that stays to serve its pods.

The pods' echo servers and the nodes' health-check servers live in one event
loop, so somebody must keep running after `testbed up` returns. The child
builds, reports "ok" or the error through a pipe, then waits for SIGTERM
(`testbed down`) and tears down. While building it dies with its parent
(PR_SET_PDEATHSIG), so a killed `testbed up` leaves only what `testbed clean`
finds through the state file.

An owner (this child, or `up --foreground`) also watches its state file: when the
record no longer names it (removed by hand, or the lab was cleaned away), it tears
down and exits rather than pin namespaces nobody can find any more.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import NoReturn

from testbed.core.errors import LabError, TestbedError
from testbed.core.model import Plan
from testbed.core.scenario import Scenario
from testbed.kernel import procs, signals, state
from testbed.live.lab import Lab

PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.5  # how often an owner checks that its record still names it
SEEN_LIMIT = 1_000  # a running lab's servers remember this many peers per pod; nobody reads more


class BuildFailed(TestbedError):
    """The lab could not be built; the message is one line."""


def serve(lab_id: str) -> None:
    """Keep serving while the lab's record names this process (returns when it does not).

    Short sleeps, not pause(): a signal may land on another thread, and the main thread
    must still notice it promptly.
    """
    owner = procs.me()
    while state.still_mine(lab_id, owner):
        time.sleep(WATCH_SECONDS)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _die_with_parent(enabled: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL if enabled else 0, 0, 0, 0)


def _foreground(plan: Plan, scenario: Scenario | None, print_summary: Callable) -> NoReturn:
    """Build, serve until the record stops naming this process or a stop; always raises."""
    lab = Lab(plan, scenario=scenario)
    lab.seen_limit = SEEN_LIMIT
    try:
        with signals.handled():
            try:
                lab.up()
            except Exception as exc:
                raise BuildFailed(f"lab build failed: {one_line(exc)}") from None
            try:
                print(print_summary(lab))
                print("running in the foreground: Ctrl-C tears the lab down", flush=True)
                serve(lab.id)
            finally:
                lab.down()
            raise LabError(f"lab {lab.id}: its record was removed; tore it down")
    except signals.Interrupted as exc:  # the command's exit code says which signal
        print(f"testbed: interrupted by {exc}; the lab was torn down", file=sys.stderr)
        raise


def _child(
    plan: Plan, scenario: Scenario | None, print_summary: Callable, parent: int, report: int
) -> None:
    os.setsid()
    _die_with_parent(True)
    if os.getppid() != parent:
        os._exit(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    lab = Lab(plan, scenario=scenario)
    lab.seen_limit = SEEN_LIMIT
    try:
        with signals.handled():
            lab.up()
            _die_with_parent(False)
            os.write(report, b"ok\n" + print_summary(lab).encode())
            os.close(report)
            report = -1
            serve(lab.id)
    except signals.Interrupted:
        pass
    except BaseException as exc:  # the parent prints it
        if report >= 0:
            os.write(report, f"error: lab build failed: {one_line(exc)}".encode())
    finally:
        try:
            with signals.handled():
                lab.down()
        finally:
            os._exit(0)


def up(plan: Plan, scenario: Scenario | None, foreground: bool, print_summary: Callable) -> int:
    """0 once the lab is up (in the foreground: once it is down again); raises the rest."""
    if foreground:
        return _foreground(plan, scenario, print_summary)
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(plan, scenario, print_summary, parent, write_end)
    os.close(write_end)
    chunks = []
    with signals.handled():
        try:
            while chunk := os.read(read_end, 65536):
                chunks.append(chunk)
        except signals.Interrupted as exc:
            # the child tears down on SIGTERM; wait for it, so what is printed is true
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            print(f"testbed: interrupted by {exc}; the lab was torn down", file=sys.stderr)
            raise
    message = b"".join(chunks).decode(errors="replace")
    if message.startswith("ok\n"):
        print(message[3:])
        return 0
    os.waitpid(pid, 0)  # it failed and tore down: nothing is left once it has exited
    raise BuildFailed(message.removeprefix("error: ") or "lab build failed")
