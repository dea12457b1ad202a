"""Pods over time in a real lab: a rollout's terminating pods and a node's drain, in both
proxy modes and under the real kube-proxy.

The checks run inside the step, between its events (`on_event`), so they see the world
while a pod is terminating: what the packets did, what the oracle predicted from the
plan, and what the node's health checks answered.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.core.lifecycle import GONE, TERMINATE
from testbed.core.model import ProbePlan, Target
from testbed.core.records import DELIVERED, DROPPED
from testbed.core.scenario import Drain, Rollout
from testbed.kernel import upstreambin
from testbed.kernel.controlplane import http_get
from testbed.kubeproxy.healthcheck import PROXIER_HEALTH_PORT
from testbed.live import lifecycle

pytestmark = pytest.mark.lab

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
ROLLOUT = str(SCENARIOS / "rollout-local-prestop.yaml")  # Local LB, 3 replicas on 4 nodes
DRAIN = str(SCENARIOS / "drain-node.yaml")  # Cluster LB, 3 replicas on 3 nodes
UNBUILT = pytest.mark.skipif(not upstreambin.built(), reason="no upstream binaries built")


def health(lab, node: str, port: int, path: str = "/") -> int:
    """What a node's health server answers the client (through the edge, as an LB asks)."""
    return http_get(lab.ns("client"), lab.plan.node(node).ip, port, path)[0]


def at_node(node: str) -> ProbePlan:
    target = Target(service="default/web", port=80, via="nodePort", node=node)
    return ProbePlan("at-node", "client", target, count=10)


@pytest.mark.parametrize(
    ("mode", "kube_proxy"),
    [
        ("iptables", "builtin"),
        ("nftables", "builtin"),
        pytest.param("iptables", "upstream", marks=UNBUILT),
    ],
)
@pytest.mark.parametrize(
    ("grace", "answers"), [(None, True), (0, False)], ids=["prestop", "grace0"]
)
def test_a_terminating_pod_answers_at_its_node_while_its_health_check_says_503(
    no_leaks, lab, mode, kube_proxy, grace, answers
):
    """preStop sleep 3: web-0 is terminating (ready false, serving true) for 3 s; Local
    traffic reaching node-1 still goes to it, while node-1's healthCheckNodePort already
    says 503 (it counts only ready local endpoints). Grace 0: web-0 is gone at once and
    node-1 drops Local traffic (its new pod is still starting)."""
    built = lab(ROLLOUT, mode, kube_proxy)
    built.wait_for_edge()
    homes = {p.name: p.node for p in built.plan.pods}
    port = built.plan.service("web").health_check_node_port
    seen = []

    def check(at, group):
        ended = [e.pod for e in group if e.what == TERMINATE]
        if seen or not ended:
            return
        node = homes[ended[0]]
        observed, verdict = built.observe(at_node(node))
        seen.append((ended[0], node, health(built, node, port), observed, verdict))
        states = {p.name: (p.ready, p.serving, p.terminating) for p in built.plan.pods}
        assert (ended[0] in states) is answers, states
        if answers:
            assert states[ended[0]] == (False, True, True)
            assert GONE not in {e.what for e in group}

    took = lifecycle.rollout(built, "web", Rollout(1, 0, 1.0, grace=grace), check)
    pod, node, status, observed, verdict = seen[0]
    assert (pod, node) == ("web-0", "node-1")
    assert status == 503, "only ready local endpoints count: a terminating one does not"
    assert verdict.passed, verdict.reasons  # the oracle read the same world from the plan
    if answers:
        assert observed.count(DELIVERED) == observed.sent
        assert set(observed.pods) == {"web-0"}
    else:
        assert observed.count(DROPPED) == observed.sent
    # the step ends in the final world: every new pod ready, every old one gone
    assert sorted(p.name for p in built.plan.pods) == ["web-3", "web-4", "web-5"]
    assert all(p.ready and not p.terminating for p in built.plan.pods)
    assert took >= 3.0 + (3.0 if answers else 0.0) - 0.5


@pytest.mark.parametrize(
    ("mode", "kube_proxy"),
    [
        ("iptables", "builtin"),
        ("nftables", "builtin"),
        pytest.param("nftables", "upstream", marks=UNBUILT),
    ],
)
def test_a_drained_node_fails_its_healthz_leaves_the_pool_and_its_pods_move(
    no_leaks, lab, mode, kube_proxy
):
    built = lab(DRAIN, mode, kube_proxy)
    built.wait_for_edge()
    vip = built.plan.service("web").lb_ips[0]
    assert "node-2" in built.lb_nodes()[vip]
    assert health(built, "node-2", PROXIER_HEALTH_PORT, "/healthz") == 200
    lifecycle.drain(built, "node-2", Drain())
    assert health(built, "node-2", PROXIER_HEALTH_PORT, "/healthz") == 503
    assert health(built, "node-1", PROXIER_HEALTH_PORT, "/healthz") == 200
    built.wait_for_edge()
    assert "node-2" not in built.lb_nodes()[vip], built.lb_nodes()
    where = {p.name: p.node for p in built.plan.pods}
    assert "node-2" not in where.values(), where
    assert sorted(where) == ["web-0", "web-2", "web-3"]
    probe = ProbePlan("after", "client", Target("default/web", 80, "loadBalancer"), count=30)
    observed, verdict = built.observe(probe)
    assert verdict.passed, verdict.reasons
    assert observed.count(DELIVERED) == observed.sent
    assert "node-2" not in {a.entry_node for a in observed.attempts}
