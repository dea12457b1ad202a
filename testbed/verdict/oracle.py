"""What kube-proxy's semantics predict for one probe, worked out on paper.

The oracle reads only the Plan. It never looks at the rules the lab renders,
so a renderer bug shows up as a disagreement between the packets and this
module instead of being copied into the expectation. It follows the
behaviour Kubernetes documents and kube-proxy's packet-flow tests
(pkg/proxy/iptables/proxier_test.go `runPacketFlowTests`) on the lab's topology:

- clients sit behind the edge router, which routes node addresses, LB VIPs and
  externalIPs, and nothing else: a client aiming at a ClusterIP or a pod IP gets
  ICMP "net unreachable" from the edge;
- nodes route every pod CIDR host-gateway style; a pod's gateway is its node's
  `gateway` address, so a node that masquerades a packet out to one of its own
  pods writes `gateway` as the source, and `ip` when the pod lives elsewhere;
- a reply comes back right only when it passes through the node that did the
  DNAT: the node masqueraded the packet, or the pod lives on that node, or the
  original source (a pod or the node itself) does.

A prediction is a list of fates with probabilities, because kube-proxy picks
endpoints at random and the edge spreads flows over nodes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from testbed.core import targets
from testbed.core.model import Endpoint, NodePlan, Plan, PortPlan, ProbePlan, ServicePlan
from testbed.core.records import DELIVERED, DROPPED, REJECTED
from testbed.verdict import conntrack
from testbed.verdict.prediction import (
    BROKEN,
    CORRECT,
    NO_ROUTE_CLUSTER_IP,
    NO_ROUTE_POD,
    NO_SNAT,
    NONE,
    Fate,
    OracleError,
    Prediction,
)

# -- the world as the oracle needs it -------------------------------------------


@dataclass(frozen=True)
class _Source:
    kind: str  # client | pod | node
    name: str
    ip: str  # the address its packets leave with (service traffic)
    node: NodePlan | None  # pods and nodes: the node that handles their packets first


@dataclass(frozen=True)
class _Ctx:
    plan: Plan
    probe: ProbePlan
    src: _Source
    aim: str  # ip:port
    svc: ServicePlan | None = None
    port: PortPlan | None = None

    @property
    def mode(self) -> str:
        return self.plan.proxy.mode

    @property
    def no_snat(self) -> bool:
        return NO_SNAT in self.plan.proxy.what_if


def _source(plan: Plan, name: str) -> _Source:
    for client in plan.clients:
        if client.name == name:
            return _Source("client", name, client.ip, None)
    for pod in plan.pods:
        if pod.name == name:
            return _Source("pod", name, pod.ip, plan.node(pod.node))
    for node in plan.nodes:
        if node.name == name:
            return _Source("node", name, node.ip, node)
    raise OracleError(f"probe source {name!r} is no client, pod or node of the plan")


def _in(ip: str, cidr: str | None) -> bool:
    if not cidr:
        return False
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def usable(endpoints: Iterable[Endpoint], node: str | None = None) -> tuple[Endpoint, ...]:
    """Ready endpoints; when none is ready, the serving and terminating ones; never others.

    With `node`, only that node's endpoints are considered (the Local policies take
    the fallback among local endpoints alone). Duplicated ip:port entries count once.
    """
    seen: dict[tuple[str, int], Endpoint] = {}
    for ep in endpoints:
        if node is None or ep.node == node:
            seen.setdefault((ep.ip, ep.port), ep)
    eps = [seen[k] for k in sorted(seen)]
    ready = tuple(ep for ep in eps if ep.ready)
    return ready or tuple(ep for ep in eps if ep.serving and ep.terminating)


def local_ready(svc: ServicePlan, node: str) -> int:
    """The count the healthCheckNodePort reports: ready, non-terminating pods on the node."""
    return len(
        {
            ep.ip
            for port in svc.ports
            for ep in port.endpoints
            if ep.node == node and ep.ready and not ep.terminating
        }
    )


def default_lb_nodes(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Where the edge sends each LB VIP and externalIP once health checks have settled.

    single: the chosen node (default the first). ecmp: every node, except that for a
    Local service with a healthCheckNodePort the edge keeps only nodes that answer
    200, i.e. that have a ready local endpoint; none of them means no route at all.
    """
    lb = plan.load_balancer
    everyone = tuple(n.name for n in plan.nodes)
    out: dict[str, tuple[str, ...]] = {}
    for svc in plan.services:
        if lb.mode == "single":
            chosen: tuple[str, ...] = (lb.node or plan.nodes[0].name,)
        elif lb.health_checks and svc.external_local and svc.health_check_node_port:
            chosen = tuple(n for n in everyone if local_ready(svc, n) > 0)
        else:
            chosen = everyone
        for ip in (*svc.lb_ips, *svc.external_ips):
            out[ip] = chosen
    return out


def _pod_name(plan: Plan, ep: Endpoint) -> str:
    if ep.pod:
        return ep.pod
    return next((p.name for p in plan.pods if p.ip == ep.ip), ep.ip)


# -- fates ------------------------------------------------------------------------


def _fail(p: Fraction, outcome: str, node: str | None, why: str) -> Fate:
    return Fate(float(p), outcome, entry_node=node, why=why)


def _deliver(ctx: _Ctx, n: NodePlan, ep: Endpoint, masq: bool, p: Fraction, why: str) -> Fate:
    """The endpoint `ep` gets the packet after node `n` DNATed it (masqueraded or not)."""
    plan, src = ctx.plan, ctx.src
    serving = ep.node
    hairpin = src.ip == ep.ip
    pod = _pod_name(plan, ep)
    common = {"pod": pod, "entry_node": n.name, "serving_node": serving}
    if masq or hairpin:
        # MASQUERADE takes the address of the interface the packet leaves by.
        seen = n.gateway if serving == n.name else n.ip
        why += f", masqueraded to {seen}"
        if hairpin:
            why += " (hairpin: a pod reaching itself through a service is always masqueraded)"
        return Fate(
            float(p),
            DELIVERED,
            source_ip=seen,
            return_path=CORRECT,
            reply_from=ctx.aim,
            why=why,
            **common,
        )
    why += ", not masqueraded"
    src_node = src.node.name if src.node else None
    if serving == n.name or src_node == n.name:
        return Fate(
            float(p),
            DELIVERED,
            source_ip=src.ip,
            return_path=CORRECT,
            reply_from=ctx.aim,
            why=why,
            **common,
        )
    direct = f"{ep.ip}:{ep.port}"
    bypass = f"; {pod}'s reply goes straight back from {direct} and never passes {n.name}"
    if src.kind == "pod" and src_node != serving and ctx.mode == "iptables" and _tcp(ctx):
        why += bypass + f", so {src_node}'s KUBE-FORWARD drops it as conntrack INVALID"
        return Fate(float(p), DELIVERED, source_ip=src.ip, return_path=NONE, why=why, **common)
    return Fate(
        float(p),
        DELIVERED,
        source_ip=src.ip,
        return_path=BROKEN,
        reply_from=direct,
        why=why + bypass + ", so the source resets it",
        **common,
    )


def _tcp(ctx: _Ctx) -> bool:
    return ctx.probe.protocol.upper() == "TCP"


def _spread(
    ctx: _Ctx, n: NodePlan, eps: Sequence[Endpoint], masq: bool, p: Fraction, why: str
) -> list[Fate]:
    """kube-proxy's uniform random pick among `eps`."""
    return [_deliver(ctx, n, ep, masq, p / len(eps), why) for ep in eps]


def _cluster_ip_at(ctx: _Ctx, n: NodePlan, p: Fraction) -> list[Fate]:
    """ClusterIP traffic from a pod or a node, DNATed where it starts."""
    svc, port, proxy = ctx.svc, ctx.port, ctx.plan.proxy
    assert svc is not None and port is not None
    local_policy = svc.internal_policy == "Local"
    eps = usable(port.endpoints, n.name) if local_policy else usable(port.endpoints)
    if not eps:
        return [
            _fail(
                p,
                DROPPED,
                n.name,
                f"internalTrafficPolicy Local: {n.name} has no ready local endpoint for "
                f"{svc.key}, so kube-proxy drops the ClusterIP traffic",
            )
        ]
    detector = proxy.local_cidr(n)
    if ctx.no_snat and not local_policy:
        masq = False
    elif proxy.masquerade_all:
        masq = True
    else:
        masq = detector is not None and not _in(ctx.src.ip, detector)
    why = f"ClusterIP: {n.name} DNATs to one of {len(eps)} endpoint(s)"
    return _spread(ctx, n, eps, masq, p, why)


def _external_at(ctx: _Ctx, n: NodePlan, p: Fraction, what: str) -> list[Fate]:
    """NodePort / externalIP / LB traffic once it is at node `n` (kube-proxy's EXT chain)."""
    svc, port, proxy = ctx.svc, ctx.port, ctx.plan.proxy
    assert svc is not None and port is not None
    everyone = usable(port.endpoints)
    if not svc.external_local:
        masq = not ctx.no_snat
        why = f"{what} at {n.name}, externalTrafficPolicy Cluster: any endpoint"
        why += "" if masq else " (what-if no-snat)"
        return _spread(ctx, n, everyone, masq, p, why)
    from_pod = _in(ctx.src.ip, proxy.local_cidr(n))
    from_here = ctx.src.kind == "node" and ctx.src.node == n
    if from_pod:
        why = f"{what} at {n.name}, Local: pod traffic is short-circuited to every endpoint"
        return _spread(ctx, n, everyone, False, p, why)
    if from_here:
        why = f"{what} at {n.name}, Local: the node's own traffic goes to every endpoint"
        return _spread(ctx, n, everyone, True, p, why)
    local = usable(port.endpoints, n.name)
    if not local:
        return [
            _fail(
                p,
                DROPPED,
                n.name,
                f"{what} at {n.name}, externalTrafficPolicy Local: "
                f"{n.name} has no ready local endpoint for {svc.key}, so kube-proxy drops it",
            )
        ]
    why = f"{what} at {n.name}, externalTrafficPolicy Local: a local endpoint"
    return _spread(ctx, n, local, False, p, why)


def _vip_at(ctx: _Ctx, n: NodePlan, p: Fraction, vip: str, kind: str) -> list[Fate]:
    """An LB VIP or externalIP handled by node `n` (the edge's choice, or the source's node)."""
    svc, port = ctx.svc, ctx.port
    assert svc is not None and port is not None
    what = f"{kind} {vip}"
    filtered = kind == "LB IP" and bool(svc.source_ranges)
    allowed = any(_in(ctx.src.ip, r) for r in svc.source_ranges)
    blocked = _fail(
        p,
        DROPPED,
        n.name,
        f"{ctx.src.ip} is outside loadBalancerSourceRanges "
        f"({', '.join(svc.source_ranges)}), so {n.name} drops it",
    )
    if filtered and not allowed and ctx.mode == "nftables":
        return [blocked]  # nftables checks the ranges before DNAT, endpoints or not
    if not usable(port.endpoints):
        return [_no_endpoints(ctx, p, n.name)]
    if filtered and not allowed:
        return [blocked]
    return _external_at(ctx, n, p, what)


def _no_endpoints(ctx: _Ctx, p: Fraction, node: str | None) -> Fate:
    key = ctx.svc.key if ctx.svc else "the service"
    return _fail(p, REJECTED, node, f"{key} has no usable endpoint, so kube-proxy rejects it")


def _edge_rejects(p: Fraction, why: str) -> Fate:
    return _fail(p, REJECTED, None, why)


def _protocol_ok(ctx: _Ctx) -> bool:
    assert ctx.port is not None
    return ctx.port.protocol.upper() == ctx.probe.protocol.upper()


def _service_fates(ctx: _Ctx, via: str, node: NodePlan | None, lb_nodes) -> list[Fate]:
    """One service port reached one way."""
    svc, src, one = ctx.svc, ctx.src, Fraction(1)
    assert svc is not None and ctx.port is not None
    if via == "clusterIP":
        if src.kind == "client":
            return [_edge_rejects(one, NO_ROUTE_CLUSTER_IP)]
        if not _protocol_ok(ctx):
            return [_fail(one, REJECTED, None, "the ClusterIP does not serve that protocol")]
        if not usable(ctx.port.endpoints):
            return [_no_endpoints(ctx, one, src.node.name if src.node else None)]
        assert src.node is not None
        return _cluster_ip_at(ctx, src.node, one)
    if via == "nodePort":
        assert node is not None
        if not _protocol_ok(ctx):
            return [_fail(one, REJECTED, node.name, "nothing listens on that port and protocol")]
        if not usable(ctx.port.endpoints):
            return [_no_endpoints(ctx, one, node.name)]
        return _external_at(ctx, node, one, f"NodePort {ctx.aim}")
    # loadBalancer / externalIP
    vip = ctx.aim.rsplit(":", 1)[0]
    kind = "LB IP" if via == "loadBalancer" else "externalIP"
    if not _protocol_ok(ctx):
        return [
            _fail(
                one,
                REJECTED,
                None,
                f"no service answers on {kind} {vip} for that "
                "protocol; the packet loops until its TTL runs out",
            )
        ]
    if src.kind != "client":
        assert src.node is not None
        # kube-proxy catches VIPs where the packet starts (PREROUTING / OUTPUT of that node)
        return _vip_at(ctx, src.node, one, vip, kind)
    chosen = list(lb_nodes.get(vip, ()))
    if not chosen:
        return [_edge_rejects(one, f"the edge has no route to {vip} (no eligible node)")]
    share = one / len(chosen)
    fates: list[Fate] = []
    for name in chosen:
        fates += _vip_at(ctx, ctx.plan.node(name), share, vip, kind)
    return fates


def _served_ports(plan: Plan, pod: str) -> set[tuple[int, str]]:
    found = {(cp.port, cp.protocol.upper()) for cp in plan.pod(pod).ports}
    for svc in plan.services:
        for port in svc.ports:
            for ep in port.endpoints:
                if _pod_name(plan, ep) == pod:
                    found.add((ep.port, port.protocol.upper()))
    return found


def _service_by_address(
    plan: Plan, ip: str, port: int, protocol: str
) -> tuple[ServicePlan, PortPlan, str] | None:
    """A raw address that is really a service's ClusterIP, LB IP or externalIP."""
    for svc in plan.services:
        for sp in svc.ports:
            if sp.port != port or sp.protocol.upper() != protocol:
                continue
            if ip == svc.cluster_ip:
                return svc, sp, "clusterIP"
            if ip in svc.lb_ips and svc.type == "LoadBalancer":
                return svc, sp, "loadBalancer"
            if ip in svc.external_ips:
                return svc, sp, "externalIP"
    return None


def _node_port(plan: Plan, port: int, protocol: str) -> tuple[ServicePlan, PortPlan] | None:
    for svc in plan.services:
        for sp in svc.ports:
            if sp.node_port == port and sp.protocol.upper() == protocol:
                return svc, sp
    return None


def _raw_fates(ctx: _Ctx, lb_nodes) -> tuple[list[Fate], _Ctx]:
    """A raw address: decided by routing, unless it is really a service address."""
    plan, src, one = ctx.plan, ctx.src, Fraction(1)
    ip = ctx.aim.rsplit(":", 1)[0]
    port = int(ctx.probe.target.port or 0)
    proto = ctx.probe.protocol.upper()
    nobody = f"nothing listens on {ctx.aim} for {src.name}"
    nodeport = _node_port(plan, port, proto)

    if _in(ip, "127.0.0.0/8"):
        proxy = plan.proxy
        localhost_np = proxy.mode == "iptables" and proxy.localhost_nodeports
        if src.kind == "node" and nodeport and localhost_np:
            assert src.node is not None
            svc, sp = nodeport
            ctx = _Ctx(plan, ctx.probe, _Source("node", src.name, ip, src.node), ctx.aim, svc, sp)
            eps = usable(sp.endpoints)
            if not eps:
                return [_no_endpoints(ctx, one, src.node.name)], ctx
            why = f"localhost NodePort on {src.node.name} (route_localnet): every endpoint"
            return _spread(ctx, src.node, eps, True, one, why), ctx
        if src.kind == "node" and nodeport:
            why = (
                f"{nobody}: localhost NodePorts are off "
                f"({'nftables mode' if proxy.mode == 'nftables' else 'localhostNodePorts false'})"
            )
            return [_fail(one, REJECTED, src.node.name if src.node else None, why)], ctx
        return [_fail(one, REJECTED, None, nobody)], ctx

    for node in plan.nodes:
        if ip not in (node.ip, node.gateway):
            continue
        if ip == node.gateway and src.kind == "client":
            return [_edge_rejects(one, NO_ROUTE_POD)], ctx
        accepted = plan.proxy.node_port_ips(node)  # None: kube-proxy's default
        if accepted is None:  # iptables: every local address; nftables: the node IP
            np_here = nodeport and (ip == node.ip or plan.proxy.mode == "iptables")
        else:
            np_here = nodeport and ip in accepted
        if not np_here:
            return [_fail(one, REJECTED, node.name, nobody)], ctx
        svc, sp = nodeport
        ctx = _Ctx(plan, ctx.probe, src, ctx.aim, svc, sp)
        return _service_fates(ctx, "nodePort", node, lb_nodes), ctx

    for pod in plan.pods:
        if pod.ip != ip:
            continue
        if src.kind == "client":
            return [_edge_rejects(one, NO_ROUTE_POD)], ctx
        assert src.node is not None
        if (port, proto) not in _served_ports(plan, pod.name):
            return [_fail(one, REJECTED, None, f"{pod.name} does not serve {port}/{proto}")], ctx
        seen = src.ip
        if src.kind == "node" and pod.node == src.node.name:
            seen = src.node.gateway  # the route to a local pod leaves by its veth
        why = f"routed straight to {pod.name}, no NAT"
        return [
            Fate(1.0, DELIVERED, pod.name, seen, CORRECT, src.node.name, pod.node, ctx.aim, why)
        ], ctx

    found = _service_by_address(plan, ip, port, proto)
    if found:
        svc, sp, via = found
        ctx = _Ctx(plan, ctx.probe, src, ctx.aim, svc, sp)
        return _service_fates(ctx, via, None, lb_nodes), ctx

    if _in(ip, plan.network.service_cidr):
        if src.kind == "client":
            return [_edge_rejects(one, NO_ROUTE_CLUSTER_IP)], ctx
        allocated = any(s.cluster_ip == ip for s in plan.services)
        if plan.proxy.mode == "nftables" and not allocated:
            why = "nftables kube-proxy drops traffic to an unallocated ClusterIP"
            return [_fail(one, DROPPED, src.node.name if src.node else None, why)], ctx
        return [_fail(one, REJECTED, None, f"no service port answers on {ctx.aim}")], ctx
    return [_fail(one, REJECTED, None, nobody)], ctx


def _merge(fates: Iterable[Fate]) -> tuple[Fate, ...]:
    """Fates that differ only in probability are one fate."""
    total: dict[tuple, float] = {}
    first: dict[tuple, Fate] = {}
    for f in fates:
        key = (
            f.outcome,
            f.pod,
            f.source_ip,
            f.return_path,
            f.entry_node,
            f.serving_node,
            f.reply_from,
        )
        total[key] = total.get(key, 0.0) + f.probability
        first.setdefault(key, f)
    out = [replace(first[k], probability=total[k]) for k in first]
    return tuple(sorted(out, key=lambda f: (f.outcome, f.pod or "", f.entry_node or "")))


def predict(
    plan: Plan,
    probe: ProbePlan,
    lb_nodes: Mapping[str, Sequence[str]] | None = None,
    pin: conntrack.Pin | None = None,
) -> Prediction:
    """Every fate an attempt of `probe` can meet, with its probability.

    `lb_nodes` maps each LB VIP / externalIP to the nodes the edge sends it to now;
    without it, `default_lb_nodes(plan)` (health checks settled) is assumed. `pin`: where
    the last probe's flow from the same sourcePort went (verdict/conntrack.py).
    """
    src = _source(plan, probe.source)
    try:
        aim = targets.aim(plan, probe)
    except (LookupError, StopIteration) as exc:
        raise OracleError(f"probe {probe.name}: {exc}") from None
    ctx = _Ctx(plan, probe, src, aim.text, aim.service, aim.service_port)
    routes = default_lb_nodes(plan) if lb_nodes is None else lb_nodes
    notes: list[str] = []
    if probe.target.address:
        fates, ctx = _raw_fates(ctx, routes)
    else:
        svc = ctx.svc
        assert svc is not None
        via = probe.target.via
        node = None
        if via == "clusterIP" and not svc.cluster_ip:
            raise OracleError(f"probe {probe.name}: {svc.key} is headless (no ClusterIP)")
        if via == "nodePort":
            if not aim.service_port or not aim.service_port.node_port:
                raise OracleError(f"probe {probe.name}: {svc.key} has no NodePort")
            node = next(n for n in plan.nodes if n.ip == aim.ip)
        if via == "loadBalancer" and not svc.lb_ips:
            raise OracleError(f"probe {probe.name}: {svc.key} has no load-balancer IP")
        if via == "externalIP" and not svc.external_ips:
            raise OracleError(f"probe {probe.name}: {svc.key} has no externalIP")
        if via not in ("clusterIP", "nodePort", "loadBalancer", "externalIP"):
            raise OracleError(f"probe {probe.name}: unknown via {via!r}")
        fates = _service_fates(ctx, via, node, routes)
    if ctx.no_snat:
        notes.append("what-if no-snat: externalTrafficPolicy Cluster traffic is not masqueraded")
    predicted = Prediction(
        fates=_merge(fates),
        source=src.name,
        source_kind=src.kind,
        source_address=src.ip,
        target=ctx.aim,
        node_addresses=tuple((n.name, (n.ip, n.gateway)) for n in plan.nodes),
        sticky=bool(ctx.svc and ctx.svc.affinity_timeout is not None),
        notes=tuple(notes),
    )
    predicted = conntrack.follow(predicted, plan, probe, pin)
    return conntrack.out_of_window(predicted, plan, probe)
