"""The oracle against kube-proxy's semantics, one behaviour per test, on hand-placed worlds."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from testbed.core.model import LoadBalancerConfig
from testbed.verdict.oracle import OracleError, Prediction, default_lb_nodes, predict, usable
from tests.support.oracle_worlds import (
    CLIENT_IP,
    EXTERNAL_IP,
    N1,
    N2,
    N3,
    PODS,
    TESTER,
    VIP,
    WEB0,
    WEB1,
    not_ready,
    pod,
    probe,
    world,
)


def by_pod(pred: Prediction) -> dict[str, set[str]]:
    """pod -> the source addresses it may see."""
    out: dict[str, set[str]] = {}
    for f in pred.delivered:
        out.setdefault(f.pod or "", set()).add(f.source_ip or "")
    return out


def total(pred: Prediction) -> float:
    return sum(f.probability for f in pred.fates)


# -- clients outside: the edge routes only node addresses and VIPs ------------------


def test_client_to_cluster_ip_is_rejected_by_the_edge() -> None:
    pred = predict(world(), probe("client", "clusterIP"))
    assert pred.outcome == "rejected"
    assert pred.pods == ()
    assert pred.source_ip is None
    assert pred.return_path == "none"
    assert "edge" in pred.fates[0].why


def test_client_to_pod_ip_is_rejected_by_the_edge() -> None:
    pred = predict(world(), probe("client", address=WEB0.ip, port=8080))
    assert pred.outcome == "rejected"


# -- ClusterIP from inside ------------------------------------------------------------


def test_pod_to_cluster_ip_keeps_the_pod_address_and_spreads_evenly() -> None:
    pred = predict(world(), probe("tester", "clusterIP"))
    assert pred.outcome == "delivered"
    assert pred.pods == ("web-0", "web-1")
    assert by_pod(pred) == {"web-0": {TESTER.ip}, "web-1": {TESTER.ip}}
    assert pred.source_ip == "client"  # the probe source's own address
    assert pred.share == {"web-0": 0.5, "web-1": 0.5}
    assert pred.return_path == "correct"
    assert {f.entry_node for f in pred.fates} == {"node-3"}
    assert {f.reply_from for f in pred.fates} == {"10.96.0.10:80"}


def test_node_to_cluster_ip_is_masqueraded_gateway_for_local_pod_ip_for_remote() -> None:
    pred = predict(world(), probe("node-1", "clusterIP"))
    assert by_pod(pred) == {"web-0": {N1.gateway}, "web-1": {N1.ip}}
    assert pred.source_ip == "node"


def test_node_to_cluster_ip_without_local_detector_is_not_masqueraded() -> None:
    pred = predict(world(detect="None"), probe("node-1", "clusterIP"))
    assert by_pod(pred) == {"web-0": {N1.ip}, "web-1": {N1.ip}}


def test_masquerade_all_masquerades_pod_traffic_to_cluster_ip() -> None:
    pred = predict(world(masquerade_all=True), probe("tester", "clusterIP"))
    assert by_pod(pred) == {"web-0": {N3.ip}, "web-1": {N3.ip}}
    assert pred.source_ip == "node"


def test_hairpin_pod_reaching_itself_sees_its_node_gateway() -> None:
    pred = predict(world(), probe("web-0", "clusterIP"))
    assert by_pod(pred) == {"web-0": {N1.gateway}, "web-1": {WEB0.ip}}
    assert pred.source_ip == "mixed"
    assert "hairpin" in next(f.why for f in pred.fates if f.pod == "web-0")


def test_internal_traffic_policy_local_uses_only_the_node_s_endpoints() -> None:
    plan = world(internal="Local")
    assert predict(plan, probe("web-0", "clusterIP")).pods == ("web-0",)
    pred = predict(plan, probe("node-2", "clusterIP"))
    assert by_pod(pred) == {"web-1": {N2.gateway}}  # node traffic still masqueraded


def test_internal_traffic_policy_local_without_local_endpoint_drops() -> None:
    pred = predict(world(internal="Local"), probe("tester", "clusterIP"))
    assert pred.outcome == "dropped"
    assert pred.pods == ()


# -- endpoints: ready, terminating fallback, none ------------------------------------


def test_no_endpoints_rejects_every_way_in() -> None:
    plan = world((TESTER,))
    for src, via, node in [
        ("tester", "clusterIP", None),
        ("node-1", "clusterIP", None),
        ("client", "nodePort", "node-2"),
        ("tester", "nodePort", "node-1"),
        ("client", "loadBalancer", None),
        ("tester", "loadBalancer", None),
    ]:
        pred = predict(plan, probe(src, via, node))
        assert pred.outcome == "rejected", (src, via)


def test_terminating_serving_endpoints_are_used_when_none_is_ready() -> None:
    plan = world((not_ready(WEB0), not_ready(WEB1, terminating=False, serving=False), TESTER))
    pred = predict(plan, probe("tester", "clusterIP"))
    assert pred.pods == ("web-0",)


def test_ready_endpoints_win_over_terminating_ones() -> None:
    plan = world((not_ready(WEB0), WEB1, TESTER))
    assert predict(plan, probe("tester", "clusterIP")).pods == ("web-1",)


def test_non_serving_endpoints_are_never_used() -> None:
    plan = world((not_ready(WEB0, serving=False), TESTER))
    assert predict(plan, probe("tester", "clusterIP")).outcome == "rejected"
    assert usable(plan.services[0].ports[0].endpoints) == ()


# -- NodePort from a client -----------------------------------------------------------


def test_client_nodeport_cluster_is_masqueraded_to_the_entry_node() -> None:
    pred = predict(world(), probe("client", "nodePort", "node-2"))
    assert by_pod(pred) == {"web-0": {N2.ip}, "web-1": {N2.gateway}}
    assert pred.source_ip == "node"
    assert pred.return_path == "correct"
    assert {f.entry_node for f in pred.fates} == {"node-2"}
    assert {f.reply_from for f in pred.fates} == {f"{N2.ip}:30080"}
    assert pred.share == {"web-0": 0.5, "web-1": 0.5}


def test_client_nodeport_local_keeps_the_client_address_on_local_endpoints_only() -> None:
    pred = predict(world(external="Local"), probe("client", "nodePort", "node-1"))
    assert by_pod(pred) == {"web-0": {CLIENT_IP}}
    assert pred.source_ip == "client"
    assert pred.return_path == "correct"


def test_client_nodeport_local_on_a_node_without_endpoint_drops() -> None:
    pred = predict(world(external="Local"), probe("client", "nodePort", "node-3"))
    assert pred.outcome == "dropped"
    assert pred.fates[0].entry_node == "node-3"


# -- NodePort from a pod or a node ------------------------------------------------------


def test_pod_to_nodeport_cluster_is_masqueraded_at_the_target_node() -> None:
    pred = predict(world(), probe("tester", "nodePort", "node-1"))
    assert by_pod(pred) == {"web-0": {N1.gateway}, "web-1": {N1.ip}}
    assert pred.return_path == "correct"


def test_pod_to_own_node_nodeport_local_is_short_circuited_unmasqueraded() -> None:
    pred = predict(world(external="Local"), probe("tester", "nodePort", "node-3"))
    assert by_pod(pred) == {"web-0": {TESTER.ip}, "web-1": {TESTER.ip}}
    assert pred.return_path == "correct"  # replies go to node-3, which did the DNAT


def test_pod_to_own_node_nodeport_local_hairpin_sees_gateway() -> None:
    pred = predict(world(external="Local"), probe("web-0", "nodePort", "node-1"))
    assert by_pod(pred) == {"web-0": {N1.gateway}, "web-1": {WEB0.ip}}


def test_pod_to_other_node_nodeport_local_reply_bypasses_the_dnat_node() -> None:
    """Short-circuited at node-1 without SNAT: web-1 on node-2 answers node-3 directly."""
    plan = world(external="Local")
    pred = predict(plan, probe("tester", "nodePort", "node-1"))
    fates = {f.pod: f for f in pred.fates}
    assert fates["web-0"].return_path == "correct"
    # iptables: node-3's KUBE-FORWARD drops the unexpected SYN-ACK as INVALID
    assert fates["web-1"].return_path == "none"
    assert "INVALID" in fates["web-1"].why
    nft_plan = replace(plan, proxy=replace(plan.proxy, mode="nftables"))
    nft = predict(nft_plan, probe("tester", "nodePort", "node-1"))
    web1 = next(f for f in nft.fates if f.pod == "web-1")
    assert (web1.return_path, web1.reply_from) == ("broken", "10.244.2.2:8080")
    assert nft.return_path == "mixed"


def test_pod_to_other_node_nodeport_local_node_cidr_detector_keeps_local_policy() -> None:
    pred = predict(
        world(external="Local", detect="NodeCIDR"), probe("tester", "nodePort", "node-1")
    )
    assert by_pod(pred) == {"web-0": {TESTER.ip}}
    assert pred.return_path == "correct"


def test_node_to_own_nodeport_local_is_masqueraded_to_every_endpoint() -> None:
    pred = predict(world(external="Local"), probe("node-1", "nodePort", "node-1"))
    assert by_pod(pred) == {"web-0": {N1.gateway}, "web-1": {N1.ip}}
    assert pred.source_ip == "node"


def test_node_to_other_node_nodeport_local_keeps_the_node_address() -> None:
    pred = predict(world(external="Local"), probe("node-3", "nodePort", "node-2"))
    assert by_pod(pred) == {"web-1": {N3.ip}}
    assert pred.source_ip == "client"  # the probe source's own address
    assert predict(world(external="Local"), probe("node-2", "nodePort", "node-3")).outcome == (
        "dropped"
    )


def test_node_to_other_node_nodeport_cluster_is_masqueraded_there() -> None:
    pred = predict(world(), probe("node-3", "nodePort", "node-2"))
    assert by_pod(pred) == {"web-0": {N2.ip}, "web-1": {N2.gateway}}


# -- load balancer and externalIPs --------------------------------------------------------


def test_lb_ecmp_cluster_enters_every_node_and_is_masqueraded() -> None:
    pred = predict(world(), probe("client", "loadBalancer"))
    assert pred.entry_nodes == ("node-1", "node-2", "node-3")
    assert pred.outcome == "delivered"
    assert pred.source_ip == "node"
    assert pred.share == pytest.approx({"web-0": 0.5, "web-1": 0.5})
    assert math.isclose(total(pred), 1.0)
    for f in pred.fates:
        assert f.source_ip in (N1.ip, N1.gateway, N2.ip, N2.gateway, N3.ip, N3.gateway)
        assert f.source_ip in dict(pred.node_addresses)[f.entry_node]
        assert f.reply_from == f"{VIP}:80"


def test_lb_ecmp_local_with_health_checks_only_uses_nodes_with_ready_endpoints() -> None:
    plan = world(external="Local")
    assert default_lb_nodes(plan) == {VIP: ("node-1", "node-2")}
    pred = predict(plan, probe("client", "loadBalancer"))
    assert pred.outcome == "delivered"
    assert by_pod(pred) == {"web-0": {CLIENT_IP}, "web-1": {CLIENT_IP}}
    assert pred.source_ip == "client"
    assert pred.return_path == "correct"


def test_lb_ecmp_local_without_health_checks_drops_a_third() -> None:
    plan = world(external="Local", lb=LoadBalancerConfig(health_checks=False))
    pred = predict(plan, probe("client", "loadBalancer"))
    assert pred.outcome == "mixed"
    assert pred.outcomes == pytest.approx({"delivered": 2 / 3, "dropped": 1 / 3})
    assert pred.as_report()["outcomes"] == pytest.approx({"delivered": 2 / 3, "dropped": 1 / 3})


def test_local_shares_are_per_node_then_per_local_endpoint() -> None:
    web2 = pod("web-2", "node-1", "10.244.1.3")
    pred = predict(world((*PODS, web2), external="Local"), probe("client", "loadBalancer"))
    assert pred.share == pytest.approx({"web-0": 0.25, "web-1": 0.5, "web-2": 0.25})
    cluster = predict(world((*PODS, web2)), probe("client", "loadBalancer"))
    assert cluster.share == pytest.approx({"web-0": 1 / 3, "web-1": 1 / 3, "web-2": 1 / 3})


def test_terminating_endpoints_do_not_pass_health_checks() -> None:
    plan = world((not_ready(WEB0), WEB1, TESTER), external="Local")
    assert default_lb_nodes(plan) == {VIP: ("node-2",)}
    # no ready endpoint anywhere: no node is eligible, the edge has no route
    plan = world((not_ready(WEB0), not_ready(WEB1), TESTER), external="Local")
    assert default_lb_nodes(plan) == {VIP: ()}
    pred = predict(plan, probe("client", "loadBalancer"))
    assert pred.outcome == "rejected"
    assert "edge" in pred.fates[0].why


def test_lb_single_mode_sends_everything_to_one_node() -> None:
    plan = world(lb=LoadBalancerConfig(mode="single", node="node-2"), external="Local")
    pred = predict(plan, probe("client", "loadBalancer"))
    assert pred.entry_nodes == ("node-2",)
    assert pred.pods == ("web-1",)
    plan = world(lb=LoadBalancerConfig(mode="single"))
    assert default_lb_nodes(plan) == {VIP: ("node-1",)}


def test_explicit_lb_nodes_override_the_default() -> None:
    plan = world(external="Local")
    assert predict(plan, probe(), lb_nodes={VIP: ["node-3"]}).outcome == "dropped"
    assert predict(plan, probe(), lb_nodes={VIP: []}).outcome == "rejected"
    assert predict(plan, probe(), lb_nodes={}).outcome == "rejected"


def test_external_ip_is_routed_like_a_vip() -> None:
    plan = world(svc_type="NodePort", external_ips=(EXTERNAL_IP,))
    pred = predict(plan, probe("client", "externalIP"))
    assert pred.entry_nodes == ("node-1", "node-2", "node-3")
    assert pred.source_ip == "node"
    assert {f.reply_from for f in pred.fates} == {f"{EXTERNAL_IP}:80"}


def test_source_ranges_drop_clients_outside_on_lb_ips_only() -> None:
    plan = world(ranges=("192.0.2.0/24",))
    assert predict(plan, probe("client", "loadBalancer")).outcome == "dropped"
    assert predict(plan, probe("client", "nodePort", "node-1")).outcome == "delivered"
    inside = world(ranges=("203.0.113.0/25",))
    assert predict(inside, probe("client", "loadBalancer")).outcome == "delivered"
    # pods are not exempt
    assert predict(plan, probe("tester", "loadBalancer")).outcome == "dropped"


def test_source_ranges_without_endpoints_reject_in_iptables_but_drop_in_nftables() -> None:
    ipt = world((TESTER,), ranges=("192.0.2.0/24",))
    nft = world((TESTER,), ranges=("192.0.2.0/24",), mode="nftables")
    assert predict(ipt, probe("client", "loadBalancer")).outcome == "rejected"
    assert predict(nft, probe("client", "loadBalancer")).outcome == "dropped"


def test_pod_to_lb_ip_is_caught_on_its_own_node() -> None:
    local = predict(world(external="Local"), probe("tester", "loadBalancer"))
    assert by_pod(local) == {"web-0": {TESTER.ip}, "web-1": {TESTER.ip}}
    assert local.entry_nodes == ("node-3",)
    assert local.return_path == "correct"
    cluster = predict(world(), probe("tester", "loadBalancer"))
    assert by_pod(cluster) == {"web-0": {N3.ip}, "web-1": {N3.ip}}


def test_pod_to_lb_ip_local_without_detector_uses_own_node_local_endpoints() -> None:
    pred = predict(world(external="Local", detect="None"), probe("web-1", "loadBalancer"))
    assert by_pod(pred) == {"web-1": {N2.gateway}}  # only itself: hairpin
    assert predict(world(external="Local", detect="None"), probe("tester")).outcome == "dropped"


def test_node_to_lb_ip_local_is_masqueraded_to_every_endpoint() -> None:
    pred = predict(world(external="Local"), probe("node-3", "loadBalancer"))
    assert by_pod(pred) == {"web-0": {N3.ip}, "web-1": {N3.ip}}
    assert pred.source_ip == "node"


# -- session affinity ----------------------------------------------------------------------


def test_affinity_keeps_the_pod_set_and_pins_one_source_when_one_node_dnats() -> None:
    pred = predict(world(affinity=10800), probe("tester", "clusterIP"))
    assert pred.pods == ("web-0", "web-1")
    assert pred.affinity is True
    assert pred.as_report()["affinity"] is True
    assert "share" not in pred.as_report()


def test_affinity_through_ecmp_is_per_node_not_global() -> None:
    pred = predict(world(affinity=10800), probe("client", "loadBalancer"))
    assert pred.sticky is True
    assert pred.affinity is False


def test_no_affinity_by_default() -> None:
    assert predict(world(), probe("tester", "clusterIP")).affinity is False


# -- what-if no-snat -----------------------------------------------------------------------


def test_no_snat_breaks_the_return_path_for_remote_endpoints_only() -> None:
    pred = predict(world(what_if=("no-snat",)), probe("client", "nodePort", "node-1"))
    fates = {f.pod: f for f in pred.fates}
    assert fates["web-0"].source_ip == CLIENT_IP
    assert fates["web-0"].return_path == "correct"
    assert fates["web-0"].reply_from == f"{N1.ip}:30080"
    assert fates["web-1"].source_ip == CLIENT_IP
    assert fates["web-1"].return_path == "broken"
    assert fates["web-1"].reply_from == "10.244.2.2:8080"
    assert pred.return_path == "mixed"
    assert pred.outcome == "delivered"
    assert pred.notes


def test_no_snat_removes_the_off_cluster_cluster_ip_mark_but_not_hairpin() -> None:
    plan = world(what_if=("no-snat",))
    assert by_pod(predict(plan, probe("node-1", "clusterIP"))) == {
        "web-0": {N1.ip},
        "web-1": {N1.ip},
    }
    assert by_pod(predict(plan, probe("web-0", "clusterIP")))["web-0"] == {N1.gateway}


def test_no_snat_leaves_local_policy_alone() -> None:
    pred = predict(world(external="Local", what_if=("no-snat",)), probe("client"))
    assert pred.return_path == "correct"


# -- raw targets ------------------------------------------------------------------------


def test_localhost_nodeport_from_a_node_in_iptables_mode() -> None:
    pred = predict(world(external="Local"), probe("node-1", address="127.0.0.1", port=30080))
    assert by_pod(pred) == {"web-0": {N1.gateway}, "web-1": {N1.ip}}
    assert {f.reply_from for f in pred.fates} == {"127.0.0.1:30080"}


def test_localhost_nodeport_does_not_work_in_nftables_or_when_disabled() -> None:
    raw = probe("node-1", address="127.0.0.1", port=30080)
    assert predict(world(mode="nftables"), raw).outcome == "rejected"
    assert predict(world(localhost_nodeports=False), raw).outcome == "rejected"
    assert predict(world(), probe("tester", address="127.0.0.1", port=30080)).outcome == (
        "rejected"
    )


def test_raw_pod_ip_from_inside_goes_straight_to_the_pod() -> None:
    pred = predict(world(), probe("tester", address=WEB1.ip, port=8080))
    assert by_pod(pred) == {"web-1": {TESTER.ip}}
    assert pred.return_path == "correct"
    local = predict(world(), probe("node-2", address=WEB1.ip, port=8080))
    assert by_pod(local) == {"web-1": {N2.gateway}}  # the route to a local pod leaves by its veth
    remote = predict(world(), probe("node-1", address=WEB1.ip, port=8080))
    assert by_pod(remote) == {"web-1": {N1.ip}}
    assert predict(world(), probe("tester", address=WEB1.ip, port=9999)).outcome == "rejected"


def test_raw_node_ip_on_a_node_port_is_a_node_port() -> None:
    raw = predict(world(), probe("client", address=N2.ip, port=30080))
    via = predict(world(), probe("client", "nodePort", "node-2"))
    assert raw.fates == via.fates


def test_raw_cluster_ip_is_the_service() -> None:
    raw = predict(world(), probe("tester", address="10.96.0.10", port=80))
    assert raw.pods == ("web-0", "web-1")
    assert predict(world(), probe("client", address="10.96.0.10", port=80)).outcome == "rejected"


def test_unallocated_cluster_ip_is_dropped_by_nftables_rejected_otherwise() -> None:
    raw = probe("tester", address="10.96.7.7", port=80)
    assert predict(world(mode="nftables"), raw).outcome == "dropped"
    assert predict(world(), raw).outcome == "rejected"


# -- shape ---------------------------------------------------------------------------------


def test_as_report_has_the_report_shape() -> None:
    assert predict(world(external="Local"), probe("client", "nodePort", "node-1")).as_report() == {
        "outcome": "delivered",
        "completed": 1.0,
        "sourceIP": "client",
        "pods": ["web-0"],
        "returnPath": "correct",
    }
    assert predict(world(), probe("client", "clusterIP")).as_report() == {
        "outcome": "rejected",
        "completed": 0.0,
        "pods": [],
        "returnPath": "none",
    }


@pytest.mark.parametrize("external", ["Cluster", "Local"])
@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_probabilities_always_sum_to_one(external: str, mode: str) -> None:
    plan = world(external=external, mode=mode, external_ips=(EXTERNAL_IP,))
    for src in ("client", "tester", "web-0", "node-1", "node-3"):
        for via, node in [
            ("clusterIP", None),
            ("nodePort", "node-1"),
            ("nodePort", "node-3"),
            ("loadBalancer", None),
            ("externalIP", None),
        ]:
            pred = predict(plan, probe(src, via, node))
            assert math.isclose(total(pred), 1.0), (src, via, node)
            assert all(f.why for f in pred.fates)


def test_unusable_targets_are_errors() -> None:
    with pytest.raises(OracleError):
        predict(world(svc_type="ClusterIP"), probe("client", "loadBalancer"))
    with pytest.raises(OracleError):
        predict(world(), probe("client", "externalIP"))
    with pytest.raises(OracleError):
        predict(world(), probe("nobody", "clusterIP"))


def test_protocol_mismatch_is_rejected() -> None:
    pred = predict(world(), probe("tester", "clusterIP", protocol="UDP"))
    assert pred.outcome == "rejected"
