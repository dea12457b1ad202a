"""Pod placement: the lab's scheduler (pins, nodeSelector, taints, anti-affinity, spread)."""

from __future__ import annotations

import bisect
import ipaddress
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from testbed.core.addresses import (
    Pool,
)
from testbed.core.model import (
    NodePlan,
    PodPlan,
)
from testbed.core.scenario import (
    ARCH_LABEL,
    HOSTNAME_LABEL,
    OS_LABEL,
    AffinityTerm,
    Loc,
    PodTemplate,
    Scenario,
    Taint,
    tolerated,
    well_known_labels,
)
from testbed.core.scenario.types import ABSENT, STARTING, TERMINATING

AFTER_FILE_PODS = 2_000_000  # placement order of replicas added beside a dump's pods


# -- pod placement -------------------------------------------------------------------


def _pinned(request: _Request, where: tuple[str, str] | None) -> _Request:
    """A pod the running lab already has keeps its node and address."""
    if where is None:
        return request
    node, ip = where
    return replace(request, template=replace(request.template, node_name=node), ip=ip)


def _in_state(request: _Request, state: str | None) -> _Request:
    """A pod a step is starting (not ready, not serving) or terminating (not ready, still
    serving as it was), as the EndpointSlice controller reports it (KEP-1669)."""
    if state == STARTING:
        return replace(request, ready=False, serving=False, terminating=False)
    if state == TERMINATING:
        return replace(request, ready=False, terminating=True)
    return request


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
    pool: Pool
    taints: tuple[Taint, ...] = ()
    total: int = 0
    owners: Counter[str] = field(default_factory=Counter)
    # pods here by label set id (namespace and labels): affinity terms only see those
    label_sets: Counter[int] = field(default_factory=Counter)


class Placement:
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
        states = dict(scenario.lifecycle)
        self.requests = [
            _pinned(_in_state(r, states.get(r.name)), (keep or {}).get(r.name))
            for r in self._requests()
            if r.name not in removed and states.get(r.name) != ABSENT
        ]
        taken = [r.ip for r in self.requests if r.ip is not None]
        taints = {o.name: o.taints for o in scenario.node_objects}
        self.nodes = [
            _NodeState(
                n,
                dict(n.labels),
                ipaddress.IPv4Network(n.pod_cidr),
                Pool(n.pod_cidr, 2, [n.gateway, *taken]),
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
