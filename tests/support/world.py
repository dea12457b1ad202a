"""What exists on the machine: this suite's namespaces and state files, live processes."""

from __future__ import annotations

import os
from dataclasses import replace

from tests.support.commands import SCENARIOS


def netns_names() -> list[str]:
    """Every named network namespace on the machine, anybody's."""
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def lab_namespaces() -> set[str]:
    """This suite's lab namespaces (its private prefix, see tests/conftest.py)."""
    from testbed.core.topology import NS_PREFIX

    return {n for n in netns_names() if n.startswith(NS_PREFIX)}


def state_files() -> set[str]:
    from testbed.kernel.state import STATE_DIR

    try:
        return set(os.listdir(STATE_DIR))
    except FileNotFoundError:
        return set()


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (nobody may reap it here)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def load_plan(name: str = "default", **overrides):
    """The plan of scenarios/NAME.yaml; `mode=` overrides its proxy mode."""
    from testbed.core import plan as planner
    from testbed.core import scenario

    planned = planner.plan(scenario.load(str(SCENARIOS / f"{name}.yaml")))
    if "mode" in overrides:
        planned = replace(planned, proxy=replace(planned.proxy, mode=overrides["mode"]))
    return planned
