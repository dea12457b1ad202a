"""The wiring decided from a plan: names, addresses and routes, no root needed."""

from testbed.core import topology
from testbed.core.model import (
    ClientPlan,
    Network,
    NodePlan,
    Plan,
    PodPlan,
    ProxyOptions,
    ServicePlan,
)


def small_plan(mode: str = "iptables", lb_mode: str = "ecmp") -> Plan:
    from testbed.core.model import LoadBalancerConfig

    nodes = tuple(
        NodePlan(f"node-{i}", i, f"172.18.0.{10 + i}", f"10.244.{i}.0/24", f"10.244.{i}.1")
        for i in (1, 2)
    )
    pods = (
        PodPlan("web-0", "default", "node-1", "10.244.1.2"),
        PodPlan("a-very-long-pod-name-0", "default", "node-2", "10.244.2.2"),
    )
    svc = ServicePlan("default", "web", "LoadBalancer", "10.96.0.10", lb_ips=("198.51.100.10",))
    return Plan(
        "t",
        "",
        "t.yaml",
        Network(),
        ProxyOptions(mode=mode),
        nodes,
        pods,
        (ClientPlan("client", "203.0.113.10"),),
        (svc,),
        load_balancer=LoadBalancerConfig(mode=lb_mode),
    )


def test_every_namespace_carries_the_lab_id():
    wiring = topology.wire(small_plan(), "t-1a2b")
    names = [wiring.ns(s) for s in wiring.namespaces]
    assert names[0] == f"{topology.NS_PREFIX}t-1a2b-edge"
    assert all(n.startswith(f"{topology.NS_PREFIX}t-1a2b-") for n in names)
    assert set(wiring.namespaces) == {
        "edge",
        "node-1",
        "node-2",
        "web-0",
        "a-very-long-pod-name-0",
        "client",
    }


def test_interface_names_fit_the_kernel_limit():
    wiring = topology.wire(small_plan(), "x")
    assert all(len(v.name) <= 15 and len(v.peer_name) <= 15 for v in wiring.veths)
    assert topology.pod_ifname("a-very-long-pod-name-0").startswith("veth")


def test_nodes_route_pod_cidrs_host_gateway_style_and_the_edge_knows_none():
    wiring = topology.wire(small_plan(), "x")
    routes = {(r.ns, r.dst): r for r in wiring.routes}
    assert routes[("node-1", "10.244.2.0/24")].via == ("172.18.0.12",)
    assert routes[("node-2", "10.244.1.0/24")].via == ("172.18.0.11",)
    assert routes[("web-0", "default")].via == ("10.244.1.1",)
    assert not any(
        r.ns == "edge" and r.dst.startswith(("10.244.", "10.96.")) for r in wiring.routes
    )


def test_vips_are_routed_over_every_node_in_ecmp_and_one_in_single_mode():
    ecmp = {r.dst: r.via for r in topology.wire(small_plan(), "x").routes if r.ns == "edge"}
    assert ecmp["198.51.100.10/32"] == ("172.18.0.11", "172.18.0.12")
    single = topology.wire(small_plan(lb_mode="single"), "x").routes
    assert {r.dst: r.via for r in single if r.ns == "edge"}["198.51.100.10/32"] == ("172.18.0.11",)


def test_route_localnet_only_where_kube_proxy_sets_it():
    ipt = {(s.ns, s.key) for s in topology.wire(small_plan("iptables"), "x").sysctls}
    nft = {(s.ns, s.key) for s in topology.wire(small_plan("nftables"), "x").sysctls}
    assert ("node-1", "net/ipv4/conf/all/route_localnet") in ipt
    assert ("node-1", "net/ipv4/conf/all/route_localnet") not in nft


def test_the_edge_hashes_each_flow_on_its_five_tuple():
    edge = {s.key: s.value for s in topology.wire(small_plan(), "t").sysctls if s.ns == "edge"}
    assert edge["net/ipv4/fib_multipath_hash_policy"] == "3"  # custom: read from the packet
    assert int(edge["net/ipv4/fib_multipath_hash_fields"]) == 0x01 | 0x02 | 0x04 | 0x10 | 0x20


def test_the_edge_rejects_outside_traffic_to_clusterips_and_pods_once_per_attempt():
    plan = small_plan()
    rules = topology.wire(plan, "t").edge_rules
    reject = next(line for line in rules.splitlines() if "reject" in line)
    assert 'iifname "br-ext"' in reject and "net-unreachable" in reject
    assert plan.network.service_cidr in reject and plan.network.pod_cidr in reject
    vips = [ip for svc in plan.services for ip in svc.lb_ips]
    if vips:  # routed addresses are accepted before the reject
        assert rules.index(vips[0]) < rules.index("reject")
    only = topology.only_pods(topology.wire(plan, "t"), plan, {p.name for p in plan.pods})
    assert only.edge_rules == ""  # adding pods never reloads the edge
