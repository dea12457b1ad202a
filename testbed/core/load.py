"""The one way to load a scenario: a file (or a built-in name) to its Scenario and Plan."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from testbed.core import plan as planner
from testbed.core import scenario as loader
from testbed.core.errors import TestbedError
from testbed.core.model import Plan
from testbed.core.scenario import Scenario
from testbed.core.scenario.types import IMPLEMENTATIONS, VERSION


class ChoiceError(TestbedError, ValueError):
    """A bad --kube-proxy value; the message says which values work."""


def kube_proxy_choice(text: str) -> tuple[str, str | None]:
    """`builtin`, `upstream` or `upstream@VERSION` (as --kube-proxy takes it)."""
    impl, _, version = text.partition("@")
    if impl not in IMPLEMENTATIONS or (impl == "builtin" and version):
        raise ChoiceError(f"--kube-proxy {text}: use builtin, upstream or upstream@VERSION")
    if not version:
        return impl, None
    if not VERSION.fullmatch(version):
        raise ChoiceError(f"--kube-proxy {text}: {version!r} is not a version like v1.37.2")
    return impl, "v" + version.removeprefix("v")


def replan(
    scenario: Scenario,
    current: Plan | None,
    removed: Collection[str] = (),
    mode: str | None = None,
    kube_proxy: str | None = None,
) -> Plan:
    """The plan of `scenario`; pods `current` already placed keep their node and address.

    `mode` and `kube_proxy` (builtin | upstream[@VERSION]) override the scenario's.
    """
    keep = {p.name: (p.node, p.ip) for p in current.pods} if current else None
    planned = planner.plan(scenario, keep=keep, removed=removed, previous=current)
    if mode and planned.proxy.mode != mode:
        planned = replace(planned, proxy=replace(planned.proxy, mode=mode))
    if kube_proxy:
        impl, version = kube_proxy_choice(kube_proxy)
        proxy = replace(
            planned.proxy, implementation=impl, version=version or planned.proxy.version
        )
        planned = replace(planned, proxy=proxy)
    return planned


def load_both(
    path: str, proxy_mode: str | None = None, kube_proxy: str | None = None
) -> tuple[Scenario, Plan]:
    """The validated scenario of a file and its plan (the scenario is what changes edit)."""
    scenario = loader.load(path)
    return scenario, replan(scenario, None, mode=proxy_mode, kube_proxy=kube_proxy)


def load(path: str, proxy_mode: str | None = None) -> Plan:
    """The plan of a scenario file."""
    return load_both(path, proxy_mode)[1]
