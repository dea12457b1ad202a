"""Addresses for nodes, pod CIDRs and clients, taken from pools in a fixed order."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from testbed.core.model import (
    ClientPlan,
    NodePlan,
)
from testbed.core.scenario import (
    Loc,
    Scenario,
    node_labels,
)

NODE_HOST_BASE = 10  # node-k is host .10+k of the fabric
FIRST_ALLOCATED_HOST = 10  # ClusterIPs, clients and LB addresses start at host .10
NODE_POD_PREFIX = 24  # node-k's pod CIDR is the k-th /24 of the cluster's


# -- addresses --------------------------------------------------------------------


def nth_host(cidr: str, offset: int) -> str:
    return str(ipaddress.IPv4Network(cidr).network_address + offset)


class Pool:
    """Hosts of one CIDR handed out lowest first, skipping ones already taken."""

    def __init__(self, cidr: str, first: int, taken: Iterable[str] = ()) -> None:
        self.net = ipaddress.IPv4Network(cidr)
        self.next = int(self.net.network_address) + first
        self.last = int(self.net.broadcast_address) - 1
        self.taken = {int(ipaddress.IPv4Address(ip)) for ip in taken}

    def take(self, loc: Loc, what: str) -> str:
        while self.next <= self.last and self.next in self.taken:
            self.next += 1
        if self.next > self.last:
            raise loc.error(f"{self.net} has no free address left for {what}")
        self.taken.add(self.next)
        self.next += 1
        return str(ipaddress.IPv4Address(self.next - 1))


def node_plans(scenario: Scenario) -> tuple[NodePlan, ...]:
    lab = scenario.lab
    fabric = ipaddress.IPv4Network(lab.network.node_cidr)
    cluster = ipaddress.IPv4Network(lab.network.pod_cidr)
    objects = {o.name: o for o in scenario.node_objects}
    given = {o.ip: o for o in scenario.node_objects if o.ip is not None}  # unique, edge-free
    out: list[NodePlan] = []
    for k, node in enumerate(lab.nodes, 1):
        obj = objects.get(node.name)
        if obj is not None and obj.ip is not None:
            ip = obj.ip
        else:
            address = fabric.network_address + NODE_HOST_BASE + k
            if address >= fabric.broadcast_address:
                room = fabric.num_addresses - 2 - NODE_HOST_BASE
                raise lab.loc("nodeCIDR").error(
                    f"{fabric} has room for {max(room, 0)} nodes "
                    f"(node-k is host .{NODE_HOST_BASE}+k); the lab has {len(lab.nodes)}"
                )
            ip = str(address)
            if ip in given:
                raise given[ip].ip_loc.error(
                    f"Node {given[ip].name}'s InternalIP {ip} is {node.name}'s planned address "
                    f"(node-k is host .{NODE_HOST_BASE}+k of the nodeCIDR); choose another"
                )
        if obj is not None and obj.pod_cidr is not None:
            pod_cidr = obj.pod_cidr
        else:
            pod_cidr = _node_subnet(cluster, k, lab.loc("podCIDR"), len(lab.nodes))
        labels = node_labels(node, obj)
        out.append(
            NodePlan(
                name=node.name,
                index=k,
                ip=ip,
                pod_cidr=pod_cidr,
                gateway=nth_host(pod_cidr, 1),
                labels=tuple(sorted(labels.items())),
            )
        )
    _check_disjoint(out, scenario)
    return tuple(out)


def _node_subnet(cluster: ipaddress.IPv4Network, k: int, loc: Loc, count: int) -> str:
    room = 2 ** max(NODE_POD_PREFIX - cluster.prefixlen, 0) - 1
    if k > room:
        raise loc.error(
            f"{cluster} has room for {room} nodes' /{NODE_POD_PREFIX} pod CIDRs "
            f"(node-k gets the k-th); the lab has {count}"
        )
    size = 2 ** (32 - NODE_POD_PREFIX)
    return str(ipaddress.IPv4Network((int(cluster.network_address) + k * size, NODE_POD_PREFIX)))


def _check_disjoint(nodes: list[NodePlan], scenario: Scenario) -> None:
    """No two nodes may own overlapping pod CIDRs (Node objects can make them)."""
    nets = {node.name: ipaddress.IPv4Network(node.pod_cidr) for node in nodes}
    spans = sorted(
        (
            (int(nets[n.name].network_address), int(nets[n.name].broadcast_address), n)
            for n in nodes
        ),
        key=lambda span: span[:2],
    )
    locs = {o.name: o.pod_cidr_loc for o in scenario.node_objects if o.pod_cidr is not None}
    for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:], strict=False):
        if start_b <= end_a:
            mine, other = (b, a) if b.name in locs else (a, b)  # blame a Node object
            loc = locs.get(mine.name, scenario.lab.loc("podCIDR"))
            raise loc.error(
                f"{mine.name}'s pod CIDR {mine.pod_cidr} overlaps {other.name}'s {other.pod_cidr}"
            )


def client_plans(scenario: Scenario) -> tuple[ClientPlan, ...]:
    lab = scenario.lab
    edge = nth_host(lab.network.external_cidr, 1)
    pool = Pool(
        lab.network.external_cidr,
        FIRST_ALLOCATED_HOST,
        [edge, *(c.ip for c in lab.clients if c.ip is not None)],
    )
    return tuple(
        ClientPlan(c.name, c.ip if c.ip is not None else pool.take(c.loc, f"client {c.name}"))
        for c in lab.clients
    )
