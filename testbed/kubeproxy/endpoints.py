"""Which endpoints a node uses for a service port, decided as kube-proxy decides it.

Both renderers (iptables and nftables) take the same decisions from here, so
the two proxy modes cannot drift apart on the Cluster/Local split, on the
terminating-endpoint fallback or on when to REJECT versus DROP. The logic
follows `CategorizeEndpoints` (pkg/proxy/topology.go, topology hints left out:
the lab has no zones) and the head of the per-service loop in the proxiers'
`syncProxyRules`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from testbed.core.model import Endpoint, PortPlan, ServicePlan


def endpoint_key(ep: Endpoint) -> str:
    """kube-proxy's endpoint string (net.JoinHostPort): hashed into KUBE-SEP names."""
    if ":" in ep.ip:
        return f"[{ep.ip}]:{ep.port}"
    return f"{ep.ip}:{ep.port}"


def ordered(endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    """One entry per ip:port, sorted by that string, as the EndpointSlice cache hands them over."""
    seen: dict[str, Endpoint] = {}
    for ep in endpoints:
        seen.setdefault(endpoint_key(ep), ep)
    return tuple(seen[k] for k in sorted(seen))


def _serving_terminating(ep: Endpoint) -> bool:
    return ep.serving and ep.terminating


class Categories(NamedTuple):
    """The endpoints each traffic policy may use, and whether any is usable anywhere."""

    cluster: tuple[Endpoint, ...]
    local: tuple[Endpoint, ...]
    has_any: bool


def categorize(endpoints: Iterable[Endpoint], node_name: str) -> Categories:
    """Ready endpoints first; only when none is ready, the serving+terminating ones.

    The fallback is taken separately for the cluster-wide list and for this
    node's list. An endpoint that is not serving is never used. `has_any` is
    true when something usable exists on any node: it is what turns a REJECT
    into a DROP (or into a working ClusterIP) for a service whose endpoints are
    all remote or all terminating.
    """
    return _categorize(ordered(endpoints), node_name)


def _categorize(eps: tuple[Endpoint, ...], node_name: str) -> Categories:
    cluster = tuple(ep for ep in eps if ep.ready)
    if not cluster:
        cluster = tuple(ep for ep in eps if _serving_terminating(ep))
    mine = tuple(ep for ep in eps if ep.node == node_name)
    local = tuple(ep for ep in mine if ep.ready)
    if not local:
        local = tuple(ep for ep in mine if _serving_terminating(ep))
    return Categories(cluster, local, bool(cluster))


def _ipv4(values: Iterable[str]) -> tuple[str, ...]:
    """kube-proxy keeps only the addresses of its own IP family; the lab is IPv4."""
    out = []
    for value in values:
        try:
            if ipaddress.ip_address(value.strip()).version == 4:
                out.append(value.strip())
        except ValueError:
            continue
    return tuple(out)


def _ipv4_cidrs(values: Iterable[str]) -> tuple[str, ...]:
    """loadBalancerSourceRanges: whitespace ignored, printed as the network (net.IPNet.String)."""
    out = []
    for value in values:
        try:
            net = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            continue
        if net.version == 4:
            out.append(str(net))
    return tuple(out)


@dataclass(frozen=True)
class PortDecision:
    """Everything a renderer needs to know about one service port on one node.

    Field names follow the proxier's local variables so the two can be read
    side by side.
    """

    cluster: tuple[Endpoint, ...]  # the Cluster-policy chain's endpoints (empty: no chain)
    local: tuple[Endpoint, ...]  # the Local-policy chain's endpoints (empty: no chain)
    reachable: tuple[Endpoint, ...]  # endpoints that get their own per-endpoint chain
    has_endpoints: bool  # usable endpoints exist somewhere in the cluster
    has_internal: bool  # ClusterIP traffic has somewhere to go from this node
    has_external: bool  # external traffic, after its policy, has somewhere to go
    internal_local: bool  # internalTrafficPolicy: Local
    external_local: bool  # externalTrafficPolicy: Local (NodePort/LoadBalancer only)
    external_ips: tuple[str, ...]
    lb_ips: tuple[str, ...]  # status.loadBalancer.ingress, LoadBalancer type only
    source_ranges: tuple[str, ...]
    node_port: int  # 0: none

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.lb_ips or self.external_ips)

    @property
    def uses_external_chain(self) -> bool:
        """The EXT chain exists whenever there are endpoints, to short-circuit local traffic."""
        return self.has_endpoints and self.externally_accessible

    @property
    def uses_firewall_chain(self) -> bool:
        return self.has_endpoints and bool(self.lb_ips) and bool(self.source_ranges)

    @property
    def internal_verdict(self) -> str | None:
        """Filter verdict for the ClusterIP: REJECT with no endpoints, DROP with no local ones."""
        if not self.has_endpoints:
            return "REJECT"
        return None if self.has_internal else "DROP"

    @property
    def external_verdict(self) -> str | None:
        """Same for externalIPs, LB IPs and the NodePort."""
        if not self.has_endpoints:
            return "REJECT"
        return None if self.has_external else "DROP"


def decide(svc: ServicePlan, port: PortPlan, node_name: str) -> PortDecision:
    """The per-port decisions at the top of kube-proxy's syncProxyRules loop."""
    lb_ips = _ipv4(svc.lb_ips) if svc.type == "LoadBalancer" else ()
    external_ips = _ipv4(svc.external_ips)
    node_port = port.node_port or 0
    accessible = bool(node_port or lb_ips or external_ips)
    internal_local = svc.internal_policy == "Local"
    external_local = svc.external_local
    # UsesClusterEndpoints / UsesLocalEndpoints: a Local external policy still needs the
    # Cluster endpoints, to short-circuit traffic from pods and from the node itself.
    uses_cluster = not internal_local or accessible
    uses_local = internal_local or (external_local and accessible)

    eps = ordered(port.endpoints)
    cats = _categorize(eps, node_name)
    cluster = cats.cluster if uses_cluster else ()
    local = cats.local if uses_local else ()
    if not local:
        reachable = cluster
    elif not cluster:
        reachable = local
    else:  # the union, in the same order (both lists hold objects from `eps`)
        wanted = {id(ep) for ep in cluster} | {id(ep) for ep in local}
        reachable = tuple(ep for ep in eps if id(ep) in wanted)

    has_internal = cats.has_any and not (internal_local and not local)
    has_external = cats.has_any and not (external_local and not local)
    return PortDecision(
        cluster=cluster,
        local=local,
        reachable=reachable,
        has_endpoints=cats.has_any,
        has_internal=has_internal,
        has_external=has_external,
        internal_local=internal_local,
        external_local=external_local,
        external_ips=external_ips,
        lb_ips=lb_ips,
        source_ranges=_ipv4_cidrs(svc.source_ranges) if lb_ips else (),
        node_port=node_port,
    )


def local_ready(svc: ServicePlan, node_name: str) -> int:
    """What the node's healthCheckNodePort reports: its ready, non-terminating endpoints.

    kube-proxy's service health server counts the local endpoints it programmed; the lab's
    health servers take this count from here, the proxy's side, and never from the oracle,
    so the model and the system under test can disagree, as they may in a real cluster.
    """
    return len(
        {
            ep.ip
            for port in svc.ports
            for ep in port.endpoints
            if ep.node == node_name and ep.ready and not ep.terminating
        }
    )
