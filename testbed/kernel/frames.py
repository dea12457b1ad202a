"""Captured frames as plain records, and the parser that makes them (pure: no sockets).

Frames are parsed with `struct` into the few fields the probes match on; the raw
bytes are kept for pcap files.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

ETH_P_IP = 0x0800
SYN, RST, ACK = 0x02, 0x04, 0x10


@dataclass(frozen=True)
class Frame:
    point: str
    at: float  # wall-clock seconds (kernel timestamp)
    outgoing: bool
    proto: int  # 6 tcp, 17 udp, 1 icmp
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    flags: int = 0
    seq: int = 0
    ack: int = 0
    ipid: int = 0
    payload: bytes = b""
    # ICMP errors: the quoted packet's addresses, ports and TCP seq
    inner: tuple[str, str, int, int, int] | None = None
    raw: bytes = b""


def _ip(data: bytes) -> str:
    return socket.inet_ntoa(data)


def parse(
    point: str, at: float, outgoing: bool, frame: bytes, keep_raw: bool = True
) -> Frame | None:
    """An Ethernet frame -> Frame, or None for anything but IPv4 TCP/UDP/ICMP."""
    if len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IP:
        return None
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    ipid = struct.unpack_from("!H", frame, 18)[0]
    src, dst = _ip(frame[26:30]), _ip(frame[30:34])
    l4 = 14 + ihl
    raw = frame if keep_raw else b""
    common = dict(point=point, at=at, outgoing=outgoing, proto=proto, src=src, dst=dst, ipid=ipid)
    if proto == 6 and len(frame) >= l4 + 20:
        sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", frame, l4)
        payload = frame[l4 + (off >> 4) * 4 :]
        return Frame(
            **common,
            sport=sport,
            dport=dport,
            seq=seq,
            ack=ack,
            flags=flags,
            payload=bytes(payload),
            raw=raw,
        )
    if proto == 17 and len(frame) >= l4 + 8:
        sport, dport = struct.unpack_from("!HH", frame, l4)
        return Frame(**common, sport=sport, dport=dport, payload=bytes(frame[l4 + 8 :]), raw=raw)
    if proto == 1 and len(frame) >= l4 + 8 + 20:
        icmp_type = frame[l4]
        if icmp_type != 3:  # only "destination unreachable" matters to probes
            return None
        inner = l4 + 8
        inner_ihl = (frame[inner] & 0x0F) * 4
        isrc, idst = _ip(frame[inner + 12 : inner + 16]), _ip(frame[inner + 16 : inner + 20])
        ports = frame[inner + inner_ihl : inner + inner_ihl + 8]
        isport, idport, iseq = struct.unpack("!HHI", ports) if len(ports) == 8 else (0, 0, 0)
        return Frame(
            **common, flags=frame[l4 + 1], inner=(isrc, idst, isport, idport, iseq), raw=raw
        )
    return None
