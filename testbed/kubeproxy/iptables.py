"""The iptables-restore text kube-proxy's iptables proxier would load on one node.

This mirrors `syncProxyRules` and `writeServiceToEndpointRules` in
pkg/proxy/iptables/proxier.go: same chains, same hashed names, same rule text
and comments, same order of rules inside each chain, so the lab's
`iptables-save` can be put next to a real node's. Differences, all deliberate:

- The node namespace holds nothing but kube-proxy's rules, so the text is a
  full restore of `filter` and `nat`: it declares the built-in chains and
  carries the jump rules that kube-proxy installs one by one (`EnsureRule`,
  prepended in `iptablesJumpChains` order, then the kubelet KUBE-FIREWALL
  jumps). KUBE-FIREWALL is declared even when it stays empty, as EnsureChain
  leaves it on a real node.
- MASQUERADE always carries --random-fully (the iptables here supports it).
- No nfacct counters (kube-proxy also leaves them out when the kernel has no
  nfacct), no canary chains, no stale-chain deletion (a full restore has none).
- Services are written sorted by service port name, not in map order.
- `"no-snat" in opts.what_if` removes the Cluster-path masquerade on purpose.
- the conntrack-INVALID drop in KUBE-FORWARD is left out with conntrack.tcpBeLiberal (as
  kube-proxy does) and by the what-if fault `no-invalid-drop`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from testbed.core.model import Endpoint, NodePlan, PortPlan, ProxyOptions, ServicePlan
from testbed.kubeproxy import names
from testbed.kubeproxy.conntrack import drops_invalid
from testbed.kubeproxy.endpoints import PortDecision, decide, endpoint_key

MASQ_MARK = "0x4000"  # 1 << masqueradeBit (14)
LARGE_CLUSTER_ENDPOINTS = 1000  # largeClusterEndpointsThreshold: above it, fewer comments

_NEW = "-m conntrack --ctstate NEW"
_EXTERNAL = "kubernetes externally-visible service portals"
_PORTALS = "kubernetes service portals"
_LB_FIREWALL = "kubernetes load balancer firewall"

# (table, from chain, to chain, comment, extra match) in iptablesJumpChains order,
# followed by iptablesKubeletJumpChains.
_JUMPS: tuple[tuple[str, str, str, str, str], ...] = (
    ("filter", "INPUT", "KUBE-EXTERNAL-SERVICES", _EXTERNAL, _NEW),
    ("filter", "FORWARD", "KUBE-EXTERNAL-SERVICES", _EXTERNAL, _NEW),
    ("filter", "INPUT", "KUBE-NODEPORTS", "kubernetes health check service ports", ""),
    ("filter", "FORWARD", "KUBE-SERVICES", _PORTALS, _NEW),
    ("filter", "OUTPUT", "KUBE-SERVICES", _PORTALS, _NEW),
    ("filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules", ""),
    ("filter", "INPUT", "KUBE-PROXY-FIREWALL", _LB_FIREWALL, _NEW),
    ("filter", "OUTPUT", "KUBE-PROXY-FIREWALL", _LB_FIREWALL, _NEW),
    ("filter", "FORWARD", "KUBE-PROXY-FIREWALL", _LB_FIREWALL, _NEW),
    ("nat", "OUTPUT", "KUBE-SERVICES", _PORTALS, ""),
    ("nat", "PREROUTING", "KUBE-SERVICES", _PORTALS, ""),
    ("nat", "POSTROUTING", "KUBE-POSTROUTING", "kubernetes postrouting rules", ""),
    ("filter", "INPUT", "KUBE-FIREWALL", "", ""),
    ("filter", "OUTPUT", "KUBE-FIREWALL", "", ""),
)

_BUILTIN = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}


@lru_cache(maxsize=1 << 16)
def _port_hash(service_port_name: str, protocol: str) -> str:
    """Computed once per service port, as servicePortInfo stores its chain names."""
    return names.port_proto_hash(service_port_name, protocol)


@lru_cache(maxsize=1 << 18)
def _sep_chain(service_port_name: str, protocol: str, endpoint: str) -> str:
    """Computed once per endpoint, as endpointInfo stores its ChainName."""
    return names.sep_chain(service_port_name, protocol, endpoint)


def compute_probability(n: int) -> str:
    """computeProbability: 1/n printed with 10 decimals (Go's %0.10f rounds the same way)."""
    return f"{1.0 / n:.10f}"


def _jump_rules(table: str) -> list[str]:
    """The built-in chains' jumps, in the order repeated prepending leaves them."""
    by_chain: dict[str, list[str]] = {chain: [] for chain in _BUILTIN[table]}
    for tbl, src, dst, comment, extra in _JUMPS:
        if tbl != table:
            continue
        parts = ["-A", src]
        if extra:
            parts.append(extra)
        if comment:
            parts.append(f'-m comment --comment "{comment}"')
        parts.append(f"-j {dst}")
        by_chain[src].insert(0, " ".join(parts))
    return [rule for chain in _BUILTIN[table] for rule in by_chain[chain]]


@dataclass
class _Out:
    """The four line buffers of syncProxyRules (chain lines kept apart from rules)."""

    filter_chains: list[str] = field(default_factory=list)
    filter_rules: list[str] = field(default_factory=list)
    nat_chains: list[str] = field(default_factory=list)
    nat_rules: list[str] = field(default_factory=list)


def _write_endpoint_jumps(
    out: _Out,
    name: str,
    chain: str,
    endpoints: Sequence[Endpoint],
    sep: dict[int, tuple[str, str]],
    affinity: int | None,
    large: bool,
) -> None:
    """writeServiceToEndpointRules: affinity checks first, then the random pick."""
    rules = out.nat_rules
    if affinity is not None:
        for ep in endpoints:
            key, target = sep[id(ep)]
            comment = "" if large else f' -m comment --comment "{name} -> {key}"'
            rules.append(
                f"-A {chain}{comment} -m recent --name {target} --rcheck"
                f" --seconds {affinity} --reap -j {target}"
            )
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        key, target = sep[id(ep)]
        comment = "" if large else f' -m comment --comment "{name} -> {key}"'
        pick = (
            f" -m statistic --mode random --probability {compute_probability(n - i)}"
            if i < n - 1
            else ""
        )
        rules.append(f"-A {chain}{comment}{pick} -j {target}")


def _write_port(
    out: _Out,
    node: NodePlan,
    svc: ServicePlan,
    port: PortPlan,
    opts: ProxyOptions,
    local_cidr: str | None,
    large: bool,
) -> None:
    """One pass of the per-service-port loop of syncProxyRules."""
    d: PortDecision = decide(svc, port, node.name)
    proto = port.protocol.lower()
    name = svc.port_name(port)
    digest = _port_hash(name, proto)
    svc_chain, svl_chain = "KUBE-SVC-" + digest, "KUBE-SVL-" + digest
    ext_chain, fw_chain = "KUBE-EXT-" + digest, "KUBE-FW-" + digest
    no_snat = "no-snat" in opts.what_if

    cluster_chain = svc_chain
    internal_chain = svl_chain if d.internal_local else svc_chain
    external_policy_chain = svl_chain if d.external_local else svc_chain
    lb_chain = fw_chain if d.uses_firewall_chain else ext_chain
    l4 = f"-m {proto} -p {proto}"
    cip = f"-d {svc.cluster_ip} --dport {port.port}"

    internal_verdict, external_verdict = d.internal_verdict, d.external_verdict
    why = "has no endpoints" if not d.has_endpoints else "has no local endpoints"
    verdict_comment = f'"{name} {why}"'

    filter_rules, nat_chains, nat_rules = out.filter_rules, out.nat_chains, out.nat_rules

    # Capture the clusterIP.
    if d.has_internal:
        nat_rules.append(
            f'-A KUBE-SERVICES -m comment --comment "{name} cluster IP" {l4} {cip}'
            f" -j {internal_chain}"
        )
    else:
        filter_rules.append(
            f"-A KUBE-SERVICES -m comment --comment {verdict_comment} {l4} {cip}"
            f" -j {internal_verdict}"
        )

    # Capture externalIPs.
    for ip in d.external_ips:
        dst = f"-d {ip} --dport {port.port}"
        if d.has_endpoints:
            nat_rules.append(
                f'-A KUBE-SERVICES -m comment --comment "{name} external IP" {l4} {dst}'
                f" -j {ext_chain}"
            )
        if external_verdict:
            filter_rules.append(
                f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {verdict_comment} {l4} {dst}"
                f" -j {external_verdict}"
            )

    # Capture load-balancer ingress.
    for ip in d.lb_ips:
        dst = f"-d {ip} --dport {port.port}"
        if d.has_endpoints:
            nat_rules.append(
                f'-A KUBE-SERVICES -m comment --comment "{name} loadbalancer IP" {l4} {dst}'
                f" -j {lb_chain}"
            )
        if d.uses_firewall_chain:
            filter_rules.append(
                f'-A KUBE-PROXY-FIREWALL -m comment --comment "{name} traffic not accepted by'
                f' {fw_chain}" {l4} {dst} -j DROP'
            )
    if external_verdict:
        for ip in d.lb_ips:
            filter_rules.append(
                f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {verdict_comment} {l4}"
                f" -d {ip} --dport {port.port} -j {external_verdict}"
            )

    # Capture nodeports (never subject to loadBalancerSourceRanges).
    if d.node_port:
        if d.has_endpoints:
            nat_rules.append(
                f"-A KUBE-NODEPORTS -m comment --comment {name} {l4} --dport {d.node_port}"
                f" -j {ext_chain}"
            )
        if external_verdict:
            filter_rules.append(
                f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {verdict_comment}"
                f" -m addrtype --dst-type LOCAL {l4} --dport {d.node_port} -j {external_verdict}"
            )

    # healthCheckNodePort: kube-proxy only has one for LoadBalancer + eTP Local.
    if svc.health_check_node_port and svc.type == "LoadBalancer" and d.external_local:
        filter_rules.append(
            f'-A KUBE-NODEPORTS -m comment --comment "{name} health check node port"'
            f" -m tcp -p tcp --dport {svc.health_check_node_port} -j ACCEPT"
        )

    # Internal traffic: masquerade off-cluster sources reaching the ClusterIP.
    if d.has_internal:
        masq = f'-A {internal_chain} -m comment --comment "{name} cluster IP" {l4} {cip}'
        # Deliberate fault ("no-snat"): off-cluster clients of the ClusterIP keep their
        # address, so replies from a pod on another node bypass this node's conntrack.
        if no_snat and internal_chain == svc_chain:
            pass
        elif opts.masquerade_all:
            nat_rules.append(f"{masq} -j KUBE-MARK-MASQ")
        elif local_cidr:
            nat_rules.append(f"{masq} ! -s {local_cidr} -j KUBE-MARK-MASQ")

    # External destinations all go through the EXT chain.
    if d.uses_external_chain:
        nat_chains.append(f":{ext_chain} - [0:0]")
        if not d.external_local:
            # Deliberate fault ("no-snat"): eTP Cluster traffic is DNATed to pods on any
            # node without the masquerade that makes replies come back through this node.
            if not no_snat:
                nat_rules.append(
                    f'-A {ext_chain} -m comment --comment "masquerade traffic for {name}'
                    f' external destinations" -j KUBE-MARK-MASQ'
                )
        else:
            if local_cidr:
                nat_rules.append(
                    f'-A {ext_chain} -m comment --comment "pod traffic for {name} external'
                    f' destinations" -s {local_cidr} -j {cluster_chain}'
                )
            nat_rules.append(
                f'-A {ext_chain} -m comment --comment "masquerade LOCAL traffic for {name}'
                f' external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ'
            )
            nat_rules.append(
                f'-A {ext_chain} -m comment --comment "route LOCAL traffic for {name}'
                f' external destinations" -m addrtype --src-type LOCAL -j {cluster_chain}'
            )
        if d.has_external:
            nat_rules.append(f"-A {ext_chain} -j {external_policy_chain}")

    # loadBalancerSourceRanges.
    if d.uses_firewall_chain:
        nat_chains.append(f":{fw_chain} - [0:0]")
        head = f'-A {fw_chain} -m comment --comment "{name} loadbalancer IP"'
        allow_from_node = False
        for cidr in d.source_ranges:
            nat_rules.append(f"{head} -s {cidr} -j {ext_chain}")
            allow_from_node = allow_from_node or _contains(cidr, node.ip)
        if allow_from_node:
            # Node-to-VIP traffic loops back with the VIP as its source.
            for ip in d.lb_ips:
                nat_rules.append(f"{head} -s {ip} -j {ext_chain}")
        nat_rules.append(
            f'-A {fw_chain} -m comment --comment "other traffic to {name} will be dropped by'
            f' KUBE-PROXY-FIREWALL"'
        )

    # endpoint (by identity: the decision's lists share objects) -> (ip:port, KUBE-SEP chain)
    sep: dict[int, tuple[str, str]] = {}
    for ep in d.reachable:
        key = endpoint_key(ep)
        sep[id(ep)] = (key, _sep_chain(name, proto, key))
    if d.cluster:
        nat_chains.append(f":{svc_chain} - [0:0]")
        _write_endpoint_jumps(out, name, svc_chain, d.cluster, sep, svc.affinity_timeout, large)
    if d.local:
        nat_chains.append(f":{svl_chain} - [0:0]")
        _write_endpoint_jumps(out, name, svl_chain, d.local, sep, svc.affinity_timeout, large)

    # Per-endpoint chains.
    comment = "" if large else f" -m comment --comment {name}"
    for ep in d.reachable:
        key, chain = sep[id(ep)]
        nat_chains.append(f":{chain} - [0:0]")
        nat_rules.append(f"-A {chain}{comment} -s {ep.ip} -j KUBE-MARK-MASQ")
        recent = f" -m recent --name {chain} --set" if svc.affinity_timeout is not None else ""
        nat_rules.append(f"-A {chain}{comment}{recent} {l4} -j DNAT --to-destination {key}")


def _contains(cidr: str, ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def render(node: NodePlan, services: Sequence[ServicePlan], opts: ProxyOptions) -> str:
    """Full `iptables-restore` input (filter, then nat, as kube-proxy writes them)."""
    local_cidr = opts.local_cidr(node)
    ports = sorted(
        ((svc, port) for svc in services if svc.cluster_ip for port in svc.ports),
        key=lambda sp: (sp[0].port_name(sp[1]), sp[1].protocol),
    )
    large = sum(len(port.endpoints) for _, port in ports) > LARGE_CLUSTER_ENDPOINTS

    out = _Out()
    out.filter_chains.extend(
        f":{c} - [0:0]"
        for c in (
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-FORWARD",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL",
            "KUBE-FIREWALL",  # always jumped to, so always declared; filled below
        )
    )
    out.nat_chains.extend(
        f":{c} - [0:0]"
        for c in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")
    )
    out.nat_rules += [
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT"'
        " -j MASQUERADE --random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    ]
    if opts.localhost_nodeports:
        # route_localnet makes 127.0.0.1:NodePort work; this closes the hole it opens.
        out.filter_rules.append(
            '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections"'
            " -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT"
            " -j DROP"
        )

    for svc, port in ports:
        _write_port(out, node, svc, port, opts, local_cidr, large)

    last = (
        "-A KUBE-SERVICES -m comment --comment"
        ' "kubernetes service nodeports; NOTE: this must be the last rule in this chain"'
    )
    node_ips = opts.node_port_ips(node)
    if node_ips is None:  # nodePortAddresses unset: every local address
        nodeports = "-m addrtype --dst-type LOCAL"
        if not opts.localhost_nodeports:
            nodeports += " ! -d 127.0.0.0/8"
        out.nat_rules.append(f"{last} {nodeports} -j KUBE-NODEPORTS")
    for ip in node_ips or ():
        if ip.startswith("127.") and not opts.localhost_nodeports:
            continue
        out.nat_rules.append(f"{last} -d {ip} -j KUBE-NODEPORTS")
    if drops_invalid(opts):
        out.filter_rules.append("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP")
    out.filter_rules += [
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules"'
        f" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule"'
        " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]

    lines = ["*filter"]
    lines += [f":{c} ACCEPT [0:0]" for c in _BUILTIN["filter"]]
    lines += out.filter_chains
    lines += _jump_rules("filter")
    lines += out.filter_rules
    lines += ["COMMIT", "*nat"]
    lines += [f":{c} ACCEPT [0:0]" for c in _BUILTIN["nat"]]
    lines += out.nat_chains
    lines += _jump_rules("nat")
    lines += out.nat_rules
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
