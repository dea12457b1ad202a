"""Pods over time: a Deployment's rolling update and a node's drain, as pure schedules.

The lab has no controllers, so the steps that need them (rollout, drainNode) play
them: a schedule says, in seconds from the step's start, when each pod is created
(starting: not ready, not serving), becomes ready, is deleted (terminating: not ready,
still serving while its preStop hook sleeps) and is gone. `rollout_schedule` follows
the Deployment controller's rolling update (pkg/controller/deployment/rolling.go: the
new ReplicaSet grows while all pods stay within replicas + maxSurge, the old one
shrinks while the available pods stay at replicas - maxUnavailable; a terminating pod
counts for neither). `apply` turns a group of events into the edited scenario the lab
re-plans, so the live driver (live/lifecycle.py) only keeps time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from testbed.core.scenario import Deployment, NodeObject, Scenario, Taint
from testbed.core.scenario.types import ABSENT, STARTING, TERMINATING

CREATE, READY, TERMINATE, GONE = "create", "ready", "terminate", "gone"
TO_BE_DELETED = "ToBeDeletedByClusterAutoscaler"  # KEP-3836: kube-proxy's /healthz says 503
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"  # what a cordon amounts to
# a StatefulSet pod is made again on the controller's next pass after the old one is gone
# (never in the same instant: the lab must see it leave before it is placed anew)
RECREATE_AFTER = 0.1
MAX_ROUNDS = 100_000  # controller passes: a bound, never reached by a valid rollout


class LifecycleError(ValueError):
    """A rollout or drain that cannot run in this world; one line that says why."""


@dataclass(frozen=True)
class Event:
    """One thing that happens to one pod, `at` seconds after the step began."""

    at: float
    what: str  # create | ready | terminate | gone
    pod: str
    workload: str = ""  # the owning workload's key (Kind/namespace/name); "" for a bare Pod


# -- the Deployment controller's arithmetic ---------------------------------------------


def scaled(value: int | str, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: an int as is, "N%" of `total`, rounded."""
    if isinstance(value, int):
        return value
    fraction = int(value.rstrip("%")) * total / 100
    return math.ceil(fraction) if round_up else math.floor(fraction)


def fenceposts(max_surge: int | str, max_unavailable: int | str, replicas: int) -> tuple[int, int]:
    """ResolveFenceposts, then MaxUnavailable's cap: (surge, unavailable) in pods.

    Surge rounds up, unavailable down; should both come to 0 (25% of 1 replica), one
    pod may be unavailable, so that the rollout can move at all.
    """
    surge = scaled(max_surge, replicas, round_up=True)
    unavailable = scaled(max_unavailable, replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def rollout_schedule(
    old: Sequence[str],
    new: Sequence[str],
    surge: int,
    unavailable: int,
    ready_after: float,
    serve: float,
    workload: str = "",
) -> tuple[Event, ...]:
    """The events of a rolling update from the ready pods `old` to the pods `new`.

    `len(new)` is spec.replicas; `surge` and `unavailable` come from `fenceposts`. New
    pods become ready `ready_after` seconds after they are made (minReadySeconds 0:
    ready is available); old pods go `serve` seconds after they are deleted. Old pods
    are scaled down in the order given. The controller acts at once on every change,
    as its informers make it; it is run until it has nothing more to do at that time.
    """
    replicas = len(new)
    min_available = replicas - (unavailable if replicas else 0)
    events: list[Event] = []
    active = list(old)  # old pods not yet deleted (all ready)
    made: list[float] = []  # when each new pod becomes ready
    now = 0.0
    for _ in range(MAX_ROUNDS):
        while True:  # one instant: scale up, scale down, until neither moves
            ready_new = sum(1 for t in made if t <= now)
            total = len(active) + len(made)
            up = min(replicas + surge - total, replicas - len(made))
            if up > 0:
                for name in new[len(made) : len(made) + up]:
                    events.append(Event(now, CREATE, name, workload))
                    if ready_after <= 0:
                        events.append(Event(now, READY, name, workload))
                    made.append(now + ready_after)
                continue
            available = len(active) + ready_new
            total = len(active) + len(made)
            max_scaled_down = total - min_available - (len(made) - ready_new)
            down = min(available - min_available, len(active))
            if max_scaled_down > 0 and down > 0:
                for name in active[:down]:
                    events.append(Event(now, TERMINATE, name, workload))
                    events.append(Event(now + serve, GONE, name, workload))
                del active[:down]
                continue
            break
        later = sorted(t for t in made if t > now)
        if not later:
            break
        now = later[0]
        events += [
            Event(now, READY, n, workload) for n, t in zip(new, made, strict=False) if t == now
        ]
    else:  # pragma: no cover - the fenceposts make every rollout move
        raise LifecycleError("the rollout does not converge")
    order = {CREATE: 0, READY: 1, TERMINATE: 2, GONE: 3}
    return tuple(sorted(events, key=lambda e: (e.at, order[e.what])))


@dataclass(frozen=True)
class Eviction:
    """One pod a drain evicts, and what brings it back (if anything)."""

    pod: str
    serve: float  # seconds it keeps answering once deleted
    workload: str = ""  # owner key; "" for a bare Pod (nothing brings it back)
    replacement: str | None = None  # Deployment: a new pod; StatefulSet: the same name


def drain_schedule(evictions: Iterable[Eviction], ready_after: float) -> tuple[Event, ...]:
    """`kubectl drain` after the cordon: every pod evicted at once, each ending after its
    grace; a ReplicaSet makes a replacement at once (the deleted pod no longer counts), a
    StatefulSet makes the same name again only once the old pod is gone."""
    events: list[Event] = []
    for ev in evictions:
        events += [Event(0.0, TERMINATE, ev.pod, ev.workload), Event(ev.serve, GONE, ev.pod)]
        if ev.replacement is None:
            continue
        born = ev.serve + RECREATE_AFTER if ev.replacement == ev.pod else 0.0
        events.append(Event(born, CREATE, ev.replacement, ev.workload))
        events.append(Event(born + max(ready_after, 0.0), READY, ev.replacement, ev.workload))
    order = {TERMINATE: 0, GONE: 1, CREATE: 2, READY: 3}
    return tuple(sorted(events, key=lambda e: (e.at, order[e.what], e.pod)))


def grouped(events: Sequence[Event]) -> list[tuple[float, tuple[Event, ...]]]:
    """Events by the instant they happen, in time order (one lab change per instant)."""
    out: list[tuple[float, tuple[Event, ...]]] = []
    for ev in events:
        if out and out[-1][0] == ev.at:
            out[-1] = (ev.at, (*out[-1][1], ev))
        else:
            out.append((ev.at, (ev,)))
    return out


# -- the world the events leave ------------------------------------------------------


def members(dep: Deployment, removed: Iterable[str] = ()) -> list[str]:
    """A workload's pods the lab has (not deleted for good), in order."""
    gone = set(removed)
    return [p for p in dep.pod_names() if p not in gone]


def owner_of(scenario: Scenario, pod: str, removed: Iterable[str] = ()) -> Deployment | None:
    """The workload whose pod this is (None: a bare Pod)."""
    gone = set(removed)
    for dep in scenario.deployments:
        if pod in dep.pod_names() and pod not in gone:
            return dep
    return None


def _set_workload(scenario: Scenario, dep: Deployment) -> Scenario:
    deployments = tuple(dep if d.key == dep.key else d for d in scenario.deployments)
    return replace(scenario, deployments=deployments)


def _listed(scenario: Scenario, key: str, removed: frozenset[str]) -> Deployment:
    """The workload with its pods as an explicit list (so one can leave from the middle)."""
    dep = scenario.workload(key)
    if dep is None:
        raise LifecycleError(f"no workload {key} in the lab")
    if not dep.names:
        pods = tuple(members(dep, removed))
        dep = replace(dep, names=pods, replicas=len(pods))
    return dep


def apply(
    scenario: Scenario, removed: frozenset[str], events: Iterable[Event]
) -> tuple[Scenario, frozenset[str]]:
    """The scenario (and deleted pods) after these events; `replan` makes it the Plan.

    A Deployment's pods become an explicit list: a new pod is added to it, a gone one
    leaves it. A bare Pod that is gone is deleted for good; a StatefulSet pod is absent
    until it is made again under its name.
    """
    states = dict(scenario.lifecycle)
    for ev in events:
        dep = scenario.workload(ev.workload) if ev.workload else None
        listed = dep is not None and dep.kind == "Deployment"
        if ev.what == CREATE:
            states[ev.pod] = STARTING
            if listed:
                dep = _listed(scenario, ev.workload, removed)
                if ev.pod not in dep.names:
                    names = (*dep.names, ev.pod)
                    scenario = _set_workload(
                        scenario, replace(dep, names=names, replicas=len(names))
                    )
        elif ev.what == READY:
            states.pop(ev.pod, None)
        elif ev.what == TERMINATE:
            states[ev.pod] = TERMINATING
        elif ev.what == GONE:
            states.pop(ev.pod, None)
            owner = owner_of(scenario, ev.pod, removed)
            if owner is None:
                removed = removed | {ev.pod}
            elif owner.kind == "Deployment":
                dep = _listed(scenario, owner.key, removed)
                names = tuple(n for n in dep.names if n != ev.pod)
                scenario = _set_workload(scenario, replace(dep, names=names, replicas=len(names)))
            else:
                states[ev.pod] = ABSENT
    lifecycle = tuple(sorted(states.items()))
    return replace(scenario, lifecycle=lifecycle), removed


def with_rollout_template(
    scenario: Scenario, key: str, grace: int | None, pre_stop: float | None
) -> Scenario:
    """The workload's template with a rollout's termination overrides (its new template)."""
    dep = scenario.workload(key)
    assert dep is not None
    template = dep.template
    if grace is not None:
        template = replace(template, grace=grace)
    if pre_stop is not None:
        template = replace(template, pre_stop=pre_stop)
    return _set_workload(scenario, replace(dep, template=template))


def tainted(scenario: Scenario, node: str, taint: Taint) -> Scenario:
    """The scenario with `taint` on the node's Node object (one per key and effect)."""
    found = {o.name: o for o in scenario.node_objects}
    obj = found.get(node, NodeObject(node))
    kept = tuple(t for t in obj.taints if (t.key, t.effect) != (taint.key, taint.effect))
    obj = replace(obj, taints=(*kept, taint))
    objects = tuple(obj if o.name == node else o for o in scenario.node_objects)
    if node not in found:
        objects = (*objects, obj)
    return replace(scenario, node_objects=objects)
