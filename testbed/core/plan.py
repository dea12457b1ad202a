"""Scenario -> Plan: every address, port and pod placement decided, deterministically.

Kubernetes leaves some of these to chance (the scheduler's tie-breaks, random
nodePorts); the lab picks the lowest free choice so that a scenario, its
expectations and its report read the same on every run. The default address
plan is the one SCENARIO-FORMAT.md describes: the edge at the first host of
each segment, node-k at host .10+k of the fabric and owner of the k-th /24 of
the pod CIDR, ClusterIPs and LB addresses from host .10, nodePorts from 30000.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from testbed.core.model import (
    ClientPlan,
    Endpoint,
    Network,
    NodePlan,
    Plan,
    PodPlan,
    PortPlan,
    ProbePlan,
    ProxyOptions,
    ServicePlan,
)
from testbed.core.scenario import (
    ARCH_LABEL,
    HOSTNAME_LABEL,
    NODE_PORT_RANGE,
    OS_LABEL,
    AffinityTerm,
    EndpointSlice,
    Loc,
    PodTemplate,
    Scenario,
    Service,
    ServicePort,
    Taint,
    node_labels,
    tolerated,
    well_known_labels,
)
from testbed.core.yamlsrc import one_line

NODE_HOST_BASE = 10  # node-k is host .10+k of the fabric
FIRST_ALLOCATED_HOST = 10  # ClusterIPs, clients and LB addresses start at host .10
NODE_POD_PREFIX = 24  # node-k's pod CIDR is the k-th /24 of the cluster's
AFTER_FILE_PODS = 2_000_000  # placement order of replicas added beside a dump's pods


def plan(
    scenario: Scenario,
    keep: Mapping[str, tuple[str, str]] | None = None,
    removed: Collection[str] = (),
) -> Plan:
    """The planned world of a validated scenario; raises ScenarioError when it cannot exist.

    A running lab re-plans after a change with `keep` (pod -> (node, ip) of the pods it
    already has, so they stay put) and `removed` (pods deleted and not to come back).
    """
    lab = scenario.lab
    net = lab.network
    nodes = _nodes(scenario)
    pods = _Placement(scenario, nodes, keep or {}, frozenset(removed)).run()
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
            edge_fabric_ip=_host(net.node_cidr, 1),
            edge_external_ip=_host(net.external_cidr, 1),
        ),
        proxy=ProxyOptions(
            mode=lab.proxy_mode,
            masquerade_all=kp.masquerade_all,
            detect_local_mode=kp.detect_local_mode,
            localhost_nodeports=kp.localhost_nodeports,
            what_if=kp.what_if,
            cluster_cidr=net.pod_cidr,
            service_cidr=net.service_cidr,
        ),
        nodes=nodes,
        pods=pods,
        clients=_clients(scenario),
        services=_services(scenario, pods),
        load_balancer=load_balancer,
        probes=lab.probes,
    )


# -- addresses --------------------------------------------------------------------


def _host(cidr: str, offset: int) -> str:
    return str(ipaddress.IPv4Network(cidr).network_address + offset)


class _Pool:
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


def _nodes(scenario: Scenario) -> tuple[NodePlan, ...]:
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
                gateway=_host(pod_cidr, 1),
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


def _clients(scenario: Scenario) -> tuple[ClientPlan, ...]:
    lab = scenario.lab
    edge = _host(lab.network.external_cidr, 1)
    pool = _Pool(
        lab.network.external_cidr,
        FIRST_ALLOCATED_HOST,
        [edge, *(c.ip for c in lab.clients if c.ip is not None)],
    )
    return tuple(
        ClientPlan(c.name, c.ip if c.ip is not None else pool.take(c.loc, f"client {c.name}"))
        for c in lab.clients
    )


# -- pod placement -------------------------------------------------------------------


def _pinned(request: _Request, where: tuple[str, str] | None) -> _Request:
    """A pod the running lab already has keeps its node and address."""
    if where is None:
        return request
    node, ip = where
    return replace(request, template=replace(request.template, node_name=node), ip=ip)


@dataclass(frozen=True)
class _Request:
    """One pod waiting for a node and an address."""

    name: str
    namespace: str
    owner: str
    template: PodTemplate
    ip: str | None
    ready: bool
    serving: bool
    terminating: bool
    loc: Loc


@dataclass
class _NodeState:
    plan: NodePlan
    labels: dict[str, str]
    net: ipaddress.IPv4Network
    pool: _Pool
    taints: tuple[Taint, ...] = ()
    total: int = 0
    owners: Counter[str] = field(default_factory=Counter)
    # pods here by label set id (namespace and labels): affinity terms only see those
    label_sets: Counter[int] = field(default_factory=Counter)


class _Placement:
    """The lab's scheduler: pins, nodeSelector, podAntiAffinity, then an even spread.

    Anti-affinity is counted per distinct term (pods of one template share theirs) and
    per distinct label set, each interned to a number, so that a thousand pods with
    affinity plan in a fraction of a second.
    """

    def __init__(
        self,
        scenario: Scenario,
        nodes: tuple[NodePlan, ...],
        keep: Mapping[str, tuple[str, str]] | None = None,
        removed: frozenset[str] = frozenset(),
    ) -> None:
        self.scenario = scenario
        self.requests = [
            _pinned(r, (keep or {}).get(r.name)) for r in self._requests() if r.name not in removed
        ]
        taken = [r.ip for r in self.requests if r.ip is not None]
        taints = {o.name: o.taints for o in scenario.node_objects}
        self.nodes = [
            _NodeState(
                n,
                dict(n.labels),
                ipaddress.IPv4Network(n.pod_cidr),
                _Pool(n.pod_cidr, 2, [n.gateway, *taken]),
                taints.get(n.name, ()),
            )
            for n in nodes
        ]
        self.by_name = {s.plan.name: s for s in self.nodes}
        self.spans = sorted(
            (int(s.net.network_address), int(s.net.broadcast_address), i)
            for i, s in enumerate(self.nodes)
        )
        self.span_starts = [start for start, _, _ in self.spans]
        self.domains: dict[str, dict[str, list[_NodeState]]] = {}
        # placed pods' own terms: id(term) -> (term, node name -> pods there that carry it)
        self.required: dict[int, tuple[AffinityTerm, Counter[str]]] = {}
        self.preferred: dict[int, tuple[AffinityTerm, Counter[str]]] = {}
        self.label_ids: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self.label_sets: list[tuple[str, dict[str, str]]] = []
        self.memo: dict[tuple[int, int], bool] = {}  # (id(term), label set) -> selects

    def run(self) -> tuple[PodPlan, ...]:
        out = []
        for request in self.requests:
            labels = self._label_id(request.namespace, request.template.labels)
            state = self._node_for(request, labels)
            ip = request.ip or state.pool.take(request.loc, f"pod {request.name}")
            template = request.template
            state.total += 1
            state.owners[request.owner] += 1
            state.label_sets[labels] += 1
            for terms, own in (
                (self.required, template.anti_required),
                (self.preferred, template.anti_preferred),
            ):
                for term in own:
                    terms.setdefault(id(term), (term, Counter()))[1][state.plan.name] += 1
            out.append(
                PodPlan(
                    name=request.name,
                    namespace=request.namespace,
                    node=state.plan.name,
                    ip=ip,
                    labels=template.labels,
                    ports=template.ports,
                    ready=request.ready,
                    serving=request.serving,
                    terminating=request.terminating,
                )
            )
        return tuple(out)

    def _requests(self) -> Iterator[_Request]:
        """Pods in document order; a workload's replicas in index order.

        A workload's pods that the file holds come as the Pods they are (where the
        cluster put them); the workload adds only the replicas the file lacks, and a
        pod it no longer wants (scaled down) is left out.
        """
        entries: list[tuple[int, int, _Request]] = []
        wanted: dict[str, set[str]] = {}
        for d in self.scenario.deployments:
            wanted[d.key] = set(d.pod_names())
            for i, name in enumerate(d.made()):
                template = d.template
                if (node := d.node_of(name)) is not None:  # a DaemonSet pod is bound
                    template = replace(template, node_name=node)
                request = _Request(
                    name, d.namespace, d.key, template, None, True, True, False, d.loc
                )
                # beside pods the file holds, new replicas come after them, as they would
                entries.append((d.order + (AFTER_FILE_PODS if d.owned else 0), i, request))
        for p in self.scenario.pods:
            if p.owner is not None and p.name not in wanted.get(p.owner, set()):
                continue
            owner = p.owner or f"Pod/{p.namespace}/{p.name}"
            request = _Request(
                p.name,
                p.namespace,
                owner,
                p.template,
                p.ip,
                p.ready,
                p.serving,
                p.terminating,
                p.loc,
            )
            entries.append((p.order, 0, request))
        entries.sort(key=lambda e: (e[0], e[1]))
        return (request for _, _, request in entries)

    def _label_id(self, namespace: str, labels: tuple[tuple[str, str], ...]) -> int:
        key = (namespace, labels)
        if key not in self.label_ids:
            self.label_ids[key] = len(self.label_sets)
            self.label_sets.append((namespace, dict(labels)))
        return self.label_ids[key]

    def _node_for(self, request: _Request, labels: int) -> _NodeState:
        template = request.template
        if template.node_name is not None or request.ip is not None:
            # pinned by nodeName or by an address: the scheduler is not asked
            if template.node_name is not None:
                state = self.by_name[template.node_name]
            else:
                state = self._owner_of(request)
            if not self._selector_fits(template, state):
                raise template.node_selector_loc.error(
                    f"pod {request.name} is bound to {state.plan.name}, "
                    "whose labels do not match its nodeSelector"
                )
            self._check_ip(request, state)
            return state
        fitting = self.nodes
        if template.node_selector:
            fitting = [s for s in self.nodes if self._selector_fits(template, s)]
        if not fitting:
            missing = [
                f"{k}={v}"
                for k, v in template.node_selector
                if not any(s.labels.get(k) == v for s in self.nodes)
            ] or [f"{k}={v}" for k, v in template.node_selector]
            raise template.node_selector_loc.error(
                f"pod {request.name} would stay Pending: no node has the labels of its "
                f"nodeSelector ({', '.join(missing)}); lab nodes carry {HOSTNAME_LABEL}, "
                f"{OS_LABEL}=linux, {ARCH_LABEL}={well_known_labels('')[ARCH_LABEL]} and the "
                "labels the Lab's nodes or Node objects give"
            )
        untainted = [s for s in fitting if tolerated(s.taints, template.tolerations) is None]
        if not untainted:
            taint = tolerated(fitting[0].taints, template.tolerations)
            assert taint is not None
            raise template.loc.error(
                f"pod {request.name} would stay Pending: every node that fits has a taint it "
                f"does not tolerate (such as {taint.key}:{taint.effect} on {fitting[0].plan.name})"
            )
        fitting = untainted
        blocked = self._kept_away(labels, self.required)
        allowed = fitting
        if blocked or template.anti_required:
            allowed = [
                s
                for s in fitting
                if s.plan.name not in blocked
                and not any(self._matches(t, s) for t in template.anti_required)
            ]
        if not allowed:
            loc = template.anti_loc if template.anti_required else template.loc
            raise loc.error(
                f"pod {request.name} would stay Pending: on every node that fits, required "
                "podAntiAffinity keeps it apart from a pod already there"
            )
        soft = self._kept_away(labels, self.preferred)
        if not soft and not template.anti_preferred:
            return min(allowed, key=lambda s: (s.owners[request.owner], s.total, s.plan.index))
        return min(
            allowed,
            key=lambda s: (
                soft[s.plan.name]
                + sum(t.weight * self._matches(t, s) for t in template.anti_preferred),
                s.owners[request.owner],
                s.total,
                s.plan.index,
            ),
        )

    @staticmethod
    def _selector_fits(template: PodTemplate, state: _NodeState) -> bool:
        return all(state.labels.get(k) == v for k, v in template.node_selector)

    def _owner_of(self, request: _Request) -> _NodeState:
        """The node whose pod CIDR holds a pod's given address."""
        value = int(ipaddress.IPv4Address(request.ip))
        i = bisect.bisect_right(self.span_starts, value) - 1
        if i >= 0 and self.spans[i][0] <= value <= self.spans[i][1]:
            return self.nodes[self.spans[i][2]]
        raise request.loc.error(
            f"pod {request.name}'s address {request.ip} is inside no node's pod CIDR"
        )

    @staticmethod
    def _check_ip(request: _Request, state: _NodeState) -> None:
        if request.ip is None:
            return
        address = ipaddress.IPv4Address(request.ip)
        net = state.net
        if address not in net:
            raise request.loc.error(
                f"pod {request.name}'s address {request.ip} is not inside {state.plan.name}'s "
                f"pod CIDR {net} (a v1 Node object can set the node's spec.podCIDR)"
            )
        if (
            address in (net.network_address, net.broadcast_address)
            or request.ip == state.plan.gateway
        ):
            raise request.loc.error(
                f"pod {request.name}'s address {request.ip} is reserved in {net} "
                f"(network, broadcast or {state.plan.name}'s gateway)"
            )

    def _domain(self, key: str, state: _NodeState) -> list[_NodeState]:
        """The nodes that share `state`'s topology domain for `key` (none without the label)."""
        value = state.labels.get(key)
        if value is None:
            return []
        if key not in self.domains:
            groups: dict[str, list[_NodeState]] = defaultdict(list)
            for s in self.nodes:
                if key in s.labels:
                    groups[s.labels[key]].append(s)
            self.domains[key] = groups
        return self.domains[key][value]

    def _selects(self, term: AffinityTerm, labels: int) -> bool:
        key = (id(term), labels)
        found = self.memo.get(key)
        if found is None:
            namespace, label_map = self.label_sets[labels]
            found = self.memo[key] = term.selects(label_map, namespace)
        return found

    def _matches(self, term: AffinityTerm, state: _NodeState) -> int:
        """How many placed pods in `state`'s domain the term selects."""
        return sum(
            count
            for s in self._domain(term.topology_key, state)
            for labels, count in s.label_sets.items()
            if self._selects(term, labels)
        )

    def _kept_away(
        self, labels: int, terms: dict[int, tuple[AffinityTerm, Counter[str]]]
    ) -> Counter[str]:
        """Placed pods' terms that select this pod: weight (or 1) per pod, by node in reach."""
        out: Counter[str] = Counter()
        for term, where in terms.values():
            if not self._selects(term, labels):
                continue
            for name, count in where.items():
                for s in self._domain(term.topology_key, self.by_name[name]):
                    out[s.plan.name] += max(term.weight, 1) * count
        return out


# -- services ---------------------------------------------------------------------------


def _services(scenario: Scenario, pods: tuple[PodPlan, ...]) -> tuple[ServicePlan, ...]:
    services = scenario.services
    net = scenario.lab.network
    cluster_ips = _Pool(
        net.service_cidr, FIRST_ALLOCATED_HOST, [s.cluster_ip for s in services if s.cluster_ip]
    )
    vips = _Pool(
        net.vip_cidr,
        FIRST_ALLOCATED_HOST,
        [
            ip
            for s in services
            for ip in (*s.lb_ingress, s.load_balancer_ip)
            if ip and ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(net.vip_cidr)
        ],
    )
    node_ports = _NodePorts(services)
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
                    node_port=node_ports.for_port(svc, port),
                    target_port=port.target_port,
                    endpoints=endpoints,
                )
            )
        health = svc.health_check_node_port
        if health is None and svc.type == "LoadBalancer" and svc.external_policy == "Local":
            health = node_ports.take(svc.loc, f"Service {svc.key}'s healthCheckNodePort")
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

    def __init__(self, services: Iterable[Service]) -> None:
        self.taken = {p.node_port for s in services for p in s.ports if p.node_port} | {
            s.health_check_node_port for s in services if s.health_check_node_port
        }
        self.next = NODE_PORT_RANGE[0]

    def take(self, loc: Loc, what: str) -> int:
        while self.next in self.taken:
            self.next += 1
        if self.next > NODE_PORT_RANGE[1]:
            low, high = NODE_PORT_RANGE
            raise loc.error(f"the NodePort range {low}-{high} has no free port left for {what}")
        self.taken.add(self.next)
        return self.next

    def for_port(self, svc: Service, port: ServicePort) -> int | None:
        if port.node_port is not None:
            return port.node_port
        if not svc.has_node_port(port):
            return None
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
                ready=pod.ready or svc.publish_not_ready,
                serving=pod.serving,
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


# -- describe ------------------------------------------------------------------------------


def describe(plan: Plan) -> str:
    """The plan as `testbed plan` prints it: what will exist, where, with which address."""
    net, proxy, lb = plan.network, plan.proxy, plan.load_balancer
    lines = [f"Lab {plan.name} ({one_line(plan.file)})"]
    if plan.description:
        lines.append(f"  {plan.description}")
    lines += [
        "",
        "Network",
        f"  fabric     {net.node_cidr}  edge {net.edge_fabric_ip}",
        f"  pods       {net.pod_cidr}",
        f"  services   {net.service_cidr}",
        f"  external   {net.external_cidr}  edge {net.edge_external_ip}",
        f"  LB VIPs    {net.vip_cidr}",
        "",
        "kube-proxy",
        f"  mode {proxy.mode}, masqueradeAll {_yes(proxy.masquerade_all)}, detectLocalMode "
        f"{proxy.detect_local_mode}, localhostNodePorts {_yes(proxy.localhost_nodeports)}"
        + (f", whatIf {', '.join(proxy.what_if)}" if proxy.what_if else ""),
        "",
        "Load balancer (edge)",
        f"  mode {lb.mode}"
        + (f" (all traffic to {lb.node})" if lb.mode == "single" else " (per-flow hash)")
        + f", health checks {'on' if lb.health_checks else 'off'}",
        "",
        f"Nodes ({len(plan.nodes)})",
    ]
    width = max((len(n.name) for n in plan.nodes), default=4)
    for node in plan.nodes:
        usual = well_known_labels(node.name)  # every node has these: not repeated
        extra = [f"{k}={v}" for k, v in node.labels if usual.get(k) != v]
        lines.append(
            f"  {node.name:<{width}}  {node.ip:<15}  pods {node.pod_cidr:<18} "
            f"gateway {node.gateway}" + (f"  labels {', '.join(extra)}" if extra else "")
        )
    lines += ["", f"Pods ({len(plan.pods)})"]
    width = max((len(p.name) for p in plan.pods), default=4)
    node_width = max((len(n.name) for n in plan.nodes), default=4)
    for pod in plan.pods:
        ports = ", ".join(
            f"{p.port}/{p.protocol}" + (f" ({p.name})" if p.name else "") for p in pod.ports
        )
        state = _pod_state(pod.ready, pod.serving, pod.terminating)
        lines.append(
            f"  {pod.name:<{width}}  {pod.node:<{node_width}}  {pod.ip:<15} {ports or 'no ports'}"
            + (f"  [{state}]" if state else "")
            + ("" if pod.namespace == "default" else f"  namespace {pod.namespace}")
        )
    lines += ["", f"Services ({len(plan.services)})"]
    for svc in plan.services:
        lines += _describe_service(svc)
    lines += ["", f"Clients ({len(plan.clients)})"]
    lines += [f"  {c.name:<15}  {c.ip}" for c in plan.clients]
    lines += ["", f"Probes ({len(plan.probes)})"]
    lines += [f"  {_describe_probe(p)}" for p in plan.probes]
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "true" if flag else "false"


def _pod_state(ready: bool, serving: bool, terminating: bool) -> str:
    words = [] if ready else ["not ready"]
    if terminating:
        words.append("terminating" + (", serving" if serving else ""))
    return ", ".join(words)


def _describe_service(svc: ServicePlan) -> list[str]:
    head = f"  {svc.key}  {svc.type}  ClusterIP {svc.cluster_ip or 'None (headless)'}"
    lines = [head]
    facts = []
    if svc.type in ("NodePort", "LoadBalancer") or svc.external_ips:
        facts.append(f"externalTrafficPolicy {svc.external_policy}")
    facts.append(f"internalTrafficPolicy {svc.internal_policy}")
    if svc.affinity_timeout is not None:
        facts.append(f"sessionAffinity ClientIP ({svc.affinity_timeout}s)")
    if svc.health_check_node_port is not None:
        facts.append(f"healthCheckNodePort {svc.health_check_node_port}")
    lines.append("    " + ", ".join(facts))
    if svc.lb_ips:
        lines.append(f"    LB IPs {', '.join(svc.lb_ips)}")
    if svc.external_ips:
        lines.append(f"    externalIPs {', '.join(svc.external_ips)}")
    if svc.source_ranges:
        lines.append(f"    loadBalancerSourceRanges {', '.join(svc.source_ranges)}")
    for port in svc.ports:
        name = f"{port.name} " if port.name else ""
        node_port = f"  nodePort {port.node_port}" if port.node_port else ""
        lines.append(
            f"    port {name}{port.port}/{port.protocol} -> {port.target_port or port.port}"
            f"{node_port}  ({len(port.endpoints)} endpoints)"
        )
        for ep in port.endpoints:
            state = _pod_state(ep.ready, ep.serving, ep.terminating)
            lines.append(
                f"      {ep.ip}:{ep.port}  {ep.pod or '-'} on {ep.node}"
                + (f"  [{state}]" if state else "")
            )
    return lines


def _describe_probe(probe: ProbePlan) -> str:
    t = probe.target
    if t.address is not None:
        where = f"{t.address}:{t.port}"
    else:
        where = f"{t.service} port {t.port} via {t.via}" + (f" of {t.node}" if t.node else "")
    text = f"{probe.name}: {probe.source} -> {where}, {probe.protocol} x{probe.count}"
    e = probe.expect
    if e is None:
        return text + "; expect what the oracle predicts"
    parts = []
    if e.outcome:
        parts.append(e.outcome)
    if e.outcomes:
        parts.append("outcomes " + ", ".join(f"{k} {v:g}" for k, v in e.outcomes))
    if e.completed is not None:
        parts.append(f"completed {e.completed:g}")
    if e.source_ip:
        parts.append(f"sourceIP {e.source_ip}")
    if e.pods is not None:
        parts.append(f"pods {', '.join(e.pods) or 'none'}")
    if e.return_path:
        parts.append(f"returnPath {e.return_path}")
    if e.share:
        parts.append("share " + ", ".join(f"{pod} {share:g}" for pod, share in e.share))
    return text + "; expect " + (", ".join(parts) or "nothing in particular")
