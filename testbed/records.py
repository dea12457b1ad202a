"""Plain records of what the probes saw; the judge reads only these.

The probing code writes them from captures and the pods' own answers; nothing
here imports Scapy or touches the kernel, so verdicts are testable without root.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

DELIVERED = "delivered"
DROPPED = "dropped"
REJECTED = "rejected"


@dataclass(frozen=True)
class Hop:
    """One packet of one attempt as one capture point saw it."""

    point: str  # e.g. "client/eth0", "node-2/eth0", "node-1/web-0", "web-0/eth0"
    src: str  # ip:port
    dst: str  # ip:port
    kind: str  # "syn", "syn-ack", "rst", "udp", "icmp-unreach", "data"
    at: float = 0.0  # seconds since the probe started


@dataclass(frozen=True)
class Attempt:
    """One connection or datagram of a probe, from sending to the last reply."""

    outcome: str  # delivered | dropped | rejected
    pod: str | None = None  # the pod that received it (capture at the pod's interface)
    source_ip: str | None = None  # source address as the pod saw it
    reply_from: str | None = None  # ip:port the client's reply came from; None: no reply
    return_path: str = "none"  # correct | broken | none
    client_reset: bool = False  # the source's kernel answered the reply with RST
    entry_node: str | None = None  # node that first handled it (DNAT point)
    serving_node: str | None = None  # node of the pod that received it
    dnat: str | None = None  # ip:port it was rewritten to, where seen
    snat: str | None = None  # source ip it was rewritten to, where seen
    server_view: str | None = None  # "ip:port" from the pod's own /clientip answer
    connect_ms: float | None = None  # handshake time (socket probes)
    rtt_ms: float | None = None  # request round-trip time (socket probes)
    hops: tuple[Hop, ...] = ()


@dataclass(frozen=True)
class Observation:
    probe: str
    attempts: tuple[Attempt, ...]
    source: str = ""  # probe source name
    source_address: str = ""  # its address
    target: str = ""  # ip:port the source aimed at
    notes: tuple[str, ...] = field(default=())

    @property
    def sent(self) -> int:
        return len(self.attempts)

    def count(self, outcome: str) -> int:
        return sum(1 for a in self.attempts if a.outcome == outcome)

    @property
    def pods(self) -> Counter[str]:
        return Counter(a.pod for a in self.attempts if a.pod)

    @property
    def source_ips(self) -> Counter[str]:
        return Counter(a.source_ip for a in self.attempts if a.source_ip)

    @property
    def return_path(self) -> str:
        """correct / broken when all replies agree, mixed when they differ, none if none came."""
        seen = {a.return_path for a in self.attempts if a.return_path != "none"}
        if not seen:
            return "none"
        if len(seen) == 1:
            return seen.pop()
        return "mixed"

    def as_report(self) -> dict:
        """The `observed` object of the JSON report (SCENARIO-FORMAT.md)."""
        return {
            "sent": self.sent,
            "delivered": self.count(DELIVERED),
            "dropped": self.count(DROPPED),
            "rejected": self.count(REJECTED),
            "pods": dict(sorted(self.pods.items())),
            "sourceIPs": dict(sorted(self.source_ips.items())),
            "returnPath": self.return_path,
        }
