"""Crash safety: a lab killed at any point of its life is fully removed by `testbed clean`.

Every build checkpoint (checkpoint.POINTS) is tried in the three ways a lab is owned:
`testbed up --foreground`, `testbed up` (a daemon child that must die with its parent
while it builds) and `testbed run` (which adds "probing": the lab is up and mid-run).
After the SIGKILL, `clean` must name every namespace and state file it removes, and
leave none. SIGINT and SIGTERM instead must tear down by themselves.
"""

from __future__ import annotations

import os
import re
import signal

import pytest

from testbed.kernel.checkpoint import POINTS
from tests.support.private import Private
from tests.support.waiting import wait_until
from tests.support.world import alive

pytestmark = [pytest.mark.reliability, pytest.mark.lab]

BUILD_POINTS = [p for p in POINTS if p != "probing"]
KILLS: list[tuple[str, str]] = [
    *[("up --foreground", p) for p in BUILD_POINTS],
    *[("up", p) for p in BUILD_POINTS],
    *[("run", p) for p in POINTS],
]
COMMANDS = {
    "up --foreground": ("up", "default", "--foreground"),
    "up": ("up", "default"),
    "run": ("run", "-q", "default"),
}


def clean_removes_exactly_what_is_left(private: Private) -> tuple[int, int]:
    """`testbed clean` removes and names every leftover; returns (namespaces, state files)."""
    namespaces, states = private.namespaces(), private.state_files()
    done = private.tb("clean")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    named_ns = {line.removeprefix("removed namespace ") for line in lines if " namespace " in line}
    named_state = {line.removeprefix("removed state ") for line in lines if " state " in line}
    assert named_ns == namespaces, done.stdout
    assert named_state == states, done.stdout
    total = len(namespaces) + len(states)
    assert lines[-1] == (
        f"clean: removed {total} leftovers" if total else "clean: nothing to remove"
    )
    assert private.namespaces() == set()
    assert private.state_files() == set()
    return len(namespaces), len(states)


@pytest.mark.parametrize(("how", "point"), KILLS, ids=[f"{h}@{p}" for h, p in KILLS])
def test_sigkill_anywhere_then_clean_leaves_nothing(private: Private, how: str, point: str):
    proc, stalled_pid = private.stalled(point, *COMMANDS[how])
    assert private.state_files(), "the state file is written before anything else"
    if how == "up":
        assert stalled_pid != proc.pid, "the daemon child builds the lab"
    else:
        assert stalled_pid == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # a daemon child that is still building dies with its parent (PR_SET_PDEATHSIG)
    assert wait_until(lambda: not alive(stalled_pid), 5), f"{stalled_pid} outlived its parent"
    namespaces, states = clean_removes_exactly_what_is_left(private)
    assert states == 2  # the record and the lab's copy of its scenario and plan
    if point != "state-saved":
        assert namespaces >= 1
    print(f"KILL {how:<16} at {point:<12}: clean removed {namespaces} namespaces, {states} state")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_while_probing_tear_down(private: Private, signum, code):
    proc, _pid = private.stalled("probing", "run", "-q", "default")
    assert private.namespaces(), "the lab is up while probing"
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == code
    # no `clean`: the run tore its own lab down
    assert private.namespaces() == set()
    assert private.state_files() == set()


def test_sigterm_to_a_building_daemon_tears_down(private: Private):
    proc, child = private.stalled("routes", "up", "default")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert wait_until(lambda: not alive(child), 15)
    assert wait_until(lambda: not private.namespaces(), 15), private.namespaces()
    assert private.state_files() == set()


def test_clean_never_guesses_by_name_a_lab_whose_record_is_gone(private: Private):
    """Without its record nothing says those namespaces are a lab's: clean names, keeps them."""
    from testbed.kernel import netns

    proc, _pid = private.stalled("up", "up", "default", "--foreground")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    for path in private.state_files():
        os.unlink(path)
    left = private.namespaces()
    assert len(left) == 9  # edge, 3 nodes, 4 pods, 1 client
    try:
        listed = private.tb("ls")
        assert listed.stdout.strip() == "no labs", "without its state file the lab is unlisted"
        done = private.tb("clean")
        assert done.returncode == 0, done.stderr
        assert not re.findall(r"^removed ", done.stdout, re.M), done.stdout
        assert "left alone 9 namespaces no lab record owns" in done.stdout
        assert private.namespaces() == left
    finally:
        for name in left:
            netns.remove(name)
