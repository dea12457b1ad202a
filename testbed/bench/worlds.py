"""What the benchmark measures on, pure: the `ip -batch` floor of a wiring, generated
worlds (scale labs, bulk services, one change) and the run's configuration."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.core.model import ServicePlan
    from testbed.core.topology import Route, Wiring


# -- the ip -batch floor (pure) -----------------------------------------------------


@dataclass(frozen=True)
class IpBatch:
    """The same namespaces, links, addresses and routes as a Wiring, as `ip -batch` input.

    `build` runs in the caller's namespace (namespaces, and veth pairs created
    straight into their two namespaces); `ip -batch` cannot switch namespace per
    line, so each namespace gets its own `ip -n NS -batch -` script. Sysctls are
    not part of it: `ip` cannot write them.
    """

    build: str
    per_namespace: tuple[tuple[str, str], ...]  # (namespace, script)
    teardown: str

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(ns for ns, _ in self.per_namespace)


def _ip_route(route: Route) -> str:
    """`proto static`, as pyroute2 marks the routes it adds, so both builds list the same."""
    if route.dev:
        return f"route add {route.dst} dev {route.dev} scope link proto static"
    if len(route.via) == 1:
        return f"route add {route.dst} via {route.via[0]} proto static"
    hops = " ".join(f"nexthop via {gw}" for gw in route.via)
    return f"route add {route.dst} proto static {hops}"


def ip_batch(wiring: Wiring, prefix: str) -> IpBatch:
    """Scripts that build `wiring` with namespace names `prefix + short name`."""

    def name(short: str) -> str:
        return prefix + short

    build = [f"netns add {name(s)}" for s in wiring.namespaces]
    build += [
        f"link add {v.name} netns {name(v.ns)} type veth peer name {v.peer_name}"
        f" netns {name(v.peer_ns)}"
        for v in wiring.veths
    ]
    per: dict[str, list[str]] = {s: ["link set lo up"] for s in wiring.namespaces}
    for ns, bridge, cidr in wiring.bridges:
        per[ns] += [
            f"link add {bridge} type bridge",
            f"addr add {cidr} dev {bridge}",
            f"link set {bridge} up",
        ]
    for v in wiring.veths:
        if v.master:
            per[v.ns].append(f"link set {v.name} master {v.master}")
        per[v.ns].append(f"link set {v.name} up")
        per[v.peer_ns].append(f"link set {v.peer_name} up")
    for a in wiring.addrs:
        per[a.ns].append(f"addr add {a.cidr} dev {a.dev}")
    for r in wiring.routes:
        per[r.ns].append(_ip_route(r))
    return IpBatch(
        build="\n".join(build) + "\n",
        per_namespace=tuple((name(s), "\n".join(per[s]) + "\n") for s in wiring.namespaces),
        teardown="".join(f"netns del {name(s)}\n" for s in wiring.namespaces),
    )


# -- generated worlds (pure) ---------------------------------------------------------


def scale_docs(nodes: int, pods_per_node: int, mode: str = "iptables") -> list[dict[str, Any]]:
    """An inline scenario: `nodes` nodes, one Deployment spread `pods_per_node` per node,
    one NodePort Service over all of it (so every node holds every endpoint, as in a
    real cluster) and one client."""
    labels = {"app": "web"}
    return [
        {
            "apiVersion": "testbed/v1alpha1",
            "kind": "Lab",
            "metadata": {"name": f"scale-{nodes}x{pods_per_node}"},
            "spec": {
                "proxyMode": mode,
                "nodes": nodes,
                "clients": [{"name": "client", "ip": "203.0.113.10"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "NodePort",
                "selector": labels,
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": nodes * pods_per_node,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "web", "ports": [{"containerPort": 8080}]}]},
                },
            },
        },
    ]


def bulk_services(count: int, endpoints: int = 3) -> tuple[ServicePlan, ...]:
    """`count` services with `endpoints` endpoints each, spread over three nodes.

    Every tenth is a NodePort (externalTrafficPolicy Cluster), so the NodePort and
    external chains are exercised too; the rest are ClusterIP.
    """
    from testbed.core.model import Endpoint, PortPlan, ServicePlan

    first_ip = ipaddress.IPv4Address("10.96.0.10")
    first_ep = ipaddress.IPv4Address("10.244.1.2")
    out = []
    for i in range(count):
        eps = tuple(
            Endpoint(
                str(first_ep + endpoints * i + j), 8080, f"node-{j % 3 + 1}", pod=f"svc-{i:05d}-{j}"
            )
            for j in range(endpoints)
        )
        node_port = 30000 + i // 10 if i % 10 == 0 else None
        kind = "NodePort" if node_port else "ClusterIP"
        port = PortPlan("http", 80, "TCP", node_port, 8080, eps)
        out.append(ServicePlan("bench", f"svc-{i:05d}", kind, str(first_ip + i), (port,)))
    return tuple(out)


def one_change(services: Sequence[ServicePlan]) -> tuple[ServicePlan, ...]:
    """The incremental figure's change: one service added, one endpoint removed."""
    from testbed.core.model import Endpoint, PortPlan, ServicePlan

    victim = services[len(services) // 2]
    port = victim.ports[0]
    shrunk = replace(victim, ports=(replace(port, endpoints=port.endpoints[:-1]),))
    eps = tuple(Endpoint(f"10.245.0.{2 + j}", 8080, f"node-{j + 1}") for j in range(3))
    added = ServicePlan(
        "bench",
        "added",
        "ClusterIP",
        "10.96.255.250",
        (PortPlan("http", 80, "TCP", None, 8080, eps),),
    )
    return (*(shrunk if s is victim else s for s in services), added)


# -- configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    reps: int = 5
    warmup: int = 1
    scale: tuple[tuple[int, int], ...] = ((10, 10), (50, 10), (100, 10))
    rule_sizes: tuple[int, ...] = (100, 1000, 5000)
    probe_count: int = 10_000
    connect_count: int = 5_000
    library: bool = True  # memory: the whole library, or only the default scenario

    @classmethod
    def quick(cls) -> Config:
        return cls(
            reps=3,
            scale=((10, 10), (50, 10)),
            rule_sizes=(100, 1000),
            probe_count=2_000,
            connect_count=2_000,
            library=False,
        )
