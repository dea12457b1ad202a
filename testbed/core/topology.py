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

from testbed.core.model import Plan

EDGE = "edge"
# The edge's ECMP hash, as a pass-through LB pins a flow: on the 5-tuple and nothing else.
# Policy 1 ("layer 4") reuses a forwarded packet's own flow hash when it carries one, and
# the client's kernel draws a new one for every SYN retransmit (sk_rethink_txhash), so a
# retried SYN could land on another node. Policy 3 hashes the fields listed in
# fib_multipath_hash_fields, read from the packet: 0x37 = source and destination address
# (0x1, 0x2), IP protocol (0x4), source and destination port (0x10, 0x20).
EDGE_HASH_POLICY = "3"
EDGE_HASH_FIELDS = str(0x0037)
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
    edge_rules: str = ""  # nft ruleset of the edge namespace ("" on partial wirings)

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


def edge_rules(plan: Plan) -> str:
    """The edge's answer to outside traffic for the Service CIDR or the pod network.

    The edge has no route there, as a real edge router has none; but the kernel answers a
    missing route through `ip_error`, which sends at most about five ICMP errors in a burst
    per source and one a second after that (net.ipv4.route.error_cost / error_burst exist
    only in the host's own namespace). Rejecting the traffic here instead makes the edge
    send one "net unreachable" per attempt, so every attempt is rejected, as predicted.
    """
    net = plan.network
    inside = sorted({net.service_cidr, net.pod_cidr, *(n.pod_cidr for n in plan.nodes)})
    routed = sorted({ip for svc in plan.services for ip in (*svc.lb_ips, *svc.external_ips)})
    lines = [
        "table ip testbed-edge {",
        "  chain prerouting {",
        "    type filter hook prerouting priority 0; policy accept;",
    ]
    if routed:  # VIPs and externalIPs are routed even if they sit inside those ranges
        lines.append(f"    ip daddr {{ {', '.join(routed)} }} accept")
    lines += [
        f'    iifname "{EXT_BRIDGE}" ip daddr {{ {", ".join(inside)} }} '
        "reject with icmp type net-unreachable",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


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
        # ECMP hashes the 5-tuple itself, so every packet of a flow, retransmitted SYNs
        # included, goes to the same node (see EDGE_HASH_FIELDS)
        Sysctl(EDGE, "net/ipv4/fib_multipath_hash_policy", EDGE_HASH_POLICY),
        Sysctl(EDGE, "net/ipv4/fib_multipath_hash_fields", EDGE_HASH_FIELDS),
        Sysctl(EDGE, "net/ipv4/icmp_ratelimit", "0"),
        # and no namespace-wide limit either (icmp_msgs_per_sec): one reject per attempt
        Sysctl(EDGE, "net/ipv4/icmp_ratemask", "0"),
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
        edge_rules=edge_rules(plan),
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
