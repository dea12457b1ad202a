"""Packet captures at every hop, from one thread, in many namespaces.

Each capture point is an AF_PACKET socket created inside its namespace and
bound to one interface (so it sees both directions, as tcpdump does). One
reader thread drains them all. Frames are parsed with `struct` into the few
fields the probes match on; the raw bytes are kept for pcap files, which Scapy
writes only when asked (`--pcap`).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO

from testbed.kernel import netns
from testbed.kernel.frames import (
    ETH_P_IP,
    RST,
    SYN,
    Frame,
    parse,
)

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35  # SCM_TIMESTAMPNS has the same value


@dataclass(frozen=True)
class Point:
    ns: str
    ifname: str
    label: str  # e.g. "node-2/eth0"


class Capture:
    """Capture on many points until stopped; frames() returns what was seen so far."""

    def __init__(self, points: list[Point], keep_raw: bool = False) -> None:
        self.points = points
        self.keep_raw = keep_raw
        self._selector = selectors.DefaultSelector()
        self._socks: list[socket.socket] = []
        self._frames: list[Frame] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._flushed = threading.Event()
        self._labels: dict[int, str] = {}

    def start(self) -> Capture:
        for point in self.points:
            sock = netns.socket_in(
                point.ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)
            )
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            # kernel receive timestamps: hop order must not depend on when we read
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            if not self.keep_raw:
                _attach_probe_filter(sock)
            sock.bind((point.ifname, ETH_P_ALL))
            sock.setblocking(False)
            self._socks.append(sock)
            self._labels[sock.fileno()] = point.label
            self._selector.register(sock, selectors.EVENT_READ, point.label)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.5):
                if key.data is None:
                    self._wake_r.recv(4096)
                    if self._stop.is_set():
                        return
                    for sock in self._socks:  # a flush: drain everything, then say so
                        self._drain(sock, self._labels[sock.fileno()])
                    self._flushed.set()
                else:
                    self._drain(key.fileobj, key.data)

    def _drain(self, sock: socket.socket, label: str) -> None:
        batch = []
        while True:
            try:
                data, ancillary, _flags, addr = sock.recvmsg(65535, 64)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return
            frame = parse(label, _stamp(ancillary), addr[2] == PACKET_OUTGOING, data, self.keep_raw)
            if frame is not None:
                batch.append(frame)
        if batch:
            with self._lock:
                self._frames.extend(batch)

    def flush(self, settle: float = 0.01, timeout: float = 2.0) -> None:
        """Return once the reader has drained every socket: all frames so far are in."""
        time.sleep(settle)  # let softirqs finish delivering what is in flight
        self._flushed.clear()
        self._wake_w.send(b"f")
        self._flushed.wait(timeout)

    def frames(self, since: float = 0.0) -> list[Frame]:
        with self._lock:
            return [f for f in self._frames if f.at >= since]

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()

    def take(self) -> list[Frame]:
        """Every frame so far, forgotten here at once: a long reader keeps memory flat."""
        with self._lock:
            taken, self._frames = self._frames, []
        return taken

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=2)
        for sock in self._socks:
            with contextlib.suppress(Exception):
                self._selector.unregister(sock)
            sock.close()
        self._socks.clear()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Classic BPF, run in the kernel on every frame: keep IPv4 TCP segments with SYN or RST,
# UDP datagrams and ICMP; drop the rest (data, ACKs, FINs) before Python sees it. The
# probes follow handshakes and datagrams only; pcaps (keep_raw) capture everything.
_PROBE_FILTER = (
    (0x28, 0, 0, 12),  # ldh [12]             ethertype
    (0x15, 0, 8, ETH_P_IP),  # jeq IPv4        else drop
    (0x30, 0, 0, 23),  # ldb [23]             IP protocol
    (0x15, 2, 0, 6),  # jeq tcp               -> flags
    (0x15, 4, 0, 17),  # jeq udp              -> keep
    (0x15, 3, 4, 1),  # jeq icmp              -> keep, else drop
    (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf)    IP header length
    (0x50, 0, 0, 27),  # ldb [x+27]           TCP flags (14 + ihl + 13)
    (0x45, 0, 1, SYN | RST),  # jset SYN|RST  -> keep, else drop
    (0x06, 0, 0, 0x40000),  # ret keep
    (0x06, 0, 0, 0),  # ret drop
)
SO_ATTACH_FILTER = 26


def _attach_probe_filter(sock: socket.socket) -> None:
    import ctypes

    code = b"".join(struct.pack("HBBI", *ins) for ins in _PROBE_FILTER)
    buf = ctypes.create_string_buffer(code)
    prog = struct.pack("HL", len(_PROBE_FILTER), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The kernel's receive time (wall clock), or now if it sent none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec + nsec / 1e9
    return time.time()


def write_pcap(path: str | BinaryIO, frames: list[Frame]) -> None:
    """Write frames as a pcap Wireshark opens (Scapy is imported only here)."""
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    packets = []
    for frame in frames:
        pkt = Ether(frame.raw)
        pkt.time = frame.at
        packets.append(pkt)
    wrpcap(path, packets)
