"""The one way to load a scenario: a file (or a built-in name) to its Scenario and Plan."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from testbed.core import plan as planner
from testbed.core import scenario as loader
from testbed.core.model import Plan
from testbed.core.scenario import Scenario


def replan(
    scenario: Scenario, current: Plan | None, removed: Collection[str] = (), mode: str | None = None
) -> Plan:
    """The plan of `scenario`; pods `current` already placed keep their node and address."""
    keep = {p.name: (p.node, p.ip) for p in current.pods} if current else None
    planned = planner.plan(scenario, keep=keep, removed=removed)
    if mode and planned.proxy.mode != mode:
        planned = replace(planned, proxy=replace(planned.proxy, mode=mode))
    return planned


def load_both(path: str, proxy_mode: str | None = None) -> tuple[Scenario, Plan]:
    """The validated scenario of a file and its plan (the scenario is what changes edit)."""
    scenario = loader.load(path)
    return scenario, replan(scenario, None, mode=proxy_mode)


def load(path: str, proxy_mode: str | None = None) -> Plan:
    """The plan of a scenario file."""
    return load_both(path, proxy_mode)[1]
