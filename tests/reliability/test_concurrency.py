"""Concurrency: labs of one scenario side by side, and clean-ups racing each other.

Two labs from the same scenario get different ids, state files and namespaces; their
probes give the verdicts one lab gives alone; taking one down leaves the other whole and
answering. Two `testbed clean` at once serialise on the state directory's lock: while
the lock is held neither removes anything, then one removes everything exactly once.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time

import pytest

from tests.support.commands import ROOT
from tests.support.private import Private
from tests.support.waiting import wait_until
from tests.support.world import alive

pytestmark = [pytest.mark.reliability, pytest.mark.lab]

PROBES = [
    ("--from", "client", "--to", "web", "--via", "nodePort", "--node", "node-2", "--count", "40"),
    ("--from", "web-0", "--to", "web", "--count", "40"),
]


def verdict_of(output: str) -> tuple[str, str]:
    """(EXPECTED, VERDICT) of the one probe row of a `testbed probe` table."""
    lines = output.splitlines()
    head = next(i for i, line in enumerate(lines) if "EXPECTED" in line and "VERDICT" in line)
    row = lines[head + 1]
    start, end = lines[head].index("EXPECTED"), lines[head].index("VERDICT")
    return row[start:end].strip(), row[end:].strip()


def probe_all(private: Private, labs: list[str]) -> dict[tuple[str, int], tuple]:
    """Every probe on every lab, all at once; (lab, probe) -> (exit code, expected, verdict)."""
    running = {
        (lab, i): subprocess.Popen(
            private.argv("probe", lab, *args),
            cwd=ROOT,
            env=private.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for lab in labs
        for i, args in enumerate(PROBES)
    }
    results = {}
    for key, proc in running.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, 1), err
        results[key] = (proc.returncode, *verdict_of(out))
    return results


def up_at_once(private: Private, count: int) -> list[str]:
    procs = [
        subprocess.Popen(
            private.argv("up", "default"),
            cwd=ROOT,
            env=private.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        first = out.splitlines()[0]
        assert first.startswith("lab "), out
        ids.append(first.split()[1])
    return ids


def lab_namespaces(private: Private, lab: str) -> set[str]:
    return {n for n in private.namespaces() if n.startswith(f"{private.prefix}{lab}-")}


def test_two_labs_of_one_scenario_coexist_and_give_the_same_verdicts(private: Private):
    (alone,) = up_at_once(private, 1)
    baseline = probe_all(private, [alone])
    assert all(code == 0 and verdict == "PASS" for code, _, verdict in baseline.values())
    down = private.tb("down", alone)
    assert down.returncode == 0, down.stderr
    assert private.namespaces() == set() and private.state_files() == set()

    first, second = up_at_once(private, 2)
    assert first != second
    assert len(private.state_files()) == 4  # a record and a copy of what it runs, per lab
    ns_first, ns_second = lab_namespaces(private, first), lab_namespaces(private, second)
    assert len(ns_first) == len(ns_second) == 9
    assert not ns_first & ns_second
    assert private.namespaces() == ns_first | ns_second
    listed = private.tb("ls").stdout
    assert first in listed and second in listed

    together = probe_all(private, [first, second])
    for (lab, i), outcome in together.items():
        assert outcome == baseline[(alone, i)], (lab, i, outcome)

    owner = {s.split("/")[-1]: s for s in private.state_files()}
    down = private.tb("down", first)
    assert down.returncode == 0, down.stderr
    assert lab_namespaces(private, first) == set()
    assert lab_namespaces(private, second) == ns_second
    assert set(private.state_files()) == {owner[f"{second}.json"], owner[f"{second}.lab"]}
    ping = private.tb("exec", "--lab", second, "client", "--", "ping", "-c1", "-W2", "172.18.0.12")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    after = probe_all(private, [second])
    for (_, i), outcome in after.items():
        assert outcome == baseline[(alone, i)]
    print(
        f"\nCONCURRENCY: labs {first} and {second} side by side, verdicts {sorted(after.values())}"
    )
    down = private.tb("down", second)
    assert down.returncode == 0, down.stderr
    assert private.namespaces() == set() and private.state_files() == set()


def test_two_cleans_at_once_serialise_and_remove_everything_once(private: Private):
    from testbed.kernel import netns

    for _ in range(2):  # two killed labs: namespaces and state files
        proc, _pid = private.stalled("up", "up", "default", "--foreground")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    orphans = {f"{private.prefix}orphan{i}-node" for i in range(20)}
    try:
        for name in orphans:  # and namespaces no record names: not a lab's, never removed
            netns.create(name)
        cleans_serialise(private, orphans)
    finally:
        for name in orphans:
            netns.remove(name)


def cleans_serialise(private: Private, orphans: set[str]) -> None:
    namespaces, states = private.namespaces() - orphans, private.state_files()
    assert len(namespaces) == 18 and len(states) == 4

    lock = os.open(private.state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cleans = [
            subprocess.Popen(
                private.argv("clean"),
                cwd=ROOT,
                env=private.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        time.sleep(1.5)
        # both wait for the lock: nothing is touched while it is held
        assert all(c.poll() is None for c in cleans)
        assert private.namespaces() == namespaces | orphans
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    outputs = []
    for proc in cleans:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and err == "", err
        outputs.append(out.splitlines())
    removed = [line for lines in outputs for line in lines if line.startswith("removed ")]
    assert len(removed) == len(set(removed)) == len(namespaces) + len(states)
    assert {r.split(" ", 2)[2] for r in removed} == namespaces | states
    tails = sorted(next(x for x in lines if x.startswith("clean: ")) for lines in outputs)
    assert tails == ["clean: nothing to remove", "clean: removed 22 leftovers"]
    assert all("left alone 20 namespaces" in lines[-1] for lines in outputs)
    assert private.namespaces() == orphans and private.state_files() == set()
    assert wait_until(lambda: not any(alive(p.pid) for p in cleans), 5)
