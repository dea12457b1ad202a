"""Stale UDP conntrack entries, decided as kube-proxy decides them after a sync.

UDP has no handshake that ends: an entry keeps DNATing a client's datagrams to the
endpoint it first chose for as long as the client keeps sending (the UDP timeout is
refreshed by every datagram). When that endpoint goes away, the client is stuck on a
dead address until kube-proxy deletes the entry. This follows `CleanStaleEntries`
(pkg/proxy/conntrack/cleanup.go): for every UDP service port with serving endpoints,
an entry whose original destination is one of the service's IPs (ClusterIP, LB IPs,
externalIPs) and port, or whose original destination port is its NodePort, and whose
reply source is not a serving endpoint, is deleted. A service without serving
endpoints keeps its entries. Pure: it reads `conntrack -L` text and the plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from testbed.core.model import UDP, ProxyOptions, ServicePlan

NO_CONNTRACK_CLEANUP = "no-conntrack-cleanup"  # what-if: stale UDP entries stay
NO_INVALID_DROP = "no-invalid-drop"  # what-if: KUBE-FORWARD lets conntrack-INVALID through
BE_LIBERAL_SYSCTL = "net.netfilter.nf_conntrack_tcp_be_liberal"


def drops_invalid(opts: ProxyOptions) -> bool:
    """Whether the node drops conntrack-INVALID forwarded packets (KUBE-FORWARD).

    Only iptables mode writes the rule; kube-proxy leaves it out when it sets
    nf_conntrack_tcp_be_liberal (conntrack.tcpBeLiberal), and nftables mode has none.
    """
    return (
        opts.mode == "iptables" and not opts.tcp_be_liberal and NO_INVALID_DROP not in opts.what_if
    )


def cleans_conntrack(opts: ProxyOptions) -> bool:
    return NO_CONNTRACK_CLEANUP not in opts.what_if


@dataclass(frozen=True)
class Entry:
    """One conntrack entry: its original and reply tuples (addresses after NAT in reply)."""

    protocol: str  # "tcp" | "udp"
    src: str
    dst: str
    sport: int
    dport: int
    reply_src: str  # the DNAT target (the endpoint) when the entry was DNATed
    reply_sport: int
    reply_dst: str = ""  # the SNAT address the endpoint answers to, when masqueraded
    state: str = ""  # TCP state (ESTABLISHED, TIME_WAIT...)

    @property
    def dnat(self) -> str | None:
        """ip:port the entry rewrites the destination to; None when not DNATed."""
        if (self.reply_src, self.reply_sport) == (self.dst, self.dport):
            return None
        return f"{self.reply_src}:{self.reply_sport}"

    def text(self) -> str:
        out = f"{self.protocol} {self.src}:{self.sport} -> {self.dst}:{self.dport}"
        if self.dnat:
            out += f" DNAT {self.dnat}"
        if self.reply_dst and self.reply_dst != self.src:
            out += f" SNAT {self.reply_dst}"
        return out + (f" {self.state}" if self.state else "")


@dataclass(frozen=True)
class Filter:
    """What one deletion matches, as kube-proxy's filters (filterForIPPortNAT/PortNAT)."""

    reply_src: str
    dport: int
    dst: str | None = None  # None: any destination (a NodePort, on any node address)

    def argv(self) -> list[str]:
        """The `conntrack -D` arguments that delete the entries this filter matches."""
        out = ["conntrack", "-D", "-p", "udp", "--orig-port-dst", str(self.dport)]
        if self.dst is not None:
            out += ["--orig-dst", self.dst]
        return [*out, "--reply-src", self.reply_src]

    def matches(self, e: Entry) -> bool:
        return (
            e.protocol == "udp"
            and e.dport == self.dport
            and e.reply_src == self.reply_src
            and (self.dst is None or e.dst == self.dst)
        )


def parse(text: str) -> list[Entry]:
    """`conntrack -L` lines (any protocol) as entries; lines it cannot read are skipped."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or words[0] not in ("tcp", "udp"):
            continue
        fields: dict[str, list[str]] = {}
        for w in words:
            key, eq, value = w.partition("=")
            if eq:
                fields.setdefault(key, []).append(value)
        try:
            src, dst = fields["src"], fields["dst"]
            sport, dport = fields["sport"], fields["dport"]
            entry = Entry(
                protocol=words[0],
                src=src[0],
                dst=dst[0],
                sport=int(sport[0]),
                dport=int(dport[0]),
                reply_src=src[1],
                reply_sport=int(sport[1]),
                reply_dst=dst[1],
                state=words[3] if words[0] == "tcp" and words[3].isupper() else "",
            )
        except (KeyError, IndexError, ValueError):
            continue
        out.append(entry)
    return out


def _serving(services: Iterable[ServicePlan]):
    """(service IP:port -> serving endpoint IPs, NodePort -> serving endpoint IPs), UDP only."""
    by_address: dict[tuple[str, int], frozenset[str]] = {}
    by_node_port: dict[int, frozenset[str]] = {}
    for svc in services:
        for port in svc.ports:
            if port.protocol != UDP:
                continue
            ips = frozenset(ep.ip for ep in port.endpoints if ep.serving)
            if not ips:  # a service without endpoints keeps its entries
                continue
            for ip in (svc.cluster_ip, *svc.lb_ips, *svc.external_ips):
                if ip:
                    by_address[(ip, port.port)] = ips
            if port.node_port:
                by_node_port[port.node_port] = ips
    return by_address, by_node_port


def has_udp(services: Iterable[ServicePlan]) -> bool:
    """Whether any service port is UDP (kube-proxy cleans nothing otherwise)."""
    return any(port.protocol == UDP for svc in services for port in svc.ports)


def stale(services: Iterable[ServicePlan], entries: Iterable[Entry]) -> list[Filter]:
    """The deletions kube-proxy makes after a sync, one per stale entry, without repeats."""
    by_address, by_node_port = _serving(services)
    out: list[Filter] = []
    for e in entries:
        if e.protocol != "udp":
            continue
        ips = by_address.get((e.dst, e.dport))
        if ips is not None and e.reply_src not in ips:
            out.append(Filter(e.reply_src, e.dport, e.dst))
        ips = by_node_port.get(e.dport)
        if ips is not None and e.reply_src not in ips:
            out.append(Filter(e.reply_src, e.dport))
    return list(dict.fromkeys(out))
