"""Frames explained: what each hop saw of one attempt, turned into an Attempt record.

Pure: it reads frame records (frames.py) and what the sender saw (`Try`), so it is
tested without root on synthetic frames. The TCP handshake is followed across NAT by
its initial sequence number, a datagram by its IP id.
"""

from __future__ import annotations

import errno
import socket
import sys
from dataclasses import dataclass, field

from testbed.core.model import Plan
from testbed.core.records import DELIVERED, DROPPED, REJECTED, Attempt, Hop
from testbed.core.targets import Aim
from testbed.core.topology import EDGE
from testbed.kernel.frames import ACK, RST, SYN, Frame

REJECT_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET}


@dataclass
class Try:
    """One attempt as its sender saw it: socket, times, errno and the answer it read."""

    sock: socket.socket | None  # None for packet probes: no socket, just what was sent
    started: float
    local: tuple[str, int] = ("", 0)
    connected_at: float | None = None
    answered_at: float | None = None
    error: int = 0
    reply: bytes = b""
    done: bool = False
    sent: bool = False
    buffer: bytearray = field(default_factory=bytearray)
    isn: int | None = None  # packet probes: the sequence number we chose


class FrameIndex:
    """Frames grouped by the keys that survive NAT: TCP sequence numbers and IP ids."""

    def __init__(self, frames: list[Frame]) -> None:
        self.by_seq: dict[int, list[Frame]] = {}
        self.by_ack: dict[int, list[Frame]] = {}
        self.by_ipid: dict[int, list[Frame]] = {}
        self.by_sport: dict[tuple[str, int], list[Frame]] = {}
        self.icmp: list[Frame] = []
        self.udp_replies: dict[tuple[str, int], list[Frame]] = {}
        self.by_peer: dict[tuple[str, int], list[Frame]] = {}  # arriving SYNs and datagrams
        for f in frames:
            if f.proto == 6:
                self.by_seq.setdefault(f.seq, []).append(f)
                self.by_ack.setdefault(f.ack, []).append(f)
                self.by_sport.setdefault((f.point, f.sport), []).append(f)
            elif f.proto == 17:
                self.by_ipid.setdefault(f.ipid, []).append(f)
                self.by_sport.setdefault((f.point, f.sport), []).append(f)
                self.udp_replies.setdefault((f.point, f.dport), []).append(f)
            elif f.proto == 1:
                self.icmp.append(f)
            if not f.outgoing and (
                f.proto == 17 or (f.proto == 6 and f.flags & SYN and not f.flags & ACK)
            ):
                self.by_peer.setdefault((f.src, f.sport), []).append(f)


def _kind(f: Frame) -> str:
    if f.proto == 1:
        return "icmp-unreach"
    if f.proto == 17:
        return "udp"
    if f.flags & RST:
        return "rst"
    if f.flags & SYN:
        return "syn-ack" if f.flags & ACK else "syn"
    return "data"


def _hop(f: Frame, started: float) -> Hop:
    return Hop(
        f.point, f"{f.src}:{f.sport}", f"{f.dst}:{f.dport}", _kind(f), round(f.at - started, 6)
    )


def _seen_at_pod(index: FrameIndex, answer: bytes, pods_by_point: dict[str, str]) -> Frame | None:
    """The packet a pod received from the peer it reported (`ip:port` from /clientip)."""
    host, _, port = answer.decode(errors="replace").strip().rpartition(":")
    if not port.isdigit():
        return None
    seen = [f for f in index.by_peer.get((host, int(port)), []) if f.point in pods_by_point]
    return seen[0] if seen else None


def explain(
    t: Try,
    protocol: str,
    target: Aim,
    index: FrameIndex,
    source_point: str,
    pods_by_point: dict[str, str],
    nodes_by_point: dict[str, str],
    plan: Plan,
    source: str,
    started: float,
) -> Attempt:
    lport = t.local[1]
    mine = [f for f in index.by_sport.get((source_point, lport), []) if f.outgoing]
    first = next((f for f in mine if f.dst == target.ip and f.dport == target.port), None)
    # A node's own traffic is NATed in OUTPUT, before any interface sees it; then the pod's
    # own answer (the ip:port it saw) finds the packet at the pod, and the story from there.
    hidden = first is None and t.reply and source_point not in pods_by_point
    at_pod = _seen_at_pod(index, t.reply, pods_by_point) if hidden else None
    key = first or at_pod
    story: list[Frame] = []
    replies: list[Frame] = []
    if key is not None and protocol == "TCP":
        isn = key.seq
        story = [f for f in index.by_seq.get(isn, []) if f.flags & SYN and not f.flags & ACK]
        replies = [f for f in index.by_ack.get((isn + 1) & 0xFFFFFFFF, []) if f.flags & (SYN | RST)]
        resets = [
            f
            for f in index.by_seq.get((isn + 1) & 0xFFFFFFFF, [])
            if f.point == source_point and f.outgoing and f.flags & RST
        ]
    elif key is not None:
        story = [f for f in index.by_ipid.get(key.ipid, []) if f.payload == key.payload]
        replies = [f for f in index.udp_replies.get((source_point, lport), []) if not f.outgoing]
        resets = []
    else:
        resets = []
    icmp = [
        f
        for f in index.icmp
        if f.point == source_point and not f.outgoing and f.inner and f.inner[2] == lport
    ]
    edge_ports = {pt for pt in nodes_by_point if pt.startswith(f"{EDGE}/")}
    delivered = [f for f in story if f.point in pods_by_point and not f.outgoing]
    pod_frame = delivered[0] if delivered else None
    pod = pods_by_point[pod_frame.point] if pod_frame else None
    at_source = [f for f in replies if f.point == source_point and not f.outgoing]
    reply = at_source[0] if at_source else None
    reply_from = f"{reply.src}:{reply.sport}" if reply else None
    client_reset = bool(resets)
    if reply is not None and reply.proto == 6 and reply.flags & RST and not reply.flags & SYN:
        outcome = REJECTED if pod is None else DELIVERED
    elif pod is not None:
        outcome = DELIVERED
    elif icmp or t.error in REJECT_ERRNOS:
        outcome = REJECTED
    else:
        outcome = DROPPED
    if at_pod is not None:
        # frames at the source's own interface are pre-un-NAT here; what counts is that the
        # source's kernel took the answer for the address it dialled: the path is right
        reply_from = target.text
        return_path = "correct"
    else:
        return_path = (
            "none" if reply is None else "correct" if reply_from == target.text else "broken"
        )
    entry = next(
        (
            nodes_by_point[f.point]
            for f in story
            if f.point in nodes_by_point
            and f.point not in edge_ports
            and not f.outgoing
            and f.dst == target.ip
        ),
        None,
    )
    edge_node = next(
        (
            nodes_by_point[f.point]
            for f in story
            if f.point in edge_ports and f.outgoing and f.dst == target.ip
        ),
        None,
    )
    if not any(c.name == source for c in plan.clients):
        edge_node = None  # inside the cluster the fabric carries it; the edge chooses nothing
    if entry is None and pod is not None:
        src_pod = next((p for p in plan.pods if p.name == source), None)
        entry = src_pod.node if src_pod else (source if source in nodes_by_point.values() else None)
    serving = plan.pod(pod).node if pod else None
    source_ip = pod_frame.src if pod_frame else None
    dnat = (
        f"{pod_frame.dst}:{pod_frame.dport}"
        if pod_frame and (pod_frame.dst, pod_frame.dport) != (target.ip, target.port)
        else None
    )
    snat = pod_frame.src if pod_frame and first and pod_frame.src != first.src else None
    server_view = t.reply.decode(errors="replace").strip() or None if t.reply else None
    refused = bool(
        reply is not None and reply.proto == 6 and reply.flags & RST and not reply.flags & SYN
    ) or (t.error == errno.ECONNREFUSED and reply_from in (None, target.text))
    if t.sock is None:  # packet probes: the handshake's answer (or the datagram's) is all
        answered = reply is not None and reply_from == target.text and not refused
    else:
        answered = bool(t.reply) and (protocol == "UDP" or t.answered_at is not None)
    hops = tuple(
        _hop(f, started) for f in sorted([*story, *replies, *resets, *icmp], key=lambda f: f.at)
    )
    connect_ms = (t.connected_at - t.started) * 1000 if t.connected_at else None
    rtt_ms = (t.answered_at - (t.connected_at or t.started)) * 1000 if t.answered_at else None
    return Attempt(
        outcome=outcome,
        pod=_shared(pod),
        source_ip=_shared(source_ip),
        reply_from=_shared(reply_from),
        return_path=return_path,
        client_reset=client_reset,
        entry_node=_shared(entry),
        serving_node=_shared(serving),
        dnat=_shared(dnat),
        snat=_shared(snat),
        server_view=server_view,
        answered=answered,
        refused=refused,
        edge_node=edge_node,
        connect_ms=connect_ms,
        rtt_ms=rtt_ms,
        hops=hops,
    )


def _shared(text: str | None) -> str | None:
    """One copy of a value most attempts repeat (a pod, an address): a long probe's
    attempts then cost a few hundred bytes each."""
    return None if text is None else sys.intern(text)
