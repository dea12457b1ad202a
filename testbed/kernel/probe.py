"""Send real traffic from a lab namespace and read what every hop saw.

Each attempt is a real connection (TCP connect + `GET /clientip`) or datagram
(UDP `clientip`) from a socket made inside the source's namespace, so the
source's own kernel, conntrack and routes handle it. Captures at every hop
(capture.py) then tell the story: the TCP handshake is followed across NAT by
its initial sequence number, a datagram by its IP id. The pod's own answer
(`ip:port` it saw) is kept beside the captures: the report shows both.
"""

from __future__ import annotations

import errno
import os
import random
import resource
import selectors
import socket
import time
from dataclasses import dataclass, field

from testbed.core.model import Plan, ProbePlan
from testbed.core.records import DELIVERED, DROPPED, REJECTED, Attempt, Hop, Observation
from testbed.core.targets import Aim, aim, source_address
from testbed.core.topology import EDGE, Wiring
from testbed.kernel import netns
from testbed.kernel.capture import ACK, RST, SYN, Capture, Frame, Point

REJECT_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET}
DEFAULT_TIMEOUT = 1.0
PACKET_BATCH = 5000  # packet probes: source ports drawn without repeats within a batch
PACKET_PORTS = (20000, 60000)
BATCH = 1000  # attempts in flight at once; more only fill a listen backlog


def capture_points(plan: Plan, wiring: Wiring) -> list[Point]:
    """Client and node fabric interfaces, the edge's port towards each node (where a
    packet leaves once the edge has chosen its node), and every pod's own interface."""
    points = [Point(wiring.ns(c.name), "eth0", f"{c.name}/eth0") for c in plan.clients]
    points += [Point(wiring.ns(EDGE), n.name, f"{EDGE}/{n.name}") for n in plan.nodes]
    points += [Point(wiring.ns(n.name), "eth0", f"{n.name}/eth0") for n in plan.nodes]
    points += [Point(wiring.ns(p.name), "eth0", f"{p.name}/eth0") for p in plan.pods]
    return points


@dataclass
class _Try:
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


def _open_tcp(ns: str, target: Aim, count: int) -> list[_Try]:
    tries = []
    with netns.entered(ns):
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            # no SYN retries: one SYN per attempt, so each attempt is one packet story
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            started = time.monotonic()
            code = sock.connect_ex((target.ip, target.port))
            t = _Try(sock, started, sock.getsockname())
            if code not in (0, errno.EINPROGRESS):
                t.error, t.done = code, True
            tries.append(t)
    return tries


def _open_udp(ns: str, target: Aim, count: int) -> list[_Try]:
    tries = []
    with netns.entered(ns):
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect((target.ip, target.port))  # connected: ICMP errors reach us
            t = _Try(sock, time.monotonic(), sock.getsockname())
            try:
                sock.send(b"clientip")
                t.sent = True
            except OSError as exc:
                t.error, t.done = exc.errno or 0, True
            tries.append(t)
    return tries


def _drive(tries: list[_Try], protocol: str, timeout: float, host_header: str) -> None:
    """One selector loop for every attempt of a probe, until answered or timed out."""
    sel = selectors.DefaultSelector()
    for t in tries:
        if not t.done:
            events = selectors.EVENT_READ if protocol == "UDP" else selectors.EVENT_WRITE
            sel.register(t.sock, events, t)
    deadline = time.monotonic() + timeout
    request = f"GET /clientip HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode()
    pending = sum(1 for t in tries if not t.done)
    while pending and time.monotonic() < deadline:
        for key, mask in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            t: _Try = key.data
            try:
                if protocol == "UDP":
                    t.reply = t.sock.recv(2048)
                    t.answered_at = time.monotonic()
                    t.done = True
                elif mask & selectors.EVENT_WRITE and t.connected_at is None:
                    err = t.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        t.error, t.done = err, True
                    else:
                        t.connected_at = time.monotonic()
                        t.sock.send(request)
                        sel.modify(t.sock, selectors.EVENT_READ, t)
                        continue
                else:
                    chunk = t.sock.recv(4096)
                    t.buffer += chunk
                    if not chunk or _complete(bytes(t.buffer)):
                        t.answered_at = time.monotonic()
                        t.reply = _body(bytes(t.buffer))
                        t.done = True
            except OSError as exc:
                t.error, t.done = exc.errno or 0, True
            if t.done:
                sel.unregister(t.sock)
                pending -= 1
    sel.close()


def _send_packets(ns: str, target: Aim, protocol: str, count: int, src: str) -> list[_Try]:
    """Scapy-built SYNs (or `clientip` datagrams), one new source port each, sent raw.

    The source's kernel knows none of these ports, so it answers a SYN-ACK with a RST:
    the handshake's replies are all the capture needs to tell the story.
    """
    from scapy.layers.inet import IP, TCP, UDP  # only here: Scapy is slow to import

    ports = random.sample(range(PACKET_PORTS[0], PACKET_PORTS[1]), count)
    tries = []
    sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        for sport in ports:
            isn = random.getrandbits(32)
            head = IP(src=src, dst=target.ip)
            if protocol == "UDP":
                packet = head / UDP(sport=sport, dport=target.port) / b"clientip"
            else:
                packet = head / TCP(
                    sport=sport, dport=target.port, flags="S", seq=isn, options=[("MSS", 1460)]
                )
            t = _Try(None, time.monotonic(), (src, sport), isn=isn)
            try:
                sock.sendto(bytes(packet), (target.ip, 0))
                t.sent = True
            except OSError as exc:
                t.error, t.done = exc.errno or 0, True
            tries.append(t)
    finally:
        sock.close()
    return tries


def _await_packets(
    capture: Capture, tries: list[_Try], source_point: str, since: float, timeout: float
) -> None:
    """Wait until every packet probe has an answer at its source, or the timeout."""
    waiting = {t.local[1] for t in tries if not t.done}
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        capture.flush(settle=0.02)
        for f in capture.frames(since=since):
            if f.point != source_point or f.outgoing:
                continue
            if f.proto == 1 and f.inner:
                waiting.discard(f.inner[2])
            elif f.proto == 17 or f.flags & (SYN | RST):
                waiting.discard(f.dport)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return False


def _body(data: bytes) -> bytes:
    return data.partition(b"\r\n\r\n")[2]


def run(
    plan: Plan, wiring: Wiring, capture: Capture, probe: ProbePlan, timeout: float = DEFAULT_TIMEOUT
) -> Observation:
    """Run every attempt of one probe at once and explain each from the captures."""
    target = aim(plan, probe)
    protocol = probe.protocol if probe.target.address else target.protocol
    ns = wiring.ns(probe.source)
    opener = _open_udp if protocol == "UDP" else _open_tcp
    pods_by_point = {f"{p.name}/eth0": p.name for p in plan.pods}
    nodes_by_point = {f"{n.name}/eth0": n.name for n in plan.nodes}
    nodes_by_point |= {f"{EDGE}/{n.name}": n.name for n in plan.nodes}  # the edge's ports
    source_ip = source_address(plan, probe.source)
    source_point = f"{probe.source}/eth0"
    packets = probe.mode == "packet"
    attempts: list[Attempt] = []
    since = time.time() - 0.01  # captures carry wall-clock kernel timestamps
    while len(attempts) < probe.count:
        started = time.time()
        if packets:
            size = min(probe.count - len(attempts), PACKET_BATCH)
            tries = _send_packets(ns, target, protocol, size, source_ip)
            _await_packets(capture, tries, source_point, since, timeout)
        else:
            tries = opener(ns, target, min(probe.count - len(attempts), _batch_size()))
            _drive(tries, protocol, timeout, target.text)
        capture.flush()
        index = _Index(capture.frames(since=since))
        if not capture.keep_raw:  # as Lab.observe does: memory stays flat over batches
            capture.clear()
        for t in tries:
            if t.sock is not None:
                t.sock.close()
        since = time.time()  # the next batch must not read this one's closing frames
        attempts += [
            _explain(
                t,
                protocol,
                target,
                index,
                source_point,
                pods_by_point,
                nodes_by_point,
                plan,
                probe.source,
                started,
            )
            for t in tries
        ]
    return Observation(
        probe=probe.name,
        attempts=tuple(attempts),
        source=probe.source,
        source_address=source_ip,
        target=target.text,
    )


def _batch_size() -> int:
    """Attempts that fit under RLIMIT_NOFILE: each takes a socket here and, when this
    process serves the pods, one more for the accepted connection."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return BATCH
    free = soft - len(os.listdir("/proc/self/fd")) - 16
    return max(1, min(BATCH, free // 2))


class _Index:
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


def _seen_at_pod(index: _Index, answer: bytes, pods_by_point: dict[str, str]) -> Frame | None:
    """The packet a pod received from the peer it reported (`ip:port` from /clientip)."""
    host, _, port = answer.decode(errors="replace").strip().rpartition(":")
    if not port.isdigit():
        return None
    seen = [f for f in index.by_peer.get((host, int(port)), []) if f.point in pods_by_point]
    return seen[0] if seen else None


def _explain(
    t: _Try,
    protocol: str,
    target: Aim,
    index: _Index,
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
        pod=pod,
        source_ip=source_ip,
        reply_from=reply_from,
        return_path=return_path,
        client_reset=client_reset,
        entry_node=entry,
        serving_node=serving,
        dnat=dnat,
        snat=snat,
        server_view=server_view,
        answered=answered,
        refused=refused,
        edge_node=edge_node,
        connect_ms=connect_ms,
        rtt_ms=rtt_ms,
        hops=hops,
    )
