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
# How an attempt ended for the source, exactly one each (Attempt.end):
COMPLETED = "completed"  # answered from the address and port aimed at
BROKEN = "broken"  # reached a pod, but the source got no proper answer from what it aimed at
ENDS = (COMPLETED, BROKEN, REJECTED, DROPPED)
# Who reported the source address a pod saw (Observation.source_ips_by)
BY_ANSWER = "answer"  # the pod's own /clientip answer, received by the source
BY_CAPTURE = "capture"  # only the capture at the pod's interface


@dataclass(frozen=True, slots=True)
class Hop:
    """One packet of one attempt as one capture point saw it."""

    point: str  # e.g. "client/eth0", "node-2/eth0", "node-1/web-0", "web-0/eth0"
    src: str  # ip:port
    dst: str  # ip:port
    kind: str  # "syn", "syn-ack", "rst", "udp", "icmp-unreach", "data"
    at: float = 0.0  # seconds since the probe started


@dataclass(frozen=True, slots=True)
class Attempt:
    """One connection or datagram of a probe, from sending to the last reply."""

    outcome: str  # delivered (reached a pod) | dropped | rejected
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
    # TCP: the handshake completed with the address aimed at and the request was answered
    # (packet probes: the SYN-ACK came from it); UDP: the answer came back from it
    answered: bool = False
    refused: bool = False  # the address aimed at answered with a RST (nothing listened)
    edge_node: str | None = None  # node the edge sent it to (seen leaving the edge)
    connect_ms: float | None = None  # handshake time (socket probes)
    rtt_ms: float | None = None  # request round-trip time (socket probes)
    hops: tuple[Hop, ...] = ()  # kept for a sample only (probe.HOPS_KEPT): memory stays flat

    @property
    def end(self) -> str:
        """completed | broken | rejected | dropped: what the source's user experienced.

        `outcome` says how far the packet got; a delivered attempt whose reply came from
        elsewhere (and was reset or ignored) or never came is broken, not completed.
        """
        if self.outcome != DELIVERED:
            return self.outcome
        if self.answered and self.return_path == "correct":
            return COMPLETED
        if self.refused:
            return REJECTED
        return BROKEN

    @property
    def source_ip_by(self) -> str | None:
        """Whether the pod's own answer reported `source_ip`, or only a capture saw it."""
        if not self.source_ip:
            return None
        said = (self.server_view or "").rpartition(":")[0]
        return BY_ANSWER if self.answered and said == self.source_ip else BY_CAPTURE


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

    def ended(self, end: str) -> int:
        return sum(1 for a in self.attempts if a.end == end)

    @property
    def pods(self) -> Counter[str]:
        return Counter(a.pod for a in self.attempts if a.pod)

    @property
    def source_ips(self) -> Counter[str]:
        return Counter(a.source_ip for a in self.attempts if a.source_ip)

    @property
    def source_ips_by(self) -> dict[str, dict[str, int]]:
        """Each source address a pod saw: how often its own answer said so, how often only
        the capture at its interface saw it."""
        out: dict[str, dict[str, int]] = {}
        for a in self.attempts:
            if a.source_ip and (by := a.source_ip_by):
                row = out.setdefault(a.source_ip, {BY_ANSWER: 0, BY_CAPTURE: 0})
                row[by] += 1
        return dict(sorted(out.items()))

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
            "completed": self.ended(COMPLETED),
            "broken": self.ended(BROKEN),
            "delivered": self.count(DELIVERED),
            "dropped": self.count(DROPPED),
            "rejected": self.count(REJECTED),
            "pods": dict(sorted(self.pods.items())),
            "sourceIPs": dict(sorted(self.source_ips.items())),
            "sourceIPsBy": self.source_ips_by,
            "returnPath": self.return_path,
        }
