"""Helpers shared by the lab tests: namespaces before/after, a default plan."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
TESTBED = [sys.executable, "-m", "testbed.cli"]


def lab_namespaces() -> set[str]:
    """This suite's lab namespaces (its private prefix, see tests/conftest.py)."""
    from testbed.core.topology import NS_PREFIX

    try:
        return {n for n in os.listdir("/run/netns") if n.startswith(NS_PREFIX)}
    except FileNotFoundError:
        return set()


def state_files() -> set[str]:
    from testbed.kernel.state import STATE_DIR

    try:
        return set(os.listdir(STATE_DIR))
    except FileNotFoundError:
        return set()


def wait_until(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def run_testbed(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TESTBED, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw
    )


def load_plan(name: str = "default", **overrides):
    from dataclasses import replace

    from testbed.core import plan as planner
    from testbed.core import scenario

    planned = planner.plan(scenario.load(str(SCENARIOS / f"{name}.yaml")))
    if "mode" in overrides:
        planned = replace(planned, proxy=replace(planned.proxy, mode=overrides["mode"]))
    return planned


@pytest.fixture
def no_leaks():
    """Assert the test leaves no lab namespace and no state file behind."""
    before_ns, before_state = lab_namespaces(), state_files()
    yield
    assert wait_until(lambda: lab_namespaces() == before_ns), lab_namespaces() - before_ns
    assert state_files() == before_state
