"""`testbed up`: build a lab in a child process that stays to serve its pods.

The pods' echo servers and the nodes' health-check servers live in one event
loop, so somebody must keep running after `testbed up` returns. The child
builds, reports "ok" or the error through a pipe, then waits for SIGTERM
(`testbed down`) and tears down. While building it dies with its parent
(PR_SET_PDEATHSIG), so a killed `testbed up` leaves only what `testbed clean`
finds through the state file and the namespace prefix.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable

from testbed import signals
from testbed.model import Plan
from testbed.scenario import Scenario

PR_SET_PDEATHSIG = 1


def _die_with_parent(enabled: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL if enabled else 0, 0, 0, 0)


def _foreground(plan: Plan, scenario: Scenario | None, print_summary: Callable) -> int:
    from testbed.lab import Lab

    try:
        with signals.handled(), Lab(plan, scenario=scenario) as lab:
            print(print_summary(lab))
            print("running in the foreground: Ctrl-C tears the lab down", flush=True)
            while True:
                time.sleep(3600)
    except signals.Interrupted as exc:
        return exc.exit_code


def _child(
    plan: Plan, scenario: Scenario | None, print_summary: Callable, parent: int, report: int
) -> None:
    from testbed.lab import Lab

    os.setsid()
    _die_with_parent(True)
    if os.getppid() != parent:
        os._exit(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    lab = Lab(plan, scenario=scenario)
    try:
        with signals.handled():
            lab.up()
            _die_with_parent(False)
            os.write(report, b"ok\n" + print_summary(lab).encode())
            os.close(report)
            report = -1
            while True:
                signal.pause()
    except signals.Interrupted:
        pass
    except BaseException as exc:  # the parent prints it
        if report >= 0:
            os.write(report, f"error: {exc}".splitlines()[0].encode())
    finally:
        lab.down()
        os._exit(0)


def up(plan: Plan, scenario: Scenario | None, foreground: bool, print_summary: Callable) -> int:
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
            os.kill(pid, signal.SIGTERM)
            return exc.exit_code
    message = b"".join(chunks).decode(errors="replace")
    if message.startswith("ok\n"):
        print(message[3:])
        return 0
    print(f"testbed: {message.removeprefix('error: ') or 'lab build failed'}", file=sys.stderr)
    return 1
