"""The Lab's orchestration (sync, change, health) without root, through a fake kernel.

The fake records what would reach the kernel (tests/support/fakes.py): which namespaces
were made and removed, which loader ran where with what text, and what each node's
health check would answer. The real loading is tested with root in tests/lab/.
"""

from __future__ import annotations

import pytest

from testbed.core.topology import NS_PREFIX
from testbed.kubeproxy.sync import render
from testbed.live.lab import Lab
from testbed.live.proxy import RenderedProxy
from testbed.verdict import oracle
from tests.support.fakes import FakeHub, FakeKernel

SCENARIO = """\
apiVersion: testbed/v1alpha1
kind: Lab
metadata: {name: orchestra}
spec:
  proxyMode: MODE
  nodes: 3
  clients: [{name: client, ip: 203.0.113.10}]
  loadBalancer: {mode: ecmp, healthChecks: true}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: default}
spec:
  selector: {app: other}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: lonely, labels: {app: other}}
spec: {nodeName: node-3, containers: [{name: c, ports: [{containerPort: 8080}]}]}
"""


def fake_lab(tmp_path, mode: str = "iptables") -> tuple[Lab, FakeKernel, FakeHub]:
    """A Lab whose kernel and servers are fakes; up, rules loaded, health answering."""
    path = tmp_path / "orchestra.yaml"
    path.write_text(SCENARIO.replace("MODE", mode))
    kernel, hub = FakeKernel(), FakeHub()
    lab = Lab.from_file(str(path), serve=False)
    lab.host = kernel
    lab.proxy = RenderedProxy(run=kernel.run)
    lab.up()
    lab.hub = lab.proxy.hub = hub  # servers too, without sockets
    lab.sync()
    return lab, kernel, hub


def health_port(lab: Lab) -> int:
    return lab.plan.service("web").health_check_node_port


@pytest.fixture(params=["iptables", "nftables"])
def lab(request, tmp_path):
    built = fake_lab(tmp_path, request.param)
    yield built
    built[0].down()


def test_up_makes_every_namespace_and_loads_each_node_in_full(lab):
    lab, kernel, _ = lab
    assert kernel.made == [lab.wiring.ns(s) for s in lab.wiring.namespaces]
    assert all(ns.startswith(NS_PREFIX) for ns in kernel.made)
    first = kernel.runs[: len(lab.plan.nodes)]
    assert [r.ns for r in first] == [lab.wiring.ns(n.name) for n in lab.plan.nodes]
    for run, node in zip(first, lab.plan.nodes, strict=True):
        assert not run.delta and run.text == render(node, lab.plan.services, lab.plan.proxy)
    assert lab.loads["full"] == len(lab.plan.nodes) and lab.loads["fallback"] == 0


def test_a_scale_step_loads_each_node_a_delta_of_the_scaled_service_only(lab):
    lab, kernel, hub = lab
    start = len(kernel.runs)
    lab.scale("web", 3)
    loads = kernel.loads_since(start)
    assert sorted(loads) == sorted(lab.wiring.ns(n.name) for n in lab.plan.nodes)
    for runs in loads.values():
        assert len(runs) == 1 and runs[0].delta
        assert "default/web" in runs[0].text and "default/other" not in runs[0].text
    added = {p.name for p in lab.plan.pods} - {"web-0", "lonely"}
    assert len(added) == 2
    assert {lab.wiring.ns(p) for p in added} <= set(kernel.made)  # the new pods were made
    assert all(lab.wiring.ns(p) in hub.echo for p in added)  # and serve


def test_a_change_that_touches_no_rule_loads_nothing(lab):
    lab, kernel, hub = lab
    start = len(kernel.runs)
    lab.set_proxy_health("node-1", False)
    lab.set_edge_health_checks(False)
    assert kernel.runs[start:] == []
    assert hub.proxy_healthy[lab.wiring.ns("node-1")] is False


def test_deleting_a_pod_removes_its_namespace_and_servers_only(lab):
    lab, kernel, hub = lab
    ns = lab.wiring.ns("lonely")
    lab.delete_pod("lonely")
    assert kernel.removed == [ns] and hub.emptied == [ns]
    loads = kernel.loads_since(len(kernel.runs) - len(lab.plan.nodes))
    assert all(r.delta and "default/other" in r.text for runs in loads.values() for r in runs)


def test_a_failed_delta_falls_back_to_a_full_load(tmp_path):
    lab, kernel, _ = fake_lab(tmp_path)
    try:
        kernel.fail = lambda run: run.delta
        start = len(kernel.runs)
        lab.scale("web", 2)
        loads = kernel.loads_since(start)
        assert len(loads) == len(lab.plan.nodes)
        for ns, runs in loads.items():
            node = next(n for n in lab.plan.nodes if lab.wiring.ns(n.name) == ns)
            assert [r.text for r in runs] == [render(node, lab.plan.services, lab.plan.proxy)]
        assert lab.loads["fallback"] == len(lab.plan.nodes)
    finally:
        lab.down()


def test_health_answers_follow_the_endpoints_the_proxy_programmed(lab):
    lab, _, hub = lab
    port = health_port(lab)
    where = lab.plan.pod("web-0").node
    answers = {n.name: hub.answer(lab.wiring.ns(n.name), port) for n in lab.plan.nodes}
    assert answers == {n.name: 200 if n.name == where else 503 for n in lab.plan.nodes}
    lab.set_proxy_health(where, False)  # the Node tainted for deletion, as upstream's
    assert hub.proxy_healthy[lab.wiring.ns(where)] is False  # /healthz: 503
    assert hub.answer(lab.wiring.ns(where), port) == 200  # the service check: its endpoint
    lab.set_proxy_health(where, True)
    assert hub.proxy_healthy[lab.wiring.ns(where)] is True
    lab.scale("web", 3)  # one pod per node now
    assert {hub.answer(lab.wiring.ns(n.name), port) for n in lab.plan.nodes} == {200}


def test_health_answers_come_from_the_proxy_not_the_oracle(tmp_path, monkeypatch):
    """The proxy side alone decides: a proxy that counts differently is what the checks say,
    and the oracle is never asked (so model and system under test can disagree)."""

    def no_oracle(*args, **kwargs):
        raise AssertionError("health answers must not come from the oracle")

    for name in ("predict", "local_ready"):
        if hasattr(oracle, name):
            monkeypatch.setattr(oracle, name, no_oracle)

    class Stale(RenderedProxy):
        def health_count(self, svc, node):
            return 0  # a kube-proxy that has not seen the endpoints yet

    lab, kernel, hub = fake_lab(tmp_path)
    try:
        lab.proxy = Stale(hub=hub, run=kernel.run)
        lab.sync()
        port = health_port(lab)
        assert {hub.answer(lab.wiring.ns(n.name), port) for n in lab.plan.nodes} == {503}
    finally:
        lab.down()


def test_down_removes_exactly_what_up_made(tmp_path):
    lab, kernel, hub = fake_lab(tmp_path)
    made = list(kernel.made)
    lab.down()
    assert sorted(kernel.removed) == sorted(made)
    assert lab.proxy.hub is None
