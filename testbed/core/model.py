"""The planned world: plain, frozen data that every pure part of the lab reads.

A `Plan` is what the scenario means once every address, port and placement is
decided. Rule renderers, the oracle and the judge take it (or pieces of it) and
never touch the kernel, so they can be tested without root in milliseconds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

TCP = "TCP"
UDP = "UDP"


@dataclass(frozen=True)
class ProxyOptions:
    """kube-proxy's own options that change the rules it writes."""

    mode: str = "iptables"  # iptables | nftables
    masquerade_all: bool = False
    detect_local_mode: str = "ClusterCIDR"  # ClusterCIDR | NodeCIDR | None
    localhost_nodeports: bool = True
    what_if: tuple[str, ...] = ()  # deliberate faults, e.g. ("no-snat",)
    cluster_cidr: str = "10.244.0.0/16"  # the detector's CIDR in ClusterCIDR mode
    service_cidr: str = "10.96.0.0/16"
    # nodePortAddresses: CIDRs or "primary"; () is kube-proxy's default (iptables: every
    # local address; nftables: the node IP)
    node_port_addresses: tuple[str, ...] = ()
    # who writes the rules: our renderer ("builtin") or the real kube-proxy ("upstream")
    implementation: str = "builtin"
    # the kube-proxy release: builtin, whose rules are rendered ("" is the reference
    # layout the library was proven with: nftables mode as 1.34 and 1.35 write it);
    # upstream, which one runs ("" until a lab resolves it to the newest built)
    version: str = ""
    # conntrack.tcpBeLiberal: nf_conntrack_tcp_be_liberal set on every node, and no
    # drop of conntrack-INVALID packets (kube-proxy leaves that rule out then)
    tcp_be_liberal: bool = False

    def node_port_ips(self, node: NodePlan) -> tuple[str, ...] | None:
        """The node addresses NodePorts are accepted on; None: every local address.

        As kube-proxy's GetNodeIPs: the node's own addresses (fabric IP, pod gateway,
        loopback) inside one of the CIDRs; "primary" is the node IP.
        """
        if not self.node_port_addresses:
            return None
        out: list[str] = []
        for ip in (node.ip, node.gateway, "127.0.0.1"):
            for entry in self.node_port_addresses:
                hit = ip == node.ip if entry == "primary" else _in_cidr(ip, entry)
                if hit and ip not in out:
                    out.append(ip)
        return tuple(out)

    def local_cidr(self, node: NodePlan) -> str | None:
        """The source range kube-proxy treats as 'from a pod' on this node."""
        if self.detect_local_mode == "ClusterCIDR":
            return self.cluster_cidr
        if self.detect_local_mode == "NodeCIDR":
            return node.pod_cidr
        return None


def _in_cidr(ip: str, cidr: str) -> bool:
    return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(cidr, strict=False)


@dataclass(frozen=True)
class NodePlan:
    name: str
    index: int  # 1-based
    ip: str  # InternalIP on the fabric
    pod_cidr: str
    gateway: str  # the node's own address inside its pod CIDR (pods route via it)
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = TCP
    name: str = ""


@dataclass(frozen=True)
class PodPlan:
    name: str
    namespace: str
    node: str
    ip: str
    labels: tuple[tuple[str, str], ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    ready: bool = True
    serving: bool = True
    terminating: bool = False

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class ClientPlan:
    name: str
    ip: str


@dataclass(frozen=True)
class Endpoint:
    """One address:port behind a service port, as an EndpointSlice lists it."""

    ip: str
    port: int
    node: str
    pod: str = ""
    ready: bool = True
    serving: bool = True
    terminating: bool = False


@dataclass(frozen=True)
class PortPlan:
    name: str  # may be "" for a single unnamed port
    port: int
    protocol: str = TCP
    node_port: int | None = None
    target_port: int | str = 0
    endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True)
class ServicePlan:
    namespace: str
    name: str
    type: str  # ClusterIP | NodePort | LoadBalancer
    cluster_ip: str | None  # None for headless
    ports: tuple[PortPlan, ...] = ()
    external_ips: tuple[str, ...] = ()
    lb_ips: tuple[str, ...] = ()
    external_policy: str = "Cluster"  # externalTrafficPolicy
    internal_policy: str = "Cluster"  # internalTrafficPolicy
    health_check_node_port: int | None = None
    affinity_timeout: int | None = None  # seconds when sessionAffinity is ClientIP
    source_ranges: tuple[str, ...] = ()  # loadBalancerSourceRanges

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def port_name(self, port: PortPlan) -> str:
        """kube-proxy's ServicePortName string: ns/name:port, or ns/name for an unnamed port."""
        suffix = f":{port.name}" if port.name else ""
        return f"{self.namespace}/{self.name}{suffix}"

    @property
    def external_local(self) -> bool:
        """externalTrafficPolicy Local applies only to externally reachable types."""
        return self.external_policy == "Local" and self.type in ("NodePort", "LoadBalancer")


@dataclass(frozen=True)
class Network:
    node_cidr: str = "172.18.0.0/24"
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/16"
    external_cidr: str = "203.0.113.0/24"
    vip_cidr: str = "198.51.100.0/24"
    edge_fabric_ip: str = "172.18.0.1"
    edge_external_ip: str = "203.0.113.1"


@dataclass(frozen=True)
class HealthCheckConfig:
    interval: float = 0.5  # seconds between probes of one node
    timeout: float = 0.3
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2


@dataclass(frozen=True)
class LoadBalancerConfig:
    mode: str = "ecmp"  # ecmp | single
    node: str | None = None  # single mode: the node that takes all
    health_checks: bool = True
    health: HealthCheckConfig = field(default_factory=HealthCheckConfig)


@dataclass(frozen=True)
class Target:
    """Where a probe goes: a service reached one way, or a raw address."""

    service: str | None = None  # ns/name
    port: int | str | None = None  # service port number or name; raw port for address
    via: str = "clusterIP"  # clusterIP | nodePort | loadBalancer | externalIP
    node: str | None = None  # nodePort: whose address
    address: str | None = None  # raw target


@dataclass(frozen=True)
class Expectation:
    outcome: str | None = None  # delivered | dropped | rejected
    source_ip: str | None = None  # client | node | literal IP
    pods: tuple[str, ...] | None = None
    return_path: str | None = None  # correct | broken | mixed | none
    share: tuple[tuple[str, float], ...] | None = None
    completed: float | None = None  # fraction of attempts that complete (Attempt.end)
    outcomes: tuple[tuple[str, float], ...] | None = None  # fraction per outcome


# Attempts of a probe that does not say: the same in YAML (`count`), on the command line
# (`testbed probe --count`) and in Python (`Lab.probe(count=...)`); docs/scenario-format.md.
DEFAULT_PROBE_COUNT = 10


@dataclass(frozen=True)
class ProbePlan:
    name: str
    source: str  # client, pod or node name
    target: Target
    protocol: str = TCP
    count: int = DEFAULT_PROBE_COUNT
    expect: Expectation | None = None
    measure_latency: bool = False  # show connect/round-trip percentiles per path in the table
    # connection: real sockets | packet: Scapy-built SYNs / datagrams | outOfWindow: a real
    # connection that meets one out-of-window segment from the pod before its request
    mode: str = "connection"
    trace: bool = False  # also send one marked packet and report the rules each node ran
    # every attempt leaves from this port, one after another: UDP attempts share one
    # conntrack entry (a DNS or statsd client keeping its socket), TCP ones reopen it;
    # None: a new port per attempt
    source_port: int | None = None


# A steady load (a step `load:`): attempts started at a fixed rate in the background
# across the following steps; docs/scenario-format.md, "A steady load across steps".
DEFAULT_LOAD_RATE = 50.0  # attempts started per second
LOAD_RATE_RANGE = (1.0, 1000.0)
DEFAULT_LOAD_TIMEOUT = 5.0  # seconds per attempt, as the e2e disruption tests wait
LOAD_TIMEOUT_RANGE = (0.1, 60.0)
DEFAULT_LOAD_WINDOW = 1.0  # seconds: the success rate is judged per window
LOAD_WINDOW_RANGE = (0.1, 60.0)


@dataclass(frozen=True)
class LoadPlan:
    """A load: where it goes, how fast, and the success rate every window must reach."""

    name: str  # the step that starts it; its verdict row carries this name
    source: str  # client, pod or node name
    target: Target
    protocol: str = TCP
    rate: float = DEFAULT_LOAD_RATE
    timeout: float = DEFAULT_LOAD_TIMEOUT
    window: float = DEFAULT_LOAD_WINDOW
    until: str | None = None  # the step after which it ends; None: the last step
    success_rate: float = 1.0  # expect.successRate: the least any window may show


@dataclass(frozen=True)
class Plan:
    name: str
    description: str
    file: str
    network: Network
    proxy: ProxyOptions
    nodes: tuple[NodePlan, ...]
    pods: tuple[PodPlan, ...]
    clients: tuple[ClientPlan, ...]
    services: tuple[ServicePlan, ...]
    load_balancer: LoadBalancerConfig = field(default_factory=LoadBalancerConfig)
    probes: tuple[ProbePlan, ...] = ()

    def node(self, name: str) -> NodePlan:
        return next(n for n in self.nodes if n.name == name)

    def pod(self, name: str) -> PodPlan:
        return next(p for p in self.pods if p.name == name)

    def service(self, key: str) -> ServicePlan:
        if "/" not in key:
            key = f"default/{key}"
        return next(s for s in self.services if s.key == key)
