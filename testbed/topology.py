"""The lab's wiring as data: which namespaces, links, addresses and routes.

Pure: `wire(plan, lab_id)` only decides. `netbuild.apply` makes it real. Keeping
the two apart lets the address plan be tested without root and lets the
benchmark compare the same wiring built two ways.

Shape (see DESIGN.md): the edge namespace holds two bridges, `br-ext` for the
clients and `br-fabric` for the nodes, and routes between them. Each node has
`eth0` on the fabric and a point-to-point veth per pod (kindnet/ptp style: the
node answers as every pod's gateway, so all pod traffic crosses the node's
netfilter hooks, as it does on a real node). The edge knows no pod or service
route: outside traffic enters only through node addresses and VIPs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from netaddr import IPNetwork

from testbed.model import Plan

EDGE = "edge"
FABRIC_BRIDGE = "br-fabric"
EXT_BRIDGE = "br-ext"
# Every lab namespace starts with this; a private prefix (TESTBED_NS_PREFIX, with a private
# TESTBED_STATE_DIR) gives tests labs that another user's `testbed clean` never sweeps.
NS_PREFIX = os.environ.get("TESTBED_NS_PREFIX") or "tb-"
IFNAME_MAX = 15
# Interface names the lab itself uses in a namespace that also holds veths named after
# nodes, clients or pods: such a name is mapped, so a node called `lo` cannot collide.
LAB_IFNAMES = frozenset({"lo", "eth0", FABRIC_BRIDGE, EXT_BRIDGE})
NS_SHORT_MAX = 63  # longer node names (real clusters' FQDNs) are shortened in namespace names


@dataclass(frozen=True)
class Veth:
    ns: str
    name: str
    peer_ns: str
    peer_name: str
    master: str | None = None  # bridge on the `ns` side


@dataclass(frozen=True)
class Addr:
    ns: str
    dev: str
    cidr: str  # address/prefix


@dataclass(frozen=True)
class Route:
    ns: str
    dst: str  # CIDR or "default"
    via: tuple[str, ...] = ()  # one gateway, or several for ECMP
    dev: str | None = None  # for device routes (scope link)


@dataclass(frozen=True)
class Sysctl:
    ns: str
    key: str  # e.g. net/ipv4/ip_forward
    value: str


@dataclass(frozen=True)
class Wiring:
    lab_id: str
    namespaces: tuple[str, ...]  # short names (edge, node-1, web-0, client)
    bridges: tuple[tuple[str, str, str], ...]  # (ns, bridge, address/prefix)
    veths: tuple[Veth, ...]
    addrs: tuple[Addr, ...]
    routes: tuple[Route, ...]
    sysctls: tuple[Sysctl, ...]

    def ns(self, short: str) -> str:
        return ns_name(self.lab_id, short)


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def ns_name(lab_id: str, short: str) -> str:
    """Every namespace carries the lab id, so labs coexist and leftovers are findable.

    A long name (a real node's FQDN) keeps its first characters and gains a stable hash,
    so the same name always maps to the same namespace.
    """
    if len(short) > NS_SHORT_MAX:
        short = f"{short[: NS_SHORT_MAX - 9]}-{_digest(short)}"
    return f"{NS_PREFIX}{lab_id}-{short}"


def link_name(name: str) -> str:
    """The interface named after a node, client or pod: its name when it fits and is not
    one the lab uses itself, else a stable hash (the user still sees the real name)."""
    if len(name) <= IFNAME_MAX and name not in LAB_IFNAMES and "/" not in name:
        return name
    return "veth" + _digest(name)


def pod_ifname(pod: str) -> str:
    """The node-side veth of a pod."""
    return link_name(pod)


def vip_routes(plan: Plan, nodes_by_vip: dict[str, tuple[str, ...]]) -> tuple[Route, ...]:
    """Edge routes for LB VIPs and externalIPs over the node addresses given."""
    ips = {n.name: n.ip for n in plan.nodes}
    return tuple(
        Route(EDGE, f"{vip}/32", tuple(ips[n] for n in nodes))
        for vip, nodes in sorted(nodes_by_vip.items())
        if nodes
    )


def default_vip_nodes(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Before any health check: single mode -> one node; ecmp -> every node."""
    lb = plan.load_balancer
    chosen = (
        (lb.node or plan.nodes[0].name,)
        if lb.mode == "single"
        else tuple(n.name for n in plan.nodes)
    )
    vips: dict[str, tuple[str, ...]] = {}
    for svc in plan.services:
        for ip in (*svc.lb_ips, *svc.external_ips):
            vips[ip] = chosen
    return vips


def wire(plan: Plan, lab_id: str) -> Wiring:
    net = plan.network
    fabric_len = IPNetwork(net.node_cidr).prefixlen
    ext_len = IPNetwork(net.external_cidr).prefixlen
    namespaces = [EDGE]
    bridges = [
        (EDGE, FABRIC_BRIDGE, f"{net.edge_fabric_ip}/{fabric_len}"),
        (EDGE, EXT_BRIDGE, f"{net.edge_external_ip}/{ext_len}"),
    ]
    veths: list[Veth] = []
    addrs: list[Addr] = []
    routes: list[Route] = []
    sysctls = [
        Sysctl(EDGE, "net/ipv4/ip_forward", "1"),
        # pass-through: the edge forwards what it is given, like a cloud fabric
        Sysctl(EDGE, "net/ipv4/conf/all/rp_filter", "0"),
        Sysctl(EDGE, "net/ipv4/conf/default/rp_filter", "0"),
        # ECMP hashes on the L4 5-tuple, so each flow picks a node and stays there
        Sysctl(EDGE, "net/ipv4/fib_multipath_hash_policy", "1"),
        Sysctl(EDGE, "net/ipv4/icmp_ratelimit", "0"),
    ]

    for node in plan.nodes:
        namespaces.append(node.name)
        veths.append(Veth(EDGE, link_name(node.name), node.name, "eth0", master=FABRIC_BRIDGE))
        addrs.append(Addr(node.name, "eth0", f"{node.ip}/{fabric_len}"))
        routes.append(Route(node.name, "default", (net.edge_fabric_ip,)))
        for other in plan.nodes:
            if other.name != node.name:
                routes.append(Route(node.name, other.pod_cidr, (other.ip,)))
        sysctls += [
            Sysctl(node.name, "net/ipv4/ip_forward", "1"),
            Sysctl(node.name, "net/ipv4/conf/all/rp_filter", "0"),
            Sysctl(node.name, "net/ipv4/conf/default/rp_filter", "0"),
            # A real node sends at most ~6 ICMP errors in a burst to one host; probes
            # fire whole bursts, and each attempt must get the REJECT it earned.
            Sysctl(node.name, "net/ipv4/icmp_ratelimit", "0"),
        ]
        if plan.proxy.mode == "iptables" and plan.proxy.localhost_nodeports:
            # kube-proxy sets this so 127.0.0.1:NodePort can be DNATed to a pod
            sysctls.append(Sysctl(node.name, "net/ipv4/conf/all/route_localnet", "1"))

    for pod in plan.pods:
        node = plan.node(pod.node)
        ifname = pod_ifname(pod.name)
        namespaces.append(pod.name)
        veths.append(Veth(node.name, ifname, pod.name, "eth0"))
        addrs.append(Addr(node.name, ifname, f"{node.gateway}/32"))
        routes.append(Route(node.name, f"{pod.ip}/32", dev=ifname))
        addrs.append(Addr(pod.name, "eth0", f"{pod.ip}/32"))
        routes.append(Route(pod.name, f"{node.gateway}/32", dev="eth0"))
        routes.append(Route(pod.name, "default", (node.gateway,)))

    for client in plan.clients:
        namespaces.append(client.name)
        veths.append(Veth(EDGE, link_name(client.name), client.name, "eth0", master=EXT_BRIDGE))
        addrs.append(Addr(client.name, "eth0", f"{client.ip}/{ext_len}"))
        routes.append(Route(client.name, "default", (net.edge_external_ip,)))

    routes += vip_routes(plan, default_vip_nodes(plan))
    return Wiring(
        lab_id=lab_id,
        namespaces=tuple(namespaces),
        bridges=tuple(bridges),
        veths=tuple(veths),
        addrs=tuple(addrs),
        routes=tuple(routes),
        sysctls=tuple(sysctls),
    )


def only_pods(wiring: Wiring, plan: Plan, pods: set[str]) -> Wiring:
    """The part of a wiring that adds these pods to a running lab."""
    ifnames = {(p.node, pod_ifname(p.name)) for p in plan.pods if p.name in pods}
    return Wiring(
        lab_id=wiring.lab_id,
        namespaces=tuple(n for n in wiring.namespaces if n in pods),
        bridges=(),
        veths=tuple(v for v in wiring.veths if v.peer_ns in pods),
        addrs=tuple(a for a in wiring.addrs if a.ns in pods or (a.ns, a.dev) in ifnames),
        routes=tuple(r for r in wiring.routes if r.ns in pods or (r.ns, r.dev) in ifnames),
        sysctls=tuple(s for s in wiring.sysctls if s.ns in pods),
    )
