"""`mode: outOfWindow`: a real connection that meets one stray segment from its pod.

The classic intermittent reset (Kubernetes blog, "kube-proxy Subtleties: Debugging an
Intermittent Connection Reset", 2019): a segment from the server pod whose sequence
number is outside the TCP window is INVALID to conntrack, so the node does not un-DNAT
it. kube-proxy's iptables mode drops such packets in KUBE-FORWARD; without that rule the
segment reaches the client pod from the server pod's own address, the client's kernel
knows no such connection and answers with a RST to the pod, and the RST (in the window:
its sequence is the segment's acknowledgement) resets the server's side. With
nf_conntrack_tcp_be_liberal the segment is not INVALID: it is un-DNATed, and the client's
socket ignores it (a duplicate ACK).

Each attempt connects from the source, learns both initial sequence numbers from the
SYN-ACK captured at the serving pod, sends the stray segment with Scapy from the pod's
namespace (2^30 bytes beyond the pod's next sequence number), waits for the story to
play out, then sends its request: answered is completed, reset is broken.
"""

from __future__ import annotations

import selectors
import socket
import time

from testbed.core.errors import LabError
from testbed.core.targets import Aim
from testbed.kernel import netns
from testbed.kernel.capture import Capture
from testbed.kernel.explain import Try
from testbed.kernel.frames import ACK, SYN

STRAY_OFFSET = 1 << 30  # bytes beyond the pod's next sequence number: far outside any window
STORY_TIME = 0.3  # seconds for the stray segment, and the RST it may cause, to cross the lab
STRAY_PAYLOAD = b"stray"


def _connect(ns: str, target: Aim, timeout: float) -> Try:
    sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    sock.settimeout(timeout)
    started = time.monotonic()
    t = Try(sock, started)
    try:
        sock.connect((target.ip, target.port))
    except OSError as exc:
        t.error, t.done = exc.errno or 0, True
        return t
    t.local = sock.getsockname()
    t.connected_at = time.monotonic()
    return t


def _syn_ack(capture: Capture, since: float, local: tuple[str, int], pod_points: dict[str, str]):
    """The SYN-ACK the serving pod sent to this connection: (pod, its frame), or None."""
    capture.flush()
    for f in capture.frames(since=since):
        if (
            f.point in pod_points
            and f.outgoing
            and f.proto == 6
            and f.flags & SYN
            and f.flags & ACK
            and (f.dst, f.dport) == local
        ):
            return pod_points[f.point], f
    return None


def _inject(pod_ns: str, frame, payload: bytes = STRAY_PAYLOAD) -> None:
    """One data segment of the pod's side of the connection, far outside the window.

    Built and sent on a thread inside the pod's namespace: importing Scapy opens netlink
    sockets to read the routes of the namespace it runs in, never the host's.
    """
    netns.run_in(pod_ns, _send_stray, frame, payload)


def _send_stray(frame, payload: bytes) -> None:
    from scapy.layers.inet import IP, TCP  # only here: Scapy is slow to import

    seq = (frame.seq + 1 + STRAY_OFFSET) & 0xFFFFFFFF
    packet = IP(src=frame.src, dst=frame.dst) / TCP(
        sport=frame.sport, dport=frame.dport, flags="PA", seq=seq, ack=frame.ack, window=502
    )
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        raw.sendto(bytes(packet / payload), (frame.dst, 0))
    finally:
        raw.close()


def _request(t: Try, host: str, timeout: float) -> None:
    """Send the request on the connection and read the answer (or the reset)."""
    request = f"GET /clientip HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sock = t.sock
    assert sock is not None
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        sock.send(request)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = sock.recv(4096)
            t.buffer += chunk
            head, sep, body = bytes(t.buffer).partition(b"\r\n\r\n")
            if not chunk or (sep and _full(head, body)):
                t.answered_at = time.monotonic()
                t.reply = body
                break
    except OSError as exc:
        t.error = exc.errno or 0
    finally:
        sel.close()
        t.done = True


def _full(head: bytes, body: bytes) -> bool:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return False


def attempt(
    ns: str,
    target: Aim,
    capture: Capture,
    pod_namespaces: dict[str, str],
    since: float,
    timeout: float,
) -> Try:
    """One connection, one stray segment from its pod, one request.

    `pod_namespaces` maps each pod's capture point (`pod/eth0`) to its namespace.
    """
    t = _connect(ns, target, timeout)
    if t.done:
        return t
    points = {point: point.rpartition("/")[0] for point in pod_namespaces}
    found = None
    deadline = time.monotonic() + timeout
    while found is None and time.monotonic() < deadline:
        found = _syn_ack(capture, since, t.local, points)
    if found is None:
        raise LabError(
            f"outOfWindow: no pod's SYN-ACK for {t.local[0]}:{t.local[1]} was captured; "
            "the stray segment needs the pod's sequence numbers"
        )
    pod_point = f"{found[0]}/eth0"
    _inject(pod_namespaces[pod_point], found[1])
    time.sleep(STORY_TIME)
    _request(t, target.text, timeout)
    return t
