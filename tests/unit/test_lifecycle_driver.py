"""The rollout and drain drivers on a Lab whose kernel and servers are fakes (no root):
what each kind of pod becomes, what the health checks answer, and that time is kept."""

from __future__ import annotations

import time

import pytest

from testbed.core.errors import LabError
from testbed.core.scenario import Drain, Rollout
from testbed.live.lab import Lab
from testbed.live.proxy import RenderedProxy
from tests.support.fakes import FakeHub, FakeKernel

WORLD = """\
apiVersion: testbed/v1alpha1
kind: Lab
metadata: {name: lifecycle}
spec:
  nodes: 3
  clients: [{name: client, ip: 203.0.113.10}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, ports: [{containerPort: 8080}]}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, ports: [{containerPort: 5432}]}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, ports: [{containerPort: 9100}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: lonely, labels: {app: other}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 8080}]}]}
"""


@pytest.fixture
def fake(tmp_path):
    path = tmp_path / "lifecycle.yaml"
    path.write_text(WORLD)
    kernel, hub = FakeKernel(), FakeHub()
    lab = Lab.from_file(str(path), serve=False)
    lab.host = kernel
    lab.proxy = RenderedProxy(run=kernel.run)
    lab.up()
    lab.hub = lab.proxy.hub = hub
    lab.sync()
    try:
        yield lab, hub
    finally:
        lab.down()


def where(lab: Lab) -> dict[str, str]:
    return {p.name: p.node for p in lab.plan.pods}


def test_a_drain_moves_each_kind_of_pod_as_its_controller_would(fake):
    lab, hub = fake
    before = where(lab)
    assert {p for p, n in before.items() if n == "node-2"} == {
        "web-1",
        "db-1",
        "agent-node-2",
        "lonely",
    }
    lab.drain_node("node-2", Drain())
    after = where(lab)
    assert {p for p, n in after.items() if n == "node-2"} == {"agent-node-2"}  # DaemonSet stays
    assert "lonely" not in after  # a bare Pod is just gone
    assert after["web-3"] != "node-2" and "web-1" not in after  # a ReplicaSet's replacement
    assert after["db-1"] != "node-2"  # a StatefulSet's pod, made again under its name
    assert all(p.ready and not p.terminating for p in lab.plan.pods)
    assert hub.proxy_healthy[lab.ns("node-2")] is False  # /healthz: 503 (KEP-3836)
    assert hub.proxy_healthy[lab.ns("node-1")] is True
    taints = {o.name: {t.key for t in o.taints} for o in lab.scenario.node_objects}
    assert taints["node-2"] == {
        "node.kubernetes.io/unschedulable",
        "ToBeDeletedByClusterAutoscaler",
    }
    lab.scale("web", 4)  # the scheduler keeps new pods off the cordoned node
    assert where(lab)["web-4"] != "node-2"


def test_a_rollout_keeps_time_and_ends_in_the_final_world(fake):
    lab, hub = fake
    seen = []
    started = time.monotonic()

    def check(at, group):
        seen.append((round(time.monotonic() - started, 1), at, [(e.what, e.pod) for e in group]))
        states = {p.name: (p.ready, p.serving, p.terminating) for p in lab.plan.pods}
        for e in group:
            if e.what == "create":
                assert states[e.pod] == (False, False, False)
            if e.what == "terminate" and e.pod in states:
                assert states[e.pod] == (False, True, True)

    took = lab.rollout("web", Rollout(1, 0, 0.3, pre_stop=0.2), check)
    assert [round(at, 3) for _, at, _ in seen] == [0.0, 0.3, 0.5, 0.6, 0.8, 0.9, 1.1]
    assert all(real >= at - 0.05 for real, at, _ in seen)  # never early
    assert 1.1 <= took < 5
    assert sorted(p.name for p in lab.plan.pods if p.name.startswith("web")) == [
        "web-3",
        "web-4",
        "web-5",
    ]
    assert lab.scenario.workload("Deployment/default/web").template.pre_stop == 0.2


def test_a_rollout_of_what_is_not_a_deployment_is_refused(fake):
    lab, _ = fake
    with pytest.raises(LabError, match="no Deployment default/db"):
        lab.rollout("db")
