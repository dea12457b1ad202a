"""`testbed lb`: what the edge load balancer of a running lab does right now.

Read from the kernel and the nodes, not from the process that owns the lab: the
VIP routes come from the edge namespace's routing table (pyroute2), and each
health check is asked again from the edge namespace, exactly as the edge asks
it. A node that answers 200 but is not in the route yet is not a fault: the
edge adds it only after `healthyThreshold` good answers in a row.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from testbed.core.model import Plan, ServicePlan
from testbed.core.topology import EDGE, ns_name
from testbed.kernel import netns
from testbed.kernel.edge import check_port, http_status
from testbed.kernel.netbuild import read_sysctl


@dataclass(frozen=True)
class NodeCheck:
    node: str
    ip: str
    answer: str  # '200', '503', 'refused', 'timeout', ...
    in_route: bool


@dataclass(frozen=True)
class VipView:
    vip: str
    service: ServicePlan
    gateways: tuple[str, ...]  # next hops of the route now; () = no route
    check: str  # e.g. ':31234/' or ':10256/healthz'
    nodes: tuple[NodeCheck, ...]


def read_routes(ns: str) -> dict[str, tuple[str, ...]]:
    """/32 destination -> its next-hop gateways, from the routing table of namespace `ns`."""
    from pyroute2 import IPRoute

    out: dict[str, tuple[str, ...]] = {}
    with netns.entered(ns), IPRoute() as ipr:
        for msg in ipr.get_routes(family=socket.AF_INET):
            dst = msg.get_attr("RTA_DST")
            if not dst or msg["dst_len"] != 32:
                continue
            gateways = []
            if (gw := msg.get_attr("RTA_GATEWAY")) is not None:
                gateways.append(gw)
            for hop in msg.get_attr("RTA_MULTIPATH") or ():
                if (gw := hop.get_attr("RTA_GATEWAY")) is not None:
                    gateways.append(gw)
            out[dst] = tuple(gateways)
    return out


HASH_FIELDS = (
    (0x01, "source address"),
    (0x02, "destination address"),
    (0x04, "protocol"),
    (0x10, "source port"),
    (0x20, "destination port"),
)


def read_hash(ns: str) -> tuple[int, int]:
    """The edge's multipath hash policy and custom fields, as its kernel holds them."""
    policy = int(read_sysctl(ns, "net/ipv4/fib_multipath_hash_policy"))
    fields = int(read_sysctl(ns, "net/ipv4/fib_multipath_hash_fields"), 0)
    return policy, fields


def hash_words(policy: int, fields: int) -> str:
    """How the kernel with this policy picks a node for a packet, in one line."""
    if policy == 3:
        used = [name for bit, name in HASH_FIELDS if fields & bit]
        five = all(fields & bit for bit, _ in HASH_FIELDS)
        how = (
            "every packet of a flow, retransmits included, to one node"
            if five
            else ("flows that differ only in other fields share a node")
        )
        return f"hash on {', '.join(used) or 'nothing'} (policy 3, fields {fields:#06x}): {how}"
    if policy == 1:
        return (
            "hash policy 1: a packet's own flow hash when it carries one, which the client "
            "redraws on each SYN retransmit: a retried SYN may reach another node"
        )
    return f"hash policy {policy}: on addresses only, every flow of one client to one node"


def look(plan: Plan, lab_id: str, timeout: float | None = None) -> list[VipView]:
    """Every VIP and externalIP: its route now and each node's health answer now."""
    edge_ns = ns_name(lab_id, EDGE)
    routes = read_routes(edge_ns)
    wait = timeout or plan.load_balancer.health.timeout
    views = []
    for svc in plan.services:
        port, path = check_port(svc)
        for vip in (*svc.lb_ips, *svc.external_ips):
            gateways = routes.get(vip, ())
            checks = tuple(
                NodeCheck(
                    n.name,
                    n.ip,
                    http_status(edge_ns, n.ip, port, path, wait),
                    n.ip in gateways,
                )
                for n in plan.nodes
            )
            views.append(VipView(vip, svc, gateways, f":{port}{path}", checks))
    return views


def describe(
    plan: Plan, lab_id: str, views: list[VipView], hashing: tuple[int, int] | None = None
) -> str:
    """The views as text for people; `hashing` is read_hash() of the edge."""
    lb = plan.load_balancer
    cfg = lb.health
    by_ip = {n.ip: n.name for n in plan.nodes}
    lines = [
        f"lab {lab_id} ({plan.name}, {plan.proxy.mode}): edge namespace {ns_name(lab_id, EDGE)}",
        f"edge mode {lb.mode}, health checks {'on' if lb.health_checks else 'off'} "
        f"(every {cfg.interval:g} s; in after {cfg.healthy_threshold} good answers, "
        f"out after {cfg.unhealthy_threshold} bad ones)",
    ]
    if hashing is not None and lb.mode == "ecmp":
        lines.append(f"edge ECMP: {hash_words(*hashing)}")
    if not views:
        lines.append("no LoadBalancer VIP or externalIP in this lab")
    for view in views:
        svc = view.service
        kind = "LB IP" if view.vip in svc.lb_ips else "externalIP"
        lines.append("")
        lines.append(
            f"{kind} {view.vip}: service {svc.key} "
            f"({svc.type}, externalTrafficPolicy {svc.external_policy})"
        )
        hops = ", ".join(f"{by_ip.get(g, '?')} {g}" for g in view.gateways)
        how = " (ECMP: each flow hashed to one of them)" if len(view.gateways) > 1 else ""
        route = f"via {hops}{how}" if hops else "none (no node in the pool)"
        lines.append(f"  edge route: {route}")
        what = "healthCheckNodePort" if view.check.endswith("/") else "kube-proxy's /healthz"
        lines.append(f"  health check: GET http://NODE{view.check} ({what})")
        width = max([len("NODE"), *(len(c.node) for c in view.nodes)])
        lines.append(f"    {'NODE':<{width}}  {'ADDRESS':<15}  {'ANSWER':<9}  IN ROUTE")
        for c in view.nodes:
            note = ""
            if c.answer == "200" and not c.in_route:
                note = "  (healthy now; joins after enough good answers in a row)"
            elif c.answer != "200" and c.in_route and lb.mode == "ecmp" and lb.health_checks:
                note = "  (failing now; leaves after enough bad answers in a row)"
            in_route = "yes" if c.in_route else "no"
            lines.append(f"    {c.node:<{width}}  {c.ip:<15}  {c.answer:<9}  {in_route}{note}")
    return "\n".join(lines)


def to_json(
    plan: Plan, lab_id: str, views: list[VipView], hashing: tuple[int, int] | None = None
) -> dict:
    """The same facts as describe(), for `testbed lb -o json`."""
    lb = plan.load_balancer
    by_ip = {n.ip: n.name for n in plan.nodes}
    return {
        "lab": lab_id,
        "name": plan.name,
        "proxyMode": plan.proxy.mode,
        "edgeNamespace": ns_name(lab_id, EDGE),
        "mode": lb.mode,
        "healthChecks": lb.health_checks,
        "hash": hash_words(*hashing) if hashing is not None and lb.mode == "ecmp" else None,
        "vips": [
            {
                "vip": v.vip,
                "kind": "loadBalancerIP" if v.vip in v.service.lb_ips else "externalIP",
                "service": v.service.key,
                "externalTrafficPolicy": v.service.external_policy,
                "route": [{"node": by_ip.get(g, "?"), "ip": g} for g in v.gateways],
                "check": v.check,
                "nodes": [
                    {"node": c.node, "ip": c.ip, "answer": c.answer, "inRoute": c.in_route}
                    for c in v.nodes
                ],
            }
            for v in views
        ],
    }
