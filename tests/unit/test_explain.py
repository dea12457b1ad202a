"""Frames parsed and attempts explained from synthetic frames: no root, no namespaces."""

from __future__ import annotations

import socket
import struct

import pytest

from testbed.core import library, load
from testbed.core.records import DELIVERED, DROPPED, REJECTED
from testbed.core.targets import aim
from testbed.kernel.explain import FrameIndex, Try, explain
from testbed.kernel.frames import ACK, RST, SYN, Frame, parse

CLIENT = "203.0.113.10"
NODE_2 = "172.18.0.12"
WEB_1 = "10.244.2.2"
LPORT = 40000
ISN = 1000


def ip_header(src: str, dst: str, proto: int, length: int, ipid: int = 7) -> bytes:
    return struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + length,
        ipid,
        0,
        64,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )


def ether(payload: bytes, ethertype: int = 0x0800) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", ethertype) + payload


def tcp_frame(src, sport, dst, dport, flags, seq=0, ack=0, data=b"") -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + data
    return ether(ip_header(src, dst, 6, len(tcp)) + tcp)


def test_a_tcp_frame_parses_to_its_addresses_ports_flags_and_payload():
    f = parse("client/eth0", 1.5, True, tcp_frame(CLIENT, LPORT, NODE_2, 30080, SYN, ISN, 0, b"hi"))
    assert f == Frame(
        "client/eth0",
        1.5,
        True,
        6,
        CLIENT,
        NODE_2,
        sport=LPORT,
        dport=30080,
        flags=SYN,
        seq=ISN,
        ipid=7,
        payload=b"hi",
        raw=f.raw,
    )
    assert parse("x", 0, False, tcp_frame(CLIENT, 1, NODE_2, 2, ACK), keep_raw=False).raw == b""


def test_a_udp_datagram_and_an_icmp_unreachable_parse_and_anything_else_is_none():
    udp = struct.pack("!HHHH", 5353, 53, 12, 0) + b"dns!"
    f = parse("p", 0, False, ether(ip_header(CLIENT, NODE_2, 17, len(udp), ipid=99) + udp))
    assert (f.proto, f.sport, f.dport, f.ipid, f.payload) == (17, 5353, 53, 99, b"dns!")
    quoted = ip_header(CLIENT, NODE_2, 6, 20) + struct.pack("!HHI", LPORT, 30080, ISN)
    icmp = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
    f = parse("p", 0, False, ether(ip_header(NODE_2, CLIENT, 1, len(icmp)) + icmp))
    assert (f.proto, f.flags, f.inner) == (1, 3, (CLIENT, NODE_2, LPORT, 30080, ISN))
    echo = struct.pack("!BBHI", 8, 0, 0, 0) + quoted  # an echo request: not for probes
    assert parse("p", 0, False, ether(ip_header(NODE_2, CLIENT, 1, len(echo)) + echo)) is None
    assert parse("p", 0, False, ether(b"\x00" * 40, ethertype=0x86DD)) is None
    assert parse("p", 0, False, b"short") is None


@pytest.fixture(scope="module")
def world():
    plan = load.load(str(library.resolve("default")))
    probe = plan.probes[0]  # client via node-2's NodePort
    return plan, probe, aim(plan, probe)


def explained(world, frames, **sent):
    plan, probe, target = world
    t = Try(sock=None, started=0.0, local=(CLIENT, LPORT), **sent)
    points = {f"{p.name}/eth0": p.name for p in plan.pods}
    nodes = {f"{n.name}/eth0": n.name for n in plan.nodes}
    nodes |= {f"edge/{n.name}": n.name for n in plan.nodes}
    return explain(
        t, "TCP", target, FrameIndex(frames), "client/eth0", points, nodes, plan, "client", 0.0
    )


def frame(point, outgoing, src, sport, dst, dport, flags, seq=0, ack=0, at=0.1) -> Frame:
    return Frame(point, at, outgoing, 6, src, dst, sport, dport, flags, seq, ack)


def test_a_handshake_followed_across_dnat_and_snat_is_delivered_with_the_right_path(world):
    frames = [
        frame("client/eth0", True, CLIENT, LPORT, NODE_2, 30080, SYN, ISN, at=0.1),
        frame("node-2/eth0", False, CLIENT, LPORT, NODE_2, 30080, SYN, ISN, at=0.2),
        frame("web-1/eth0", False, NODE_2, 61000, WEB_1, 8080, SYN, ISN, at=0.3),
        frame("client/eth0", False, NODE_2, 30080, CLIENT, LPORT, SYN | ACK, 5, ISN + 1, at=0.4),
    ]
    a = explained(world, frames)
    assert (a.outcome, a.pod, a.source_ip, a.return_path) == (DELIVERED, "web-1", NODE_2, "correct")
    assert (a.entry_node, a.serving_node, a.dnat, a.snat) == (
        "node-2",
        "node-2",
        "10.244.2.2:8080",
        NODE_2,
    )
    assert a.answered and not a.refused and not a.client_reset
    assert [h.kind for h in a.hops] == ["syn", "syn", "syn", "syn-ack"]


def test_a_syn_no_hop_answers_is_dropped_and_an_icmp_unreachable_is_rejected(world):
    syn = frame("client/eth0", True, CLIENT, LPORT, NODE_2, 30080, SYN, ISN)
    a = explained(world, [syn])
    assert (a.outcome, a.pod, a.return_path, a.answered) == (DROPPED, None, "none", False)
    icmp = Frame("client/eth0", 0.2, False, 1, NODE_2, CLIENT, flags=3)
    icmp = Frame(**{**icmp.__dict__, "inner": (CLIENT, NODE_2, LPORT, 30080, ISN)})
    assert explained(world, [syn, icmp]).outcome == REJECTED


def test_a_reset_from_the_service_address_is_a_refusal(world):
    frames = [
        frame("client/eth0", True, CLIENT, LPORT, NODE_2, 30080, SYN, ISN),
        frame("client/eth0", False, NODE_2, 30080, CLIENT, LPORT, RST | ACK, 0, ISN + 1),
    ]
    a = explained(world, frames)
    assert (a.outcome, a.refused, a.reply_from) == (REJECTED, True, f"{NODE_2}:30080")
