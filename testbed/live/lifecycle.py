"""The steps that play Kubernetes controllers on a running lab: rollout, drainNode, taintNode.

The schedule is pure (core/lifecycle.py); this module only keeps time: it applies each
instant's events with one re-plan (`Lab.apply`) when the monotonic clock reaches it,
measured from the step's start, so a slow change (an upstream lab waits for every
kube-proxy to sync) delays the next event but never shifts the ones after it. It holds
no lock between events and checks for Ctrl-C while it waits, so probes or a load may run
beside it and a stop ends it cleanly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from testbed.core import lifecycle
from testbed.core.errors import LabError
from testbed.core.lifecycle import TO_BE_DELETED, UNSCHEDULABLE, Event, Eviction
from testbed.core.scenario import Drain, Rollout, Taint
from testbed.kernel import signals

if TYPE_CHECKING:
    from testbed.live.lab import Lab

TICK = 0.05  # seconds between looks at the clock (and at a stop) while waiting
OnEvent = Callable[[float, tuple[Event, ...]], None]


def _wait_until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        signals.check()
        time.sleep(min(TICK, left))
    signals.check()


def run_events(lab: Lab, events: Sequence[Event], on_event: OnEvent | None = None) -> float:
    """Apply the events at their times; `on_event(at, group)` runs after each instant's
    change is in place. Returns the seconds the whole schedule took."""
    start = time.monotonic()
    for at, group in lifecycle.grouped(events):
        _wait_until(start + at)
        scenario, removed = lifecycle.apply(lab.scenario, lab.removed, group)
        lab.apply(scenario, removed)
        if on_event is not None:
            on_event(at, group)
    return time.monotonic() - start


def _key(ref: str) -> str:
    return ref if "/" in ref else f"default/{ref}"


def _fresh(lab: Lab, names: Sequence[str], what: str) -> None:
    """New pods must not take a name another pod of the lab has."""
    taken = {p.name for p in lab.plan.pods} | {p.name for p in lab.scenario.pods}
    clash = sorted(set(names) & taken)
    if clash:
        raise LabError(f"{what} would name a new pod {clash[0]}, which another pod has")


def rollout_events(lab: Lab, deployment: str, spec: Rollout) -> tuple[Event, ...]:
    """The rollout's schedule in this lab; the Deployment's template takes the step's
    grace period and preStop (the lab's scenario is updated, the plan not yet)."""
    scenario = lab._need_scenario()
    key = f"Deployment/{_key(deployment)}"
    dep = scenario.workload(key)
    if dep is None:
        raise LabError(f"no Deployment {_key(deployment)} in the lab")
    present = {p.name for p in lab.plan.pods}
    old = [p for p in lifecycle.members(dep, lab.removed) if p in present]
    new = dep.next_names(dep.replicas)
    _fresh(lab, new, f"the rollout of {_key(deployment)}")
    surge, unavailable = lifecycle.fenceposts(spec.max_surge, spec.max_unavailable, dep.replicas)
    scenario = lifecycle.with_rollout_template(scenario, key, spec.grace, spec.pre_stop)
    lab.scenario = scenario
    serve = scenario.workload(key).template.serve_seconds
    return lifecycle.rollout_schedule(
        old, new, surge, unavailable, spec.readiness_delay, serve, key
    )


def rollout(lab: Lab, deployment: str, spec: Rollout, on_event: OnEvent | None = None) -> float:
    """Replace a Deployment's pods as its controller's rolling update does; returns when
    every new pod is ready and every old one is gone."""
    return run_events(lab, rollout_events(lab, deployment, spec), on_event)


def taint_node(lab: Lab, node: str, taint: Taint) -> None:
    """Taint a Node (new pods keep off it unless they tolerate it). The cluster
    autoscaler's ToBeDeletedByClusterAutoscaler also makes kube-proxy's /healthz say 503
    (KEP-3836), so load balancers stop sending the node new connections."""
    if node not in {n.name for n in lab.plan.nodes}:
        raise LabError(f"no node {node} in the lab")
    scenario = lifecycle.tainted(lab._need_scenario(), node, taint)
    lab.proxy.taint(node, taint.key, taint.value, taint.effect)
    if taint.key == TO_BE_DELETED:
        lab.set_proxy_health(node, False)
    lab.apply(scenario, lab.removed)


def drain_events(lab: Lab, node: str, spec: Drain) -> tuple[Event, ...]:
    """Which pods the drain evicts (DaemonSet pods stay) and what replaces each."""
    scenario = lab._need_scenario()
    evictions: list[Eviction] = []
    fresh: dict[str, list[str]] = {}  # per Deployment: replacement names not yet handed out
    for pod in lab.plan.pods:
        if pod.node != node or pod.terminating:
            continue
        dep = lifecycle.owner_of(scenario, pod.name, lab.removed)
        if dep is None:
            own = next((p for p in scenario.pods if p.name == pod.name), None)
            serve = own.template.serve_seconds if own is not None else 0.0
            evictions.append(Eviction(pod.name, serve))
            continue
        if dep.kind == "DaemonSet":  # kubectl drain --ignore-daemonsets
            continue
        replacement = pod.name
        if dep.kind == "Deployment":
            if dep.key not in fresh:
                on_node = [p.name for p in lab.plan.pods if p.node == node]
                fresh[dep.key] = dep.next_names(len(on_node))
                _fresh(lab, fresh[dep.key], f"draining {node}")
            replacement = fresh[dep.key].pop(0)
        evictions.append(Eviction(pod.name, dep.template.serve_seconds, dep.key, replacement))
    return lifecycle.drain_schedule(evictions, spec.readiness_delay)


def drain(lab: Lab, node: str, spec: Drain, on_event: OnEvent | None = None) -> float:
    """The cluster autoscaler's scale-down of a node: cordon it, taint it
    ToBeDeletedByClusterAutoscaler, then evict its pods with their grace periods, as
    `kubectl drain --ignore-daemonsets` does; returns when the evictions are done."""
    taint_node(lab, node, Taint(UNSCHEDULABLE, "", "NoSchedule"))
    taint_node(lab, node, Taint(TO_BE_DELETED, str(int(time.time())), "NoSchedule"))
    return run_events(lab, drain_events(lab, node, spec), on_event)


def describe(events: Sequence[Event]) -> list[str]:
    """One line per instant, for a person: `+2.0 s: web-3 ready, web-0 terminating`."""
    words = {"create": "starting", "ready": "ready", "terminate": "terminating", "gone": "gone"}
    return [
        f"+{at:.1f} s: " + ", ".join(f"{e.pod} {words[e.what]}" for e in group)
        for at, group in lifecycle.grouped(events)
    ]
