"""Scenario -> Plan: every address, port and pod placement decided, deterministically.

Kubernetes leaves some of these to chance (the scheduler's tie-breaks, random
nodePorts); the lab picks the lowest free choice so that a scenario, its
expectations and its report read the same on every run. The default address
plan is the one SCENARIO-FORMAT.md describes: the edge at the first host of
each segment, node-k at host .10+k of the fabric and owner of the k-th /24 of
the pod CIDR, ClusterIPs and LB addresses from host .10, nodePorts from 30000.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace

from testbed.core.addresses import (
    FIRST_ALLOCATED_HOST,
    Pool,
    client_plans,
    node_plans,
    nth_host,
)
from testbed.core.model import (
    Endpoint,
    Network,
    Plan,
    PodPlan,
    PortPlan,
    ProxyOptions,
    ServicePlan,
)
from testbed.core.placement import (
    Placement,
)
from testbed.core.scenario import (
    NODE_PORT_RANGE,
    EndpointSlice,
    Loc,
    Scenario,
    Service,
    ServicePort,
)


def plan(
    scenario: Scenario,
    keep: Mapping[str, tuple[str, str]] | None = None,
    removed: Collection[str] = (),
    previous: Plan | None = None,
) -> Plan:
    """The planned world of a validated scenario; raises ScenarioError when it cannot exist.

    A running lab re-plans after a change with `keep` (pod -> (node, ip) of the pods it
    already has, so they stay put), `removed` (pods deleted and not to come back) and
    `previous` (the plan it runs: allocated nodePorts and health-check ports stay).
    """
    lab = scenario.lab
    net = lab.network
    nodes = node_plans(scenario)
    pods = Placement(scenario, nodes, keep or {}, frozenset(removed)).run()
    load_balancer = lab.load_balancer
    if load_balancer.mode == "single" and load_balancer.node is None:
        load_balancer = replace(load_balancer, node=nodes[0].name)
    kp = lab.kube_proxy
    return Plan(
        name=lab.name,
        description=lab.description,
        file=scenario.file,
        network=Network(
            node_cidr=net.node_cidr,
            pod_cidr=net.pod_cidr,
            service_cidr=net.service_cidr,
            external_cidr=net.external_cidr,
            vip_cidr=net.vip_cidr,
            edge_fabric_ip=nth_host(net.node_cidr, 1),
            edge_external_ip=nth_host(net.external_cidr, 1),
        ),
        proxy=ProxyOptions(
            mode=lab.proxy_mode,
            masquerade_all=kp.masquerade_all,
            detect_local_mode=kp.detect_local_mode,
            # as kube-proxy: localhost NodePorts only when nodePortAddresses takes in 127.0.0.1
            localhost_nodeports=kp.localhost_nodeports
            and (
                not kp.node_port_addresses
                or any(
                    c != "primary"
                    and ipaddress.IPv4Address("127.0.0.1") in ipaddress.IPv4Network(c)
                    for c in kp.node_port_addresses
                )
            ),
            node_port_addresses=kp.node_port_addresses,
            what_if=kp.what_if,
            implementation=kp.implementation,
            version=kp.version,
            tcp_be_liberal=kp.tcp_be_liberal,
            cluster_cidr=net.pod_cidr,
            service_cidr=net.service_cidr,
        ),
        nodes=nodes,
        pods=pods,
        clients=client_plans(scenario),
        services=_services(scenario, pods, previous),
        load_balancer=load_balancer,
        probes=lab.probes,
    )


# -- services ---------------------------------------------------------------------------


def _services(
    scenario: Scenario, pods: tuple[PodPlan, ...], previous: Plan | None = None
) -> tuple[ServicePlan, ...]:
    services = scenario.services
    net = scenario.lab.network
    cluster_ips = Pool(
        net.service_cidr, FIRST_ALLOCATED_HOST, [s.cluster_ip for s in services if s.cluster_ip]
    )
    vips = Pool(
        net.vip_cidr,
        FIRST_ALLOCATED_HOST,
        [
            ip
            for s in services
            for ip in (*s.lb_ingress, s.load_balancer_ip)
            if ip and ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(net.vip_cidr)
        ],
    )
    node_ports = _NodePorts(services, previous)
    index = _PodIndex(pods)
    slices: dict[str, list[EndpointSlice]] = defaultdict(list)
    for s in scenario.endpoint_slices:
        slices[s.service_key].append(s)
    by_name = {p.name: p for p in pods}
    stopped = {p.name for p in scenario.pods if not p.running}  # Succeeded or Failed
    out = []
    for svc in services:
        cluster_ip = None
        if not svc.headless:
            cluster_ip = svc.cluster_ip or cluster_ips.take(svc.loc, f"Service {svc.key}")
        lb_ips: tuple[str, ...] = ()
        if svc.type == "LoadBalancer":
            lb_ips = svc.lb_ingress or (
                (svc.load_balancer_ip,)
                if svc.load_balancer_ip
                else (vips.take(svc.loc, f"Service {svc.key}"),)
            )
        selected = index.select(svc, stopped) if svc.key not in slices else []
        ports = []
        for port in svc.ports:
            if svc.key in slices:
                endpoints = _slice_endpoints(port, slices[svc.key], by_name)
            else:
                endpoints = _selected_endpoints(svc, port, selected)
            ports.append(
                PortPlan(
                    name=port.name,
                    port=port.port,
                    protocol=port.protocol,
                    node_port=node_ports.for_port(svc, port, previous),
                    target_port=port.target_port,
                    endpoints=endpoints,
                )
            )
        # a fresh plan allocates as an API server creating the Services in order does; a
        # running lab's re-plan keeps what it has (`previous`), so flipping one Service to
        # Local adds its health-check port without moving any other Service's port
        health = svc.health_check_node_port
        if health is None and svc.type == "LoadBalancer" and svc.external_policy == "Local":
            health = node_ports.kept_health(svc.key, previous) or node_ports.take(
                svc.loc, f"Service {svc.key}'s healthCheckNodePort"
            )
        out.append(
            ServicePlan(
                namespace=svc.namespace,
                name=svc.name,
                type=svc.type,
                cluster_ip=cluster_ip,
                ports=tuple(ports),
                external_ips=svc.external_ips,
                lb_ips=lb_ips,
                external_policy=svc.external_policy,
                internal_policy=svc.internal_policy,
                health_check_node_port=health,
                affinity_timeout=svc.affinity_timeout,
                source_ranges=svc.source_ranges,
            )
        )
    return tuple(out)


class _NodePorts:
    """The NodePort range, lowest free first, after every explicit nodePort is set aside."""

    def __init__(self, services: Iterable[Service], previous: Plan | None = None) -> None:
        self.taken = {p.node_port for s in services for p in s.ports if p.node_port} | {
            s.health_check_node_port for s in services if s.health_check_node_port
        }
        # a running lab's allocations stay where they are, as an API server keeps them
        self.kept: set[int] = set()
        if previous is not None:
            self.kept = {p.node_port for s in previous.services for p in s.ports if p.node_port}
            self.kept |= {
                s.health_check_node_port for s in previous.services if s.health_check_node_port
            }
        self.taken |= self.kept
        self.next = NODE_PORT_RANGE[0]

    @staticmethod
    def kept_health(key: str, previous: Plan | None) -> int | None:
        """The health-check port a running lab's Service already has."""
        if previous is None:
            return None
        found = [s for s in previous.services if s.key == key]
        return found[0].health_check_node_port if found else None

    def take(self, loc: Loc, what: str) -> int:
        while self.next in self.taken:
            self.next += 1
        if self.next > NODE_PORT_RANGE[1]:
            low, high = NODE_PORT_RANGE
            raise loc.error(f"the NodePort range {low}-{high} has no free port left for {what}")
        self.taken.add(self.next)
        return self.next

    def for_port(self, svc: Service, port: ServicePort, previous: Plan | None = None) -> int | None:
        if port.node_port is not None:
            return port.node_port
        if not svc.has_node_port(port):
            return None
        if previous is not None:
            before = [s for s in previous.services if s.key == svc.key]
            same = [
                p for s in before for p in s.ports if (p.name, p.port) == (port.name, port.port)
            ]
            if same and same[0].node_port:
                return same[0].node_port
        return self.take(port.loc, f"port {port.port} of Service {svc.key}")


class _PodIndex:
    """Pods by namespace and label, so selecting is not services x pods."""

    def __init__(self, pods: Iterable[PodPlan]) -> None:
        self.by_label: dict[tuple[str, str, str], list[PodPlan]] = defaultdict(list)
        for pod in pods:
            for key, value in pod.labels:
                self.by_label[pod.namespace, key, value].append(pod)

    def select(self, svc: Service, stopped: set[str]) -> list[PodPlan]:
        """Running pods of the service's namespace that carry all its selector labels."""
        if not svc.selector:
            return []
        lists = [self.by_label.get((svc.namespace, k, v), []) for k, v in svc.selector]
        smallest = min(lists, key=len)
        wanted = dict(svc.selector)
        return [
            p
            for p in smallest
            if p.name not in stopped and all(p.label_map.get(k) == v for k, v in wanted.items())
        ]


def _resolve_target(port: ServicePort, pod: PodPlan) -> int | None:
    """targetPort for one pod: a number, or the pod's container port of that name."""
    if isinstance(port.target_port, int):
        return port.target_port or port.port
    for cport in pod.ports:
        if cport.name == port.target_port and cport.protocol == port.protocol:
            return cport.port
    return None  # as the EndpointSlice controller does, the pod is left out of this port


def _selected_endpoints(
    svc: Service, port: ServicePort, pods: list[PodPlan]
) -> tuple[Endpoint, ...]:
    out = []
    for pod in pods:
        target = _resolve_target(port, pod)
        if target is None:
            continue
        out.append(
            Endpoint(
                ip=pod.ip,
                port=target,
                node=pod.node,
                pod=pod.name,
                # as the EndpointSlice controller (podToEndpoint): publishNotReadyAddresses
                # makes every pod serving and ready, a terminating one too
                ready=pod.ready or svc.publish_not_ready,
                serving=pod.serving or svc.publish_not_ready,
                terminating=pod.terminating,
            )
        )
    return tuple(out)


def _slice_endpoints(
    port: ServicePort, slices: list[EndpointSlice], pods: Mapping[str, PodPlan]
) -> tuple[Endpoint, ...]:
    """A replayed service's endpoints: slice ports matched by name, as kube-proxy does."""
    out: list[Endpoint] = []
    seen: set[tuple[str, int]] = set()
    for sl in slices:
        for sport in sl.ports:
            if sport.name != port.name or sport.protocol != port.protocol or sport.port is None:
                continue
            for ep in sl.endpoints:
                if (ep.ip, sport.port) in seen:
                    continue
                seen.add((ep.ip, sport.port))
                out.append(
                    Endpoint(
                        ip=ep.ip,
                        port=sport.port,
                        node=ep.node or pods[ep.pod].node,
                        pod=ep.pod,
                        ready=ep.ready,
                        serving=ep.serving,
                        terminating=ep.terminating,
                    )
                )
    return tuple(out)
