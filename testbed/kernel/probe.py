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
from dataclasses import replace

from testbed.core.errors import LabError
from testbed.core.model import Plan, ProbePlan
from testbed.core.records import DELIVERED, Attempt, Observation
from testbed.core.targets import Aim, aim, source_address
from testbed.core.topology import EDGE, Wiring, link_name
from testbed.kernel import netns, stray
from testbed.kernel.capture import Capture, Point
from testbed.kernel.explain import FrameIndex, Try, explain
from testbed.kernel.frames import RST, SYN

DEFAULT_TIMEOUT = 1.0
ANSWER_WAIT = 4.0  # more seconds for the answer on a connection that is up (5 s in all)
PACKET_BATCH = 5000  # packet probes: source ports drawn without repeats within a batch
PACKET_PORTS = (20000, 60000)
BATCH = 1000  # attempts in flight at once; more only fill a listen backlog
# Hop-by-hop detail is kept for this many attempts (and the first delivered one, which the
# path column shows); the counts the judge reads come from every attempt. Without the cap
# a 100,000-attempt probe held about 0.5 GB of hops.
HOPS_KEPT = 1000


def capture_points(plan: Plan, wiring: Wiring) -> list[Point]:
    """Client and node fabric interfaces, the edge's port towards each node (where a
    packet leaves once the edge has chosen its node), and every pod's own interface."""
    points = [Point(wiring.ns(c.name), "eth0", f"{c.name}/eth0") for c in plan.clients]
    points += [Point(wiring.ns(EDGE), link_name(n.name), f"{EDGE}/{n.name}") for n in plan.nodes]
    points += [Point(wiring.ns(n.name), "eth0", f"{n.name}/eth0") for n in plan.nodes]
    points += [Point(wiring.ns(p.name), "eth0", f"{p.name}/eth0") for p in plan.pods]
    return points


def _open_tcp(target: Aim, count: int, port: int | None = None) -> list[Try]:
    """Sockets for one batch; called inside the source's namespace (netns.run_in).

    `port`: the one source port (sourcePort: one attempt per batch, one after another).
    """
    tries = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if port is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("", port))
        # no SYN retries: one SYN per attempt, so each attempt is one packet story
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        started = time.monotonic()
        code = sock.connect_ex((target.ip, target.port))
        t = Try(sock, started, sock.getsockname())
        if code not in (0, errno.EINPROGRESS):
            t.error, t.done = code, True
        tries.append(t)
    return tries


def _open_udp(target: Aim, count: int, kept: socket.socket | None = None) -> list[Try]:
    """Sockets for one batch, each sending its datagram; called inside the source's namespace.

    `kept`: the one socket every attempt sends from (sourcePort), one attempt per batch.
    """
    tries = []
    for _ in range(count):
        sock = kept or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        if kept is not None:
            _drain(kept)
        else:
            sock.connect((target.ip, target.port))  # connected: ICMP errors reach us
        t = Try(sock, time.monotonic(), sock.getsockname())
        try:
            sock.send(b"clientip")
            t.sent = True
        except OSError as exc:
            t.error, t.done = exc.errno or 0, True
        tries.append(t)
    return tries


def _drain(sock: socket.socket) -> None:
    """Read away a late answer (or error) an earlier attempt left on a kept socket."""
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return
        except OSError:
            continue


def _kept_udp(target: Aim, port: int) -> socket.socket:
    """The sourcePort socket of a UDP probe; called inside the source's namespace."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", port))
    sock.connect((target.ip, target.port))
    return sock


def _drive(tries: list[Try], protocol: str, timeout: float, host_header: str) -> None:
    """One selector loop for every attempt of a probe, until answered or timed out."""
    sel = selectors.DefaultSelector()
    for t in tries:
        if not t.done:
            events = selectors.EVENT_READ if protocol == "UDP" else selectors.EVENT_WRITE
            sel.register(t.sock, events, t)
    deadline = time.monotonic() + timeout
    # a connection that is up gets longer for its answer: on a busy machine a slow answer
    # is not a broken one (the sharp batches of a convergence probe keep their own timeout)
    answer_deadline = deadline + (ANSWER_WAIT if timeout >= DEFAULT_TIMEOUT else 0.0)
    request = f"GET /clientip HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode()
    pending = sum(1 for t in tries if not t.done)
    until = deadline
    while pending:
        if time.monotonic() >= until:
            if until == answer_deadline:
                break
            # the deadline passed: attempts without a connection stay unanswered (dropped
            # or refused); those connected may still read their answer
            for t in tries:
                if not t.done and t.connected_at is None:
                    sel.unregister(t.sock)
                    pending -= 1
            until = answer_deadline
            continue
        for key, mask in sel.select(timeout=max(0.0, until - time.monotonic())):
            t: Try = key.data
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
                    if not chunk or http_complete(bytes(t.buffer)):
                        t.answered_at = time.monotonic()
                        t.reply = _body(bytes(t.buffer))
                        t.done = True
            except OSError as exc:
                t.error, t.done = exc.errno or 0, True
            if t.done:
                sel.unregister(t.sock)
                pending -= 1
    sel.close()


def _send_packets(ns: str, target: Aim, protocol: str, count: int, src: str) -> list[Try]:
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
            t = Try(None, time.monotonic(), (src, sport), isn=isn)
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
    capture: Capture, tries: list[Try], source_point: str, since: float, timeout: float
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


def http_complete(data: bytes) -> bool:
    """Whether an HTTP/1.1 answer is whole: its head and Content-Length bytes of body."""
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
    """Run every attempt of one probe at once and explain each from the captures.

    A probe with a sourcePort, and an outOfWindow probe, send one attempt at a time.
    """
    target = aim(plan, probe)
    protocol = probe.protocol if probe.target.address else target.protocol
    ns = wiring.ns(probe.source)
    kept = None  # UDP sourcePort: the one socket every attempt sends from
    if probe.source_port is not None and protocol == "UDP":
        kept = netns.run_in(ns, _kept_udp, target, probe.source_port)
    try:
        return _run(plan, wiring, capture, probe, timeout, kept)
    finally:
        if kept is not None:
            kept.close()


def _run(
    plan: Plan,
    wiring: Wiring,
    capture: Capture,
    probe: ProbePlan,
    timeout: float,
    kept: socket.socket | None,
) -> Observation:
    target = aim(plan, probe)
    protocol = probe.protocol if probe.target.address else target.protocol
    ns = wiring.ns(probe.source)
    pods_by_point = {f"{p.name}/eth0": p.name for p in plan.pods}
    nodes_by_point = {f"{n.name}/eth0": n.name for n in plan.nodes}
    nodes_by_point |= {f"{EDGE}/{n.name}": n.name for n in plan.nodes}  # the edge's ports
    source_ip = source_address(plan, probe.source)
    source_point = f"{probe.source}/eth0"
    one_by_one = probe.source_port is not None or probe.mode == "outOfWindow"

    def send(size: int, since: float) -> list[Try]:
        if probe.mode == "packet":
            tries = _send_packets(ns, target, protocol, min(size, PACKET_BATCH), source_ip)
            _await_packets(capture, tries, source_point, since, timeout)
        elif probe.mode == "outOfWindow":
            pod_ns = {f"{p.name}/eth0": wiring.ns(p.name) for p in plan.pods}
            tries = [stray.attempt(ns, target, capture, pod_ns, since, timeout)]
        else:
            size = 1 if one_by_one else min(size, _batch_size())
            if protocol == "UDP":
                tries = netns.run_in(ns, _open_udp, target, size, kept)
            else:
                tries = netns.run_in(ns, _open_tcp, target, size, probe.source_port)
            _drive(tries, protocol, timeout, target.text)
        return tries

    attempts: list[Attempt] = []
    delivered_kept = False  # a delivered attempt's hops are kept: the path column shows one
    since = time.time() - 0.01  # captures carry wall-clock kernel timestamps
    while len(attempts) < probe.count:
        if not os.path.lexists(netns.path(ns)):  # `testbed down` under a running probe
            raise LabError(f"namespace {ns} is gone: the lab was torn down")
        started = time.time()
        tries = send(probe.count - len(attempts), since)
        capture.flush()
        index = FrameIndex(capture.frames(since=since))
        if not capture.keep_raw:  # as Lab.observe does: memory stays flat over batches
            capture.clear()
        for t in tries:
            if t.sock is not None and t.sock is not kept:
                t.sock.close()
        since = time.time()  # the next batch must not read this one's closing frames
        for t in tries:
            a = explain(
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
            if len(attempts) >= HOPS_KEPT and (a.outcome != DELIVERED or delivered_kept):
                a = replace(a, hops=())
            delivered_kept = delivered_kept or (a.outcome == DELIVERED and bool(a.hops))
            attempts.append(a)
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
