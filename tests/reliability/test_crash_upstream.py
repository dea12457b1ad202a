"""Upstream mode leaves nothing: a SIGKILL of `testbed up --kube-proxy upstream` at ten
moments of its start-up, then `testbed clean`: no namespace, process, data directory or
state file is left. etcd, kube-apiserver and every kube-proxy die with the lab's owner
(PR_SET_PDEATHSIG), and `clean` ends any survivor by the pid and start time the lab
recorded, never by name.
"""

from __future__ import annotations

import json
import signal

import pytest

from testbed.kernel import upstreambin
from testbed.kernel.checkpoint import UPSTREAM_POINTS
from tests.support.private import Private
from tests.support.waiting import wait_until
from tests.support.world import alive

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.lab,
    pytest.mark.skipif(not upstreambin.built(), reason="no upstream binaries built"),
]

POINTS = ("state-saved", "namespaces", *UPSTREAM_POINTS, "up")


def recorded(private: Private) -> list[dict]:
    """The processes the lab's record names."""
    found = []
    for path in private.state_files():
        if path.endswith(".json"):
            with open(path) as handle:
                found += json.load(handle).get("processes", [])
    return found


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_during_an_upstream_up_then_clean_leaves_nothing(private: Private, point: str):
    proc, child = private.stalled(point, "up", "--kube-proxy", "upstream", "default")
    started = recorded(private)
    if point in ("apiserver-started", "apiserver-ready", "nodes", "kube-proxy-1", "up"):
        assert {p["name"] for p in started} >= {"etcd", "kube-apiserver"}, started
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # the daemon child is still building ("up" is reached inside the build): it dies with
    # its parent, and every process it started dies with it, before any clean-up
    assert wait_until(lambda: not alive(child), 10), f"{child} outlived its parent"
    assert wait_until(lambda: not [p for p in started if alive(p["pid"])], 10), started
    done = private.tb("clean")
    assert done.returncode == 0, done.stderr
    assert private.namespaces() == set(), done.stdout
    assert private.state_files() == set(), done.stdout
    left = [p for p in started if alive(p["pid"])]
    assert not left, f"still running after clean: {left}"
    print(f"KILL up --kube-proxy upstream at {point:<17}: {len(started)} processes recorded")


def test_sigkill_of_a_running_labs_owner_takes_the_control_plane_with_it(private: Private):
    done = private.tb("up", "--kube-proxy", "upstream", "default")
    assert done.returncode == 0, done.stderr
    (record,) = [p for p in private.state_files() if p.endswith(".json")]
    with open(record) as handle:
        owner = json.load(handle)["pid"]
    started = recorded(private)
    assert len(started) == 5  # etcd, kube-apiserver, three kube-proxies
    import os

    os.kill(owner, signal.SIGKILL)
    assert wait_until(lambda: not [p for p in started if alive(p["pid"])], 10), started
    cleaned = private.tb("clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert private.namespaces() == set()
    assert private.state_files() == set()
