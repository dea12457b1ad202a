"""Small hand-placed Plans for the oracle, judge and report tests.

Three nodes (node-k: 172.18.0.1k, pods 10.244.k.0/24, gateway 10.244.k.1), a
client outside (203.0.113.10), pods placed by hand, and one service `web`
(ClusterIP 10.96.0.10, port 80 -> 8080, NodePort 30080, LB IP 198.51.100.10).
"""

from __future__ import annotations

from dataclasses import replace

from testbed.core.model import (
    ClientPlan,
    ContainerPort,
    Endpoint,
    Expectation,
    LoadBalancerConfig,
    Network,
    NodePlan,
    Plan,
    PodPlan,
    PortPlan,
    ProbePlan,
    ProxyOptions,
    ServicePlan,
    Target,
)

CLIENT_IP = "203.0.113.10"
CLUSTER_IP = "10.96.0.10"
VIP = "198.51.100.10"
EXTERNAL_IP = "198.51.100.20"
NODES = tuple(
    NodePlan(f"node-{k}", k, f"172.18.0.1{k}", f"10.244.{k}.0/24", f"10.244.{k}.1")
    for k in (1, 2, 3)
)
N1, N2, N3 = NODES


def pod(name: str, node: str, ip: str, app: str = "web", **flags: bool) -> PodPlan:
    return PodPlan(
        name,
        "default",
        node,
        ip,
        labels=(("app", app),),
        ports=(ContainerPort(8080),) if app == "web" else (),
        **flags,
    )


WEB0 = pod("web-0", "node-1", "10.244.1.2")
WEB1 = pod("web-1", "node-2", "10.244.2.2")
TESTER = pod("tester", "node-3", "10.244.3.2", app="tester")
PODS = (WEB0, WEB1, TESTER)


def world(
    pods: tuple[PodPlan, ...] = PODS,
    *,
    mode: str = "iptables",
    external: str = "Cluster",
    internal: str = "Cluster",
    svc_type: str = "LoadBalancer",
    lb: LoadBalancerConfig | None = None,
    affinity: int | None = None,
    ranges: tuple[str, ...] = (),
    external_ips: tuple[str, ...] = (),
    what_if: tuple[str, ...] = (),
    masquerade_all: bool = False,
    detect: str = "ClusterCIDR",
    localhost_nodeports: bool = True,
    protocol: str = "TCP",
) -> Plan:
    eps = tuple(
        Endpoint(p.ip, 8080, p.node, p.name, p.ready, p.serving, p.terminating)
        for p in pods
        if p.label_map.get("app") == "web"
    )
    svc = ServicePlan(
        namespace="default",
        name="web",
        type=svc_type,
        cluster_ip=CLUSTER_IP,
        ports=(PortPlan("http", 80, protocol, 30080, 8080, eps),),
        external_ips=external_ips,
        lb_ips=(VIP,) if svc_type == "LoadBalancer" else (),
        external_policy=external,
        internal_policy=internal,
        health_check_node_port=32000
        if external == "Local" and svc_type == "LoadBalancer"
        else None,
        affinity_timeout=affinity,
        source_ranges=ranges,
    )
    proxy = ProxyOptions(
        mode=mode,
        masquerade_all=masquerade_all,
        detect_local_mode=detect,
        localhost_nodeports=localhost_nodeports,
        what_if=what_if,
    )
    return Plan(
        name="t",
        description="test world",
        file="scenarios/t.yaml",
        network=Network(),
        proxy=proxy,
        nodes=NODES,
        pods=pods,
        clients=(ClientPlan("client", CLIENT_IP),),
        services=(svc,),
        load_balancer=lb or LoadBalancerConfig(),
    )


def probe(
    source: str = "client",
    via: str = "loadBalancer",
    node: str | None = None,
    *,
    count: int = 50,
    expect: Expectation | None = None,
    protocol: str = "TCP",
    address: str | None = None,
    port: int | str | None = None,
    name: str = "p",
) -> ProbePlan:
    if address is not None:
        target = Target(address=address, port=port)
    else:
        target = Target(service="web", port=port, via=via, node=node)
    return ProbePlan(name, source, target, protocol, count, expect)


def not_ready(p: PodPlan, terminating: bool = True, serving: bool = True) -> PodPlan:
    return replace(p, ready=False, terminating=terminating, serving=serving)
