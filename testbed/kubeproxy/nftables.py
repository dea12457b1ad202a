"""kube-proxy's nftables ruleset for one node, as one `nft -f` transaction.

The text mirrors what kube-proxy's nftables proxier (pkg/proxy/nftables) puts in
the `ip kube-proxy` table: same chains, sets, maps, priorities, chain names,
comments and rule order, so a user can set `nft list table ip kube-proxy` from
the lab next to a real node's. kube-proxy syncs incrementally; the lab has no
previous state to diff against, so the transaction deletes the table and
writes it whole. nft applies a file atomically, so loading it again swaps the
ruleset without a moment where packets see half of it.

Only IPv4 is rendered: the lab's address plan is IPv4.

From kube-proxy 1.36 on (`opts.version`), the proxier writes a leaner table with the
same verdicts: no endpoint chains unless the Service has session affinity (the service
chain DNATs by `numgen` map), hairpin traffic masqueraded by a `hairpin-connections`
set lookup, one ClusterIP masquerade rule in `services`, and marks set inline instead of
through `mark-for-masquerade`. `uses_hairpin_set` chooses the layout.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import re
from collections.abc import Sequence

from testbed.core.model import Endpoint, NodePlan, PortPlan, ProxyOptions, ServicePlan
from testbed.kubeproxy.endpoints import decide, endpoint_key

TABLE = "ip kube-proxy"
MASQ_MARK = "0x4000"  # 1 << masqueradeBit (14), printed as kube-proxy prints it
NO_SNAT = "no-snat"

# kube-proxy's limits: nft names are at most 256 bytes; prefixes take up to 16.
_NAME_LENGTH_MAX = 256
_CHAIN_BASE_LENGTH_MAX = _NAME_LENGTH_MAX - 16

_CHAIN = f"add chain {TABLE} "
_RULE = f"add rule {TABLE} "
_ELEMENT = f"add element {TABLE} "

MARK_MASQ = "mark-for-masquerade"
REJECT_CHAIN = "reject-chain"
_NO_SNAT_NOTE = "what-if no-snat: Cluster traffic is DNATed but not masqueraded"


@functools.lru_cache(maxsize=65536)
def hash_and_truncate(name: str) -> str:
    """kube-proxy's hashAndTruncate: 8 base32 chars of sha256, '-', the name."""
    digest = hashlib.sha256(name.encode()).digest()
    # the first 5 bytes are exactly the first 8 base32 characters of the whole digest
    name = base64.b32encode(digest[:5]).decode() + "-" + name
    if len(name) > _CHAIN_BASE_LENGTH_MAX:
        name = name[: _CHAIN_BASE_LENGTH_MAX - 3] + "..."
    return name


def service_chain_base(namespace: str, name: str, protocol: str, port_name: str) -> str:
    """servicePortChainNameBase, e.g. 'ULMVA6XW-ns1/svc1/tcp/p80'."""
    return hash_and_truncate(f"{namespace}/{name}/{protocol.lower()}/{port_name}")


def endpoint_chain_base(
    namespace: str, name: str, protocol: str, port_name: str, ip: str, port: int
) -> str:
    """servicePortEndpointChainNameBase, e.g. '5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80'."""
    ip = ip.replace(":", ".")
    return hash_and_truncate(f"{namespace}/{name}/{protocol.lower()}/{port_name}__{ip}/{port}")


def service_port_name(service: ServicePlan, port: PortPlan) -> str:
    """ServicePortName.String(): 'ns/name:port', or 'ns/name' for an unnamed port."""
    return f"{service.namespace}/{service.name}" + (f":{port.name}" if port.name else "")


def _at_least(opts: ProxyOptions, minor: int) -> bool:
    """opts.version is kube-proxy v1.`minor` or later (an unset version is not)."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", opts.version.strip())
    return bool(match) and (int(match.group(1)), int(match.group(2))) >= (1, minor)


def _before(opts: ProxyOptions, minor: int) -> bool:
    """opts.version is set and older than kube-proxy v1.`minor`."""
    return bool(opts.version.strip()) and not _at_least(opts, minor)


def uses_hairpin_set(opts: ProxyOptions) -> bool:
    """The 1.36+ layout: kube-proxy v1.36 or later (an unset version is the older one)."""
    return _at_least(opts, 36)


def _masq(opts: ProxyOptions) -> str:
    """What marks a packet for masquerade: a jump, or (1.36+) the mark set inline."""
    if uses_hairpin_set(opts):
        return f"mark set mark or {MASQ_MARK}"
    return f"jump {MARK_MASQ}"


def render(node: NodePlan, services: Sequence[ServicePlan], opts: ProxyOptions) -> str:
    """The whole `ip kube-proxy` table for `node`, recreated in one transaction."""
    out: list[str] = [
        "# kube-proxy nftables rules for " + node.name,
        # add + delete: deleting a table that is not there would fail the file.
        f"add table {TABLE}",
        f"delete table {TABLE}",
    ]
    _base(out, node, opts)
    local_cidr = opts.local_cidr(node)
    no_snat = NO_SNAT in opts.what_if
    hairpins: dict[str, None] = {}  # one element per local endpoint, in first-seen order
    for service in services:
        if service.cluster_ip is None:  # headless: kube-proxy ignores it
            continue
        for port in service.ports:
            _service_port(out, node, opts, local_cidr, no_snat, service, port, hairpins)
    out += [f"{_ELEMENT}hairpin-connections {{ {h} }}" for h in hairpins]
    out.append("")
    return "\n".join(out)


def _base(out: list[str], node: NodePlan, opts: ProxyOptions) -> None:
    """setupNFTables: table, base chains, dispatch chains, sets and maps."""
    out.append(f'add table {TABLE} {{ comment "rules for kube-proxy" ; }}')
    for chain, kind, hook, priority in (
        ("filter-prerouting-pre-dnat", "filter", "prerouting", -110),
        ("filter-output-pre-dnat", "filter", "output", -110),
        ("filter-input", "filter", "input", 0),
        ("filter-forward", "filter", "forward", 0),
        ("filter-output", "filter", "output", 0),
        ("nat-prerouting", "nat", "prerouting", -100),
        ("nat-output", "nat", "output", -100),
        ("nat-postrouting", "nat", "postrouting", 100),
    ):
        out.append(f"{_CHAIN}{chain} {{ type {kind} hook {hook} priority {priority} ; }}")

    made: set[str] = set()
    for dst, src, match in (
        ("nodeport-endpoints-check", "filter-input", "ct state new "),
        ("service-endpoints-check", "filter-input", "ct state new "),
        ("service-endpoints-check", "filter-forward", "ct state new "),
        ("service-endpoints-check", "filter-output", "ct state new "),
        ("firewall-check", "filter-prerouting-pre-dnat", "ct state new "),
        ("firewall-check", "filter-output-pre-dnat", "ct state new "),
        ("services", "nat-output", ""),
        ("services", "nat-prerouting", ""),
        ("masquerading", "nat-postrouting", ""),
        ("cluster-ips-check", "filter-forward", "ct state new "),
        ("cluster-ips-check", "filter-output", "ct state new "),
    ):
        if dst not in made:
            made.add(dst)
            out.append(_CHAIN + dst)
        out.append(f"{_RULE}{src} {match}jump {dst}")
    if uses_hairpin_set(opts):
        out += [
            f"add set {TABLE} hairpin-connections {{ type ipv4_addr . ipv4_addr . inet_proto"
            ' . inet_service ; comment "service hairpin connections" ; }',
            f"{_RULE}masquerading mark and {MASQ_MARK} != 0 mark set mark xor {MASQ_MARK}"
            " masquerade fully-random",
            f"{_RULE}masquerading ct status dnat ip saddr . ip daddr . meta l4proto . th dport"
            " @hairpin-connections masquerade fully-random",
        ]
    else:
        out.append(_CHAIN + MARK_MASQ)
        out += [
            f"{_RULE}{MARK_MASQ} mark set mark or {MASQ_MARK}",
            f"{_RULE}masquerading mark and {MASQ_MARK} == 0 return",
            f"{_RULE}masquerading mark set mark xor {MASQ_MARK}",
            f"{_RULE}masquerading masquerade fully-random",
        ]
    out += [
        f'add set {TABLE} cluster-ips {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}',
        f"{_RULE}cluster-ips-check ip daddr @cluster-ips reject"
        ' comment "Reject traffic to invalid ports of ClusterIPs"',
    ]
    service_cidrs = ",".join(c.strip() for c in opts.service_cidr.split(",") if c.strip())
    if service_cidrs:
        out.append(
            f"{_RULE}cluster-ips-check ip daddr {{ {service_cidrs} }} drop"
            ' comment "Drop traffic to unallocated ClusterIPs"'
        )
    # kube-proxy has no localhost NodePorts in nftables mode; its nodePortAddresses default
    # is the node IP ("primary").
    accepted = opts.node_port_ips(node)
    candidates = (node.ip,) if accepted is None else accepted
    node_ips = [ip for ip in candidates if not ip.startswith("127.")]
    out.append(
        f'add set {TABLE} nodeport-ips {{ type ipv4_addr ; comment "IPs that accept NodePort'
        ' traffic" ; }'
    )
    if node_ips:
        out.append(f"{_ELEMENT}nodeport-ips {{ {', '.join(node_ips)} }}")
    out += [
        f"add map {TABLE} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service"
        ' : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }',
        f"add map {TABLE} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ;"
        ' comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }',
        f"{_CHAIN}{REJECT_CHAIN}"
        ' { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }',
        f"{_RULE}{REJECT_CHAIN} reject",
        f"{_RULE}service-endpoints-check"
        " ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
        f"{_RULE}nodeport-endpoints-check"
        " ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
        f"add map {TABLE} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ;"
        ' comment "destinations that are subject to LoadBalancerSourceRanges" ; }',
        f"{_RULE}firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips",
        f"add map {TABLE} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ;"
        ' comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }',
        f"add map {TABLE} service-nodeports {{ type inet_proto . inet_service : verdict ;"
        ' comment "NodePort traffic" ; }',
        *_cluster_ip_masquerade(node, opts),
        f"{_RULE}services ip daddr . meta l4proto . th dport vmap @service-ips",
        f"{_RULE}services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
    ]


def _cluster_ip_masquerade(node: NodePlan, opts: ProxyOptions) -> list[str]:
    """1.36+: one rule in `services` masquerades what reaches any ClusterIP from off-cluster.

    The what-if fault `no-snat` leaves it out (the older layout leaves out each Cluster
    chain's rule; here there is one rule for every Service).
    """
    if not uses_hairpin_set(opts) or NO_SNAT in opts.what_if:
        return []
    mark = f"mark set mark or {MASQ_MARK}"
    if opts.masquerade_all:
        return [
            f"{_RULE}services ip daddr @cluster-ips {mark}"
            ' comment "masquerade all clusterIP traffic"'
        ]
    local_cidr = opts.local_cidr(node)
    if local_cidr is None:
        return []
    return [
        f"{_RULE}services ip daddr @cluster-ips ip saddr != {local_cidr} {mark}"
        ' comment "masquerade clusterIP traffic from outside cluster"'
    ]


def _service_port(
    out: list[str],
    node: NodePlan,
    opts: ProxyOptions,
    local_cidr: str | None,
    no_snat: bool,
    service: ServicePlan,
    port: PortPlan,
    hairpins: dict[str, None],
) -> None:
    """syncProxyRules' loop body for one service port, in kube-proxy's order."""
    d = decide(service, port, node.name)
    protocol = port.protocol.lower()
    name = service_port_name(service, port)
    base = service_chain_base(service.namespace, service.name, protocol, port.name)
    cluster_chain = "service-" + base
    local_chain = "local-" + base
    external_chain = "external-" + base
    firewall_chain = "firewall-" + base
    bases = {
        endpoint_key(e): endpoint_chain_base(
            service.namespace, service.name, protocol, port.name, e.ip, e.port
        )
        for e in d.reachable
    }
    internal_chain = local_chain if d.internal_local else cluster_chain
    external_policy_chain = local_chain if d.external_local else cluster_chain
    # Unlike iptables mode, the source-range check runs before DNAT, endpoints or not.
    uses_firewall = bool(d.lb_ips and d.source_ranges)
    affinity = service.affinity_timeout is not None
    internal_verdict = _verdict(d.internal_verdict)
    external_verdict = _verdict(d.external_verdict)
    svc_port = f"{protocol} . {port.port}"

    out.append(f"# {name} {protocol}")
    if service.health_check_node_port and d.external_local:
        out.append(
            f"# healthCheckNodePort {service.health_check_node_port}:"
            " answered by the health server; nftables mode writes no rule for it"
        )

    # The fault leaves the Cluster path unmasqueraded; these chains say so in a comment.
    skip_masq: set[str] = set()
    if no_snat:
        # only the Cluster chain, as in iptables mode: an iTP Local chain keeps its masquerade
        if (
            d.has_internal
            and internal_chain == cluster_chain
            and (opts.masquerade_all or local_cidr is not None)
        ):
            skip_masq.add(internal_chain)
        if d.uses_external_chain and not d.external_local:
            skip_masq.add(external_chain)

    def chain(chain_name: str) -> str:
        if chain_name in skip_masq:
            return f'{_CHAIN}{chain_name} {{ comment "{_NO_SNAT_NOTE}" ; }}'
        return _CHAIN + chain_name

    new_layout = uses_hairpin_set(opts)
    masq = _masq(opts)
    # 1.36+: endpoint chains only for session affinity; local endpoints join the hairpin set
    endpoint_chains = affinity or not new_layout
    if new_layout:
        for e in d.reachable:
            if e.node == node.name:
                hairpins.setdefault(f"{e.ip} . {e.ip} . {protocol} . {e.port}")

    # Chains first, so that every map element and goto below finds its target.
    if endpoint_chains:
        out += [_CHAIN + "endpoint-" + bases[endpoint_key(e)] for e in d.reachable]
    if d.cluster:
        out.append(chain(cluster_chain))
    if d.local:
        out.append(chain(local_chain))
    if d.uses_external_chain:
        out.append(chain(external_chain))
    if uses_firewall:
        out.append(_CHAIN + firewall_chain)

    # Map and set elements.
    cip = service.cluster_ip
    out.append(f"{_ELEMENT}cluster-ips {{ {cip} }}")
    if d.has_internal:
        out.append(f"{_ELEMENT}service-ips {{ {cip} . {svc_port} : goto {internal_chain} }}")
    else:
        out.append(
            f"{_ELEMENT}no-endpoint-services"
            f' {{ {cip} . {svc_port} comment "{name}" : {internal_verdict} }}'
        )
    for ip in d.external_ips:
        if d.has_endpoints:
            out.append(f"{_ELEMENT}service-ips {{ {ip} . {svc_port} : goto {external_chain} }}")
        if not d.has_external:
            out.append(
                f"{_ELEMENT}no-endpoint-services"
                f' {{ {ip} . {svc_port} comment "{name}" : {external_verdict} }}'
            )
    for ip in d.lb_ips:
        if d.has_endpoints:
            out.append(f"{_ELEMENT}service-ips {{ {ip} . {svc_port} : goto {external_chain} }}")
        if uses_firewall:
            out.append(f"{_ELEMENT}firewall-ips {{ {ip} . {svc_port} : goto {firewall_chain} }}")
    if not d.has_external:
        out += [
            f"{_ELEMENT}no-endpoint-services"
            f' {{ {ip} . {svc_port} comment "{name}" : {external_verdict} }}'
            for ip in d.lb_ips
        ]
    if d.node_port:
        if d.has_endpoints:
            out.append(
                f"{_ELEMENT}service-nodeports"
                f" {{ {protocol} . {d.node_port} : goto {external_chain} }}"
            )
        if not d.has_external:
            out.append(
                f"{_ELEMENT}no-endpoint-nodeports"
                f' {{ {protocol} . {d.node_port} comment "{name}" : {external_verdict} }}'
            )

    # Internal traffic: masquerade what reaches a ClusterIP from off-cluster (1.36+: in
    # `services`, for every ClusterIP at once).
    if d.has_internal and not new_layout:
        # up to 1.33 the rule also names the port
        dst = (
            f"ip daddr {cip} {protocol} dport {port.port}"
            if _before(opts, 34)
            else f"ip daddr {cip}"
        )
        if internal_chain in skip_masq:
            out.append(f"# {_NO_SNAT_NOTE} (ClusterIP masquerade rule left out)")
        elif opts.masquerade_all:
            out.append(f"{_RULE}{internal_chain} {dst} jump {MARK_MASQ}")
        elif local_cidr is not None:
            out.append(f"{_RULE}{internal_chain} {dst} ip saddr != {local_cidr} jump {MARK_MASQ}")

    # External traffic (NodePort, externalIPs, LB IPs).
    if d.uses_external_chain:
        if not d.external_local:
            if external_chain in skip_masq:
                out.append(f"# {_NO_SNAT_NOTE} (jump to {MARK_MASQ} left out)")
            else:
                note = ' comment "masquerade"' if new_layout else ""
                out.append(f"{_RULE}{external_chain} {masq}{note}")
        else:
            if local_cidr is not None:
                out.append(
                    f"{_RULE}{external_chain} ip saddr {local_cidr} goto {cluster_chain}"
                    ' comment "short-circuit pod traffic"'
                )
            out += [
                f"{_RULE}{external_chain} fib saddr type local {masq}"
                ' comment "masquerade local traffic"',
                f"{_RULE}{external_chain} fib saddr type local goto {cluster_chain}"
                ' comment "short-circuit local traffic"',
            ]
        if d.has_external:
            out.append(f"{_RULE}{external_chain} goto {external_policy_chain}")

    if uses_firewall:
        sources = list(d.source_ranges)
        node_ip = ipaddress.ip_address(node.ip)
        # A node reaching a VIP it holds locally loops back with the VIP as source.
        if any(node_ip in ipaddress.ip_network(s) for s in sources):
            sources += d.lb_ips
        out.append(f"{_RULE}{firewall_chain} ip saddr != {{ {' , '.join(sources)} }} drop")

    if affinity:
        out += [
            f"add set {TABLE} affinity-{bases[endpoint_key(e)]}"
            f" {{ type ipv4_addr ; flags dynamic,timeout ; timeout {service.affinity_timeout}s ; }}"
            for e in d.reachable
        ]

    # 1.37+: a single endpoint is DNATed to without a numgen map
    single = 37 if _at_least(opts, 37) else 0
    for chain_name, eps in ((cluster_chain, d.cluster), (local_chain, d.local)):
        if eps:
            _to_endpoints(out, chain_name, eps, bases, affinity, endpoint_chains, protocol, single)

    for e in d.reachable if endpoint_chains else ():
        key = endpoint_key(e)
        endpoint_chain = "endpoint-" + bases[key]
        # Hairpin: a pod reaching itself through the service must not see its own address.
        if not new_layout:
            out.append(f"{_RULE}{endpoint_chain} ip saddr {e.ip} jump {MARK_MASQ}")
        if affinity:
            out.append(f"{_RULE}{endpoint_chain} update @affinity-{bases[key]} {{ ip saddr }}")
        out.append(f"{_RULE}{endpoint_chain} meta l4proto {protocol} dnat to {key}")


def _verdict(decision: str | None) -> str:
    """The no-endpoint maps' verdicts for the shared REJECT/DROP decision."""
    return {"REJECT": f"goto {REJECT_CHAIN}", "DROP": "drop"}.get(decision or "", "")


def _to_endpoints(
    out: list[str],
    chain: str,
    endpoints: Sequence[Endpoint],
    bases: dict[str, str],
    affinity: bool,
    endpoint_chains: bool = True,
    protocol: str = "tcp",
    single: int = 0,
) -> None:
    """writeServiceToEndpointRules: affinity lookups, then one uniform numgen pick.

    Without endpoint chains (1.36+, no affinity), the pick is the DNAT itself
    (writeServiceToEndpointDNATs).
    """
    if not endpoint_chains and single and len(endpoints) == 1:
        out.append(f"{_RULE}{chain} meta l4proto {protocol} dnat to {endpoint_key(endpoints[0])}")
        return
    if not endpoint_chains:
        picks = " , ".join(f"{i} : {e.ip} . {e.port}" for i, e in enumerate(endpoints))
        out.append(
            f"{_RULE}{chain} meta l4proto {protocol} dnat ip addr . port to"
            f" numgen random mod {len(endpoints)} map {{ {picks} }}"
        )
        return
    names = ["endpoint-" + bases[endpoint_key(e)] for e in endpoints]
    if affinity:
        out += [
            f"{_RULE}{chain} ip saddr @affinity-{bases[endpoint_key(e)]} goto {n}"
            for e, n in zip(endpoints, names, strict=True)
        ]
    picks = " , ".join(f"{i} : goto {n}" for i, n in enumerate(names))
    out.append(f"{_RULE}{chain} numgen random mod {len(names)} vmap {{ {picks} }}")
