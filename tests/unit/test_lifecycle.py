"""Pods over time, without root: the rolling update's and the drain's schedules, the
scenario they leave, the plan's lifecycle states, and the loader's fields and refusals."""

from __future__ import annotations

import pytest

from testbed.core import lifecycle, scenario
from testbed.core.lifecycle import CREATE, GONE, READY, TERMINATE, Event, Eviction
from testbed.core.load import replan
from testbed.core.scenario import ScenarioError, Taint
from testbed.verdict.layout import step_words

OLD = ["web-0", "web-1", "web-2"]
NEW = ["web-3", "web-4", "web-5"]
KEY = "Deployment/default/web"


def plain(events):
    return [(e.at, e.what, e.pod) for e in events]


@pytest.mark.parametrize(
    ("surge", "unavailable", "replicas", "expected"),
    [
        ("25%", "25%", 3, (1, 0)),  # surge rounds up, unavailable down
        ("25%", "25%", 4, (1, 1)),
        ("25%", "25%", 10, (3, 2)),
        ("25%", "25%", 1, (1, 0)),
        (0, "10%", 3, (0, 1)),  # both resolve to 0: one pod may be unavailable
        (2, 5, 3, (2, 3)),  # never more unavailable than replicas
        ("50%", "0%", 0, (0, 0)),
    ],
)
def test_fenceposts_round_as_the_deployment_controller(surge, unavailable, replicas, expected):
    assert lifecycle.fenceposts(surge, unavailable, replicas) == expected


def test_surge_one_unavailable_zero_replaces_one_pod_at_a_time():
    events = lifecycle.rollout_schedule(OLD, NEW, 1, 0, ready_after=2.0, serve=3.0, workload=KEY)
    assert plain(events) == [
        (0.0, CREATE, "web-3"),
        (2.0, CREATE, "web-4"),
        (2.0, READY, "web-3"),
        (2.0, TERMINATE, "web-0"),
        (4.0, CREATE, "web-5"),
        (4.0, READY, "web-4"),
        (4.0, TERMINATE, "web-1"),
        (5.0, GONE, "web-0"),
        (6.0, READY, "web-5"),
        (6.0, TERMINATE, "web-2"),
        (7.0, GONE, "web-1"),
        (9.0, GONE, "web-2"),
    ]
    assert {e.workload for e in events} == {KEY}


def test_surge_zero_unavailable_one_deletes_before_it_creates():
    events = lifecycle.rollout_schedule(OLD, NEW, 0, 1, ready_after=1.0, serve=0.0)
    assert plain(events)[:3] == [
        (0.0, CREATE, "web-3"),
        (0.0, TERMINATE, "web-0"),
        (0.0, GONE, "web-0"),
    ]
    assert plain(events)[-1] == (3.0, READY, "web-5")


def test_every_rollout_keeps_its_fences_at_every_instant():
    """Whatever the numbers: at most replicas + surge pods not terminating, at least
    replicas - unavailable ready ones; every new pod ready, every old pod gone at the end."""
    for replicas in range(0, 6):
        old = [f"o-{i}" for i in range(replicas)]
        new = [f"n-{i}" for i in range(replicas)]
        for surge in range(0, 3):
            for unavailable in range(0, 3):
                if surge == unavailable == 0:
                    continue
                events = lifecycle.rollout_schedule(old, new, surge, unavailable, 1.5, 2.0)
                active, ready = set(old), set(old)
                for _, group in lifecycle.grouped(events):
                    for e in group:
                        if e.what == CREATE:
                            active.add(e.pod)
                        elif e.what == READY:
                            ready.add(e.pod)
                        elif e.what == TERMINATE:
                            active.discard(e.pod)
                            ready.discard(e.pod)
                    assert len(active) <= replicas + surge
                    assert len(ready) >= replicas - unavailable
                assert ready == set(new) == active


def test_serve_is_the_prestop_sleep_cut_at_the_grace_period():
    loaded = load(
        TEMPLATE.format(grace=10, lifecycle="lifecycle: {preStop: {sleep: {seconds: 4}}}")
    )
    assert loaded.deployments[0].template.serve_seconds == 4.0
    loaded = load(TEMPLATE.format(grace=2, lifecycle=EXEC.format(command='[sleep, "5"]')))
    assert loaded.deployments[0].template.serve_seconds == 2.0
    loaded = load(TEMPLATE.format(grace=30, lifecycle=""))
    assert loaded.deployments[0].template.serve_seconds == 0.0  # no preStop: SIGTERM stops it


def test_a_drain_replaces_deployment_pods_at_once_and_statefulset_pods_once_gone():
    events = lifecycle.drain_schedule(
        [
            Eviction("web-1", 2.0, KEY, "web-3"),
            Eviction("db-0", 1.0, "StatefulSet/default/db", "db-0"),
            Eviction("lone", 0.0),
        ],
        ready_after=0.5,
    )
    assert plain(events) == [
        (0.0, TERMINATE, "db-0"),
        (0.0, TERMINATE, "lone"),
        (0.0, TERMINATE, "web-1"),
        (0.0, GONE, "lone"),  # grace 0: gone in the instant it is deleted
        (0.0, CREATE, "web-3"),
        (0.5, READY, "web-3"),
        (1.0, GONE, "db-0"),
        (1.1, CREATE, "db-0"),
        (1.6, READY, "db-0"),
        (2.0, GONE, "web-1"),
    ]


# -- the world the events leave ----------------------------------------------------

TEMPLATE = """\
apiVersion: testbed/v1alpha1
kind: Lab
metadata: {{name: t}}
spec:
  nodes: 4
  clients: [{{name: client}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{type: LoadBalancer, externalTrafficPolicy: Local, selector: {{app: web}},
       ports: [{{port: 80, targetPort: 8080}}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: {grace}
      containers:
        - name: web
          ports: [{{containerPort: 8080}}]
          {lifecycle}
"""
EXEC = "lifecycle: {{preStop: {{exec: {{command: {command}}}}}}}"


def load(text: str) -> scenario.Scenario:
    return scenario.loads(text, "t.yaml")


def endpoint_states(plan):
    return {
        ep.pod: (ep.ready, ep.serving, ep.terminating)
        for ep in plan.service("web").ports[0].endpoints
    }


def test_events_become_starting_and_terminating_endpoints_and_pods_keep_their_place():
    world = load(TEMPLATE.format(grace=30, lifecycle=""))
    plan = replan(world, None)
    start = {p.name: (p.node, p.ip) for p in plan.pods}
    events = [Event(0, CREATE, "web-3", KEY), Event(0, TERMINATE, "web-0", KEY)]
    world, removed = lifecycle.apply(world, frozenset(), events)
    plan = replan(world, plan, removed)
    assert endpoint_states(plan) == {
        "web-0": (False, True, True),  # terminating: still serving (KEP-1669)
        "web-1": (True, True, False),
        "web-2": (True, True, False),
        "web-3": (False, False, False),  # starting
    }
    assert {p.name: (p.node, p.ip) for p in plan.pods if p.name in start} == start
    assert plan.pod("web-3").node == "node-4"  # the lab's scheduler: the empty node
    world, removed = lifecycle.apply(
        world, removed, [Event(1, READY, "web-3", KEY), Event(1, GONE, "web-0", KEY)]
    )
    plan = replan(world, plan, removed)
    assert endpoint_states(plan) == {p: (True, True, False) for p in ("web-1", "web-2", "web-3")}
    assert world.workload(KEY).pod_names() == ["web-1", "web-2", "web-3"]
    assert world.lifecycle == ()
    # a later scale numbers on after the highest, and scales down the last ones first
    assert lifecycle.members(world.workload(KEY)) == ["web-1", "web-2", "web-3"]
    from dataclasses import replace

    bigger = replace(world.workload(KEY), replicas=5)
    assert bigger.pod_names() == ["web-1", "web-2", "web-3", "web-4", "web-5"]
    assert replace(world.workload(KEY), replicas=2).pod_names() == ["web-1", "web-2"]


def test_a_bare_pod_that_is_gone_is_deleted_and_a_taint_keeps_new_pods_off():
    world = load(TEMPLATE.format(grace=30, lifecycle=""))
    world = lifecycle.tainted(world, "node-4", Taint("example.com/x", "", "NoSchedule"))
    world = lifecycle.tainted(world, "node-4", Taint("example.com/x", "y", "NoSchedule"))
    assert [o.taints for o in world.node_objects if o.name == "node-4"] == [
        (Taint("example.com/x", "y", "NoSchedule"),)
    ]
    plan = replan(world, None)
    world, removed = lifecycle.apply(world, frozenset(), [Event(0, CREATE, "web-3", KEY)])
    assert replan(world, plan, removed).pod("web-3").node != "node-4"
    _, removed = lifecycle.apply(world, removed, [Event(0, GONE, "lone")])
    assert removed == {"lone"}


# -- the loader --------------------------------------------------------------------

STEPS = TEMPLATE.format(grace=30, lifecycle="").replace(
    "  clients: [{name: client}]\n", "  clients: [{name: client}]\n  steps:\n{steps}", 1
)


def steps(text: str) -> scenario.Scenario:
    return load(STEPS.replace("{steps}", text))


def test_steps_read_into_rollout_drain_and_taint():
    s = steps(
        "    - {name: r, rollout: {deployment: web, maxSurge: 50%, maxUnavailable: 0,\n"
        "        readinessDelaySeconds: 1.5, terminationGracePeriodSeconds: 0,\n"
        "        preStopSeconds: 2}}\n"
        "    - {name: d, drainNode: {node: node-2, readinessDelaySeconds: 1}}\n"
        "    - {name: t, taintNode: {node: node-3, key: example.com/gpu, value: 'no',\n"
        "        effect: NoExecute}}\n"
        "    - {name: p, probe: {from: client, to: {service: web, via: loadBalancer},\n"
        "        expect: {pods: [web-3, web-4, web-5]}}}\n"
    )
    r, d, t, _ = s.lab.steps
    assert (r.action, r.deployment) == ("rollout", "default/web")
    assert r.rollout == scenario.Rollout("50%", 0, 1.5, 0, 2.0)
    assert (d.node, d.drain) == ("node-2", scenario.Drain(1.0))
    assert (t.node, t.taint) == ("node-3", Taint("example.com/gpu", "no", "NoExecute"))
    assert all(step.changes_lab for step in (r, d, t))
    assert [step_words(step) for step in (r, d, t)] == [
        "roll out default/web (maxSurge 50%, maxUnavailable 0, ready after 1.5 s)",
        "drain node-2 (cordon, ToBeDeletedByClusterAutoscaler, evict its pods)",
        "taint node-3 example.com/gpu=no:NoExecute",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "    - {name: r, rollout: {deployment: web, maxSurge: 0, maxUnavailable: 0%}}\n",
            "t.yaml:8: spec.steps[0].rollout.maxUnavailable: maxUnavailable may not be 0 when "
            "maxSurge is 0",
        ),
        (
            "    - {name: r, rollout: {deployment: web, maxUnavailable: 120%}}\n",
            "t.yaml:8: spec.steps[0].rollout.maxUnavailable: 120%: maxUnavailable must not be "
            "greater than 100%",
        ),
        (
            "    - {name: r, rollout: {deployment: web, maxSurge: -1}}\n",
            "spec.steps[0].rollout.maxSurge: -1: maxSurge must be greater than or equal to 0",
        ),
        (
            "    - {name: r, rollout: {deployment: web, maxSurge: lots}}\n",
            "spec.steps[0].rollout.maxSurge: 'lots' is not a whole number or a percentage",
        ),
        (
            "    - {name: r, rollout: {deployment: web, readinessDelaySeconds: 601}}\n",
            "spec.steps[0].rollout.readinessDelaySeconds: 601 is outside 0-600 (seconds)",
        ),
        (
            "    - {name: r, rollout: {deployment: api}}\n",
            "t.yaml:8: spec.steps[0].rollout.deployment: no Deployment default/api in the scenario",
        ),
        (
            "    - {name: r, rollout: {deployment: web, surge: 1}}\n",
            "spec.steps[0].rollout.surge: unknown field",
        ),
        (
            "    - {name: d, drainNode: {node: node-9}}\n",
            "t.yaml:8: spec.steps[0].drainNode.node: no node named 'node-9' in the lab",
        ),
        (
            "    - {name: t, taintNode: {node: node-1, key: x}}\n",
            "spec.steps[0].taintNode.effect: required field is missing",
        ),
        (
            "    - {name: t, taintNode: {node: node-1, key: x, effect: Sometimes}}\n",
            "spec.steps[0].taintNode.effect: 'Sometimes' is not one of NoSchedule | "
            "PreferNoSchedule | NoExecute",
        ),
        (
            "    - {name: t, taintNode: {node: node-1, key: 'bad key', effect: NoSchedule}}\n",
            "spec.steps[0].taintNode.key: 'bad key' is not a valid taint key",
        ),
        (
            "    - {name: r, rollout: {deployment: web}}\n    - {name: x, deletePod: web-0}\n",
            "t.yaml:9: spec.steps[1].deletePod: cannot delete pod 'web-0'",
        ),
    ],
)
def test_bad_lifecycle_steps_are_refused_in_one_line(text, expected):
    with pytest.raises(ScenarioError) as err:
        steps(text)
    message = str(err.value)
    assert "\n" not in message
    assert expected in message, message


@pytest.mark.parametrize(
    ("grace", "lifecycle_text", "expected"),
    [
        (
            10,
            "lifecycle: {preStop: {sleep: {seconds: 11}}}",
            "preStop.sleep.seconds: must be non-negative and less than "
            "terminationGracePeriodSeconds (10)",
        ),
        (
            30,
            "lifecycle: {preStop: {sleep: {seconds: 1}, exec: {command: [sleep, '1']}}}",
            "preStop: give one handler: sleep, exec, httpGet, tcpSocket",
        ),
        (-1, "", "terminationGracePeriodSeconds: must be 0-3600 (seconds)"),
    ],
)
def test_bad_termination_fields_are_refused_with_file_line_and_field(
    grace, lifecycle_text, expected
):
    with pytest.raises(ScenarioError) as err:
        load(TEMPLATE.format(grace=grace, lifecycle=lifecycle_text))
    message = str(err.value)
    assert message.startswith("t.yaml:"), message
    assert "\n" not in message
    assert expected in message, message


@pytest.mark.parametrize(
    "command", ['[sleep, "2"]', '[/bin/sh, -c, "sleep 2"]', '[bash, -c, "sleep 2.0"]']
)
def test_prestop_sleep_commands_the_lab_can_run(command):
    loaded = load(TEMPLATE.format(grace=30, lifecycle=EXEC.format(command=command)))
    assert loaded.deployments[0].template.pre_stop == 2.0


@pytest.mark.parametrize(
    "hook",
    [
        EXEC.format(command="[/wait-shutdown]"),
        "lifecycle: {preStop: {httpGet: {path: /drain, port: 8080}}}",
    ],
)
def test_a_hook_the_lab_cannot_run_loads_with_a_warning_and_no_serving_time(hook):
    """Real dumps hold such hooks (ingress-nginx's /wait-shutdown): refusing them would
    refuse the dump; the pod is taken to stop at once, and the warning says so."""
    loaded = load(TEMPLATE.format(grace=30, lifecycle=hook))
    assert loaded.deployments[0].template.pre_stop == 0.0
    (warning,) = [w for w in loaded.warnings if "preStop" in w]
    assert warning.startswith("t.yaml:")
    assert "stops answering at once" in warning
