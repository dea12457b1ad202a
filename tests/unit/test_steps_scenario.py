"""Steps in the Lab spec: what each action reads into, and what the loader refuses."""

from __future__ import annotations

import pytest

from testbed.core import scenario
from testbed.core.model import Target
from testbed.core.scenario import ScenarioError

LAB = """\
apiVersion: testbed/v1alpha1
kind: Lab
metadata: {name: t}
spec:
  nodes: 3
  clients: [{name: client}]
"""

WORLD = """\
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: LoadBalancer, externalTrafficPolicy: Local, selector: {app: web},
       ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: inside}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, ports: [{containerPort: 8080}]}]}
"""

LB_PROBE = "{from: client, to: {service: web, via: loadBalancer}, count: 5}"


def load(spec_tail: str) -> scenario.Scenario:
    return scenario.loads(LAB + spec_tail + WORLD, "t.yaml")


def error(spec_tail: str) -> str:
    with pytest.raises(ScenarioError) as err:
        load(spec_tail)
    return str(err.value)


def test_every_action_reads_into_a_step():
    s = load(
        "  steps:\n"
        "    - {name: kill, deletePod: web-1}\n"
        f"    - {{name: watch, probeDuringConvergence: {LB_PROBE}}}\n"
        "    - {name: settle, waitForHealthChecks: true}\n"
        "    - {name: more, scale: {deployment: web, replicas: 3}}\n"
        "    - {name: flip, setPolicy: {service: web, externalTrafficPolicy: Cluster}}\n"
        "    - {name: sick, proxyHealthy: {node: node-2, healthy: false}}\n"
        f"    - {{name: look, probe: {LB_PROBE[:-1]}, measureLatency: true}}}}\n"
    )
    steps = {st.name: st for st in s.lab.steps}
    assert [st.action for st in s.lab.steps] == [
        "deletePod",
        "probeDuringConvergence",
        "waitForHealthChecks",
        "scale",
        "setPolicy",
        "proxyHealthy",
        "probe",
    ]
    assert steps["kill"].pod == "web-1" and steps["kill"].changes_lab
    assert (steps["more"].deployment, steps["more"].replicas) == ("default/web", 3)
    flip = steps["flip"]
    assert (flip.service, flip.external_policy, flip.internal_policy) == (
        "default/web",
        "Cluster",
        None,
    )
    assert (steps["sick"].node, steps["sick"].healthy) == ("node-2", False)
    assert not steps["settle"].changes_lab and not steps["watch"].changes_lab
    watch = steps["watch"].probe
    assert watch is not None and watch.name == "watch" and watch.count == 5
    assert watch.target == Target(service="default/web", port=80, via="loadBalancer")
    look = steps["look"].probe
    assert look is not None and look.name == "look" and look.measure_latency


def test_probes_keep_measure_latency_off_by_default():
    s = load(f"  probes:\n    - {{name: p, {LB_PROBE[1:]}\n")
    assert s.lab.probes[0].measure_latency is False
    assert s.lab.steps == ()


def test_trace_reads_on_probes_and_probe_steps_and_is_off_by_default():
    s = load(
        f"  probes:\n    - {{name: p, trace: true, {LB_PROBE[1:]}\n"
        f"    - {{name: q, {LB_PROBE[1:]}\n"
        f"  steps:\n    - {{name: x, probe: {{trace: true, {LB_PROBE[1:]}}}\n"
    )
    assert [p.trace for p in s.lab.probes] == [True, False]
    assert s.lab.steps[0].probe is not None and s.lab.steps[0].probe.trace


def test_a_pod_made_by_scaling_up_can_be_deleted_and_one_scaled_away_cannot():
    s = load(
        "  steps:\n"
        "    - {name: more, scale: {deployment: web, replicas: 4}}\n"
        "    - {name: kill, deletePod: web-3}\n"
    )
    assert s.lab.steps[1].pod == "web-3"
    message = error(
        "  steps:\n"
        "    - {name: fewer, scale: {deployment: web, replicas: 1}}\n"
        "    - {name: kill, deletePod: web-1}\n"
    )
    assert message == "t.yaml:9: spec.steps[1].deletePod: cannot delete pod 'web-1': no such pod"


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (
            "  steps:\n    - {name: x}\n",
            "t.yaml:8: spec.steps[0]: a step needs one action: deletePod, scale, setPolicy, "
            "proxyHealthy, edgeHealthChecks, rollout, drainNode, taintNode, waitForHealthChecks, "
            "probe, probeDuringConvergence",
        ),
        (
            "  loadBalancer: {mode: single}\n  steps:\n    - {name: x, edgeHealthChecks: true}\n",
            "spec.steps[0].edgeHealthChecks: the edge checks health only in loadBalancer mode ecmp",
        ),
        (
            "  steps:\n    - {name: x, deletPod: web-0}\n",
            "t.yaml:8: spec.steps[0].deletPod: unknown field; did you mean deletePod?",
        ),
        (
            "  steps:\n    - {name: x, waitForHealthChecks: false}\n",
            "t.yaml:8: spec.steps[0].waitForHealthChecks: must be true "
            "(leave the step out not to wait)",
        ),
        (
            "  steps:\n    - {name: x, setPolicy: {service: nope, externalTrafficPolicy: Local}}\n",
            "t.yaml:8: spec.steps[0].setPolicy.service: no Service default/nope in the scenario",
        ),
        (
            "  steps:\n"
            "    - {name: x, setPolicy: {service: inside, externalTrafficPolicy: Local}}\n",
            "t.yaml:8: spec.steps[0].setPolicy.externalTrafficPolicy: Service default/inside is "
            "ClusterIP: Local needs NodePort or LoadBalancer",
        ),
        (
            "  steps:\n    - {name: x, setPolicy: {service: web}}\n",
            "t.yaml:8: spec.steps[0].setPolicy: give externalTrafficPolicy, "
            "internalTrafficPolicy or both",
        ),
        (
            "  steps:\n    - {name: x, setPolicy: {service: web, externalTrafficPolicy: local}}\n",
            "spec.steps[0].setPolicy.externalTrafficPolicy: 'local' is not one of Cluster | Local",
        ),
        (
            "  steps:\n    - {name: x, scale: {deployment: web, replicas: -1}}\n",
            "t.yaml:8: spec.steps[0].scale.replicas: must be 0-10000",
        ),
        (
            "  steps:\n    - {name: x, proxyHealthy: {node: node-1}}\n",
            "t.yaml:8: spec.steps[0].proxyHealthy.healthy: required field is missing",
        ),
        (
            "  steps:\n    - {name: Bad_Name, deletePod: web-0}\n",
            "t.yaml:8: spec.steps[0].name:",
        ),
        (
            "  steps:\n    - {name: x, deletePod: web-0}\n"
            "    - {name: y, probeDuringConvergence: "
            "{from: client, to: {service: inside}, count: 5}}\n",
            "t.yaml:9: spec.steps[1].probeDuringConvergence.to: probeDuringConvergence watches "
            "the edge: aim it at via: loadBalancer or via: externalIP",
        ),
        (
            f"  steps:\n    - {{name: x, probe: {{name: other, {LB_PROBE[1:]}}}\n",
            "t.yaml:8: spec.steps[0].probe.name: a step's probe is named by the step ('x'); "
            "leave it out",
        ),
        (
            "  steps:\n    - {name: x, probe: "
            "{from: client, to: {address: 10.96.0.50, port: 53}, protocol: UDP, "
            "measureLatency: true}}\n",
            "spec.steps[0].probe.measureLatency: latency is measured on TCP connections only",
        ),
        (
            f"  steps:\n    - {{name: x, deletePod: web-0}}\n"
            f"    - {{name: y, probeDuringConvergence: {{trace: true, {LB_PROBE[1:]}}}\n",
            "t.yaml:9: spec.steps[1].probeDuringConvergence.trace: trace is for spec.probes and "
            "probe steps, not batches",
        ),
        (
            f"  probes:\n    - {{name: p, trace: yes please, {LB_PROBE[1:]}\n",
            "t.yaml:8: spec.probes[0].trace:",
        ),
        (
            f"  steps:\n    - {{name: x, deletePod: web-0}}\n"
            f"    - {{name: x, probe: {LB_PROBE}}}\n",
            "t.yaml:9: spec.steps[1].name: duplicate step name 'x' (first at line 8)",
        ),
    ],
)
def test_bad_steps_are_refused_with_file_line_and_field(tail: str, expected: str):
    message = error(tail)
    assert "\n" not in message
    assert expected in message, message
