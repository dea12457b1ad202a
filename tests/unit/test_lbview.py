"""`testbed lb` text and the words for pool changes, from plain data."""

from __future__ import annotations

from testbed.core.model import (
    HealthCheckConfig,
    LoadBalancerConfig,
    Network,
    NodePlan,
    Plan,
    ProxyOptions,
    ServicePlan,
)
from testbed.core.topology import NS_PREFIX
from testbed.kernel import lbview
from testbed.live import steps


def plan() -> Plan:
    nodes = tuple(
        NodePlan(f"node-{i}", i, f"172.18.0.{10 + i}", f"10.244.{i}.0/24", f"10.244.{i}.1")
        for i in (1, 2, 3)
    )
    return Plan(
        "t",
        "",
        "t.yaml",
        Network(),
        ProxyOptions(),
        nodes,
        (),
        (),
        (),
        LoadBalancerConfig(health=HealthCheckConfig(interval=0.25, unhealthy_threshold=3)),
    )


def test_describe_shows_the_route_and_flags_nodes_the_edge_has_not_caught_up_with():
    svc = ServicePlan(
        "default",
        "web",
        "LoadBalancer",
        "10.96.0.10",
        lb_ips=("198.51.100.10",),
        external_policy="Local",
        health_check_node_port=30001,
    )
    checks = (
        lbview.NodeCheck("node-1", "172.18.0.11", "200", True),
        lbview.NodeCheck("node-2", "172.18.0.12", "503", True),
        lbview.NodeCheck("node-3", "172.18.0.13", "200", False),
    )
    view = lbview.VipView("198.51.100.10", svc, ("172.18.0.11", "172.18.0.12"), ":30001/", checks)
    text = lbview.describe(plan(), "t-1234", [view], (3, 0x37))
    lines = text.splitlines()
    assert lines[0] == f"lab t-1234 (t, iptables): edge namespace {NS_PREFIX}t-1234-edge"
    assert "every 0.25 s; in after 2 good answers, out after 3 bad ones" in lines[1]
    assert (
        "  edge route: via node-1 172.18.0.11, node-2 172.18.0.12 "
        "(ECMP: each flow hashed to one of them)" in lines
    )
    assert lines[2] == (
        "edge ECMP: hash on source address, destination address, protocol, source port, "
        "destination port (policy 3, fields 0x0037): every packet of a flow, retransmits "
        "included, to one node"
    )
    assert "  health check: GET http://NODE:30001/ (healthCheckNodePort)" in lines
    node2 = next(line for line in lines if line.startswith("    node-2"))
    assert "503" in node2 and "yes" in node2 and "leaves after" in node2
    node3 = next(line for line in lines if line.startswith("    node-3"))
    assert "no" in node3 and "joins after" in node3


def test_describe_without_a_route_or_vips():
    svc = ServicePlan("default", "web", "LoadBalancer", "10.96.0.10", lb_ips=("198.51.100.10",))
    view = lbview.VipView("198.51.100.10", svc, (), ":10256/healthz", ())
    text = lbview.describe(plan(), "t-1", [view])
    assert "  edge route: none (no node in the pool)" in text.splitlines()
    assert "(kube-proxy's /healthz)" in text
    assert "no LoadBalancer VIP or externalIP in this lab" in lbview.describe(plan(), "t-1", [])


def test_hash_words_say_when_a_retried_syn_may_change_node():
    assert "a retried SYN may reach another node" in lbview.hash_words(1, 0x37)
    assert "share a node" in lbview.hash_words(3, 0x07)
    assert "retransmits included" in lbview.hash_words(3, 0x37)


def test_pool_moves_name_who_left_and_who_joined():
    before = {"198.51.100.10": ("node-1", "node-2"), "198.51.100.11": ()}
    after = {"198.51.100.10": ("node-1",), "198.51.100.11": ("node-3",)}
    assert steps._pool_moves(before, after) == (
        "node-2 left 198.51.100.10's pool, node-3 joined 198.51.100.11's pool"
    )
    assert steps._pool_moves(after, after) == ""
