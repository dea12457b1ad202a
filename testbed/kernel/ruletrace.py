"""One marked packet through a running lab, and the rules each node's kernel ran for it.

nftables mode: a table of our own sets `meta nftrace set 1` on the packet as it enters
each node (prerouting, and output for a node's own traffic) and `nft monitor trace`
reports every rule it meets. iptables mode (iptables-nft): the `TRACE` target in the raw
table does the same and `xtables-monitor --trace` reports it in iptables' words. Only
the lab's node namespaces are touched, only a packet from our chosen source port (a TCP
SYN, or a UDP datagram) is marked, and the marking rules and monitors go away on every
exit path. The text is read by kernel/tracetext.py (pure).
"""

from __future__ import annotations

import contextlib
import errno
import random
import select
import socket
import subprocess
import time
from dataclasses import dataclass, field

from testbed.core.errors import TestbedError
from testbed.core.model import Plan
from testbed.core.targets import Aim
from testbed.core.topology import ns_name
from testbed.kernel import netns, tracetext
from testbed.kernel.shell import run_in

SETTLE = 0.4  # seconds for the monitors to subscribe, and for the last events to arrive
DSCP = 0x0A  # AF11: the marked packet's class; nothing else in a lab sets one
ANSWER_WAIT = 0.8  # under TCP's first SYN retransmission (1 s): one SYN only


class TraceError(TestbedError):
    """The kernel cannot trace here (a tool missing, legacy iptables); the message says why."""


@dataclass
class Traced:
    source: str
    target: str
    protocol: str
    sport: int
    mode: str
    answer: str  # answered | refused | no answer
    nodes: dict[str, dict] = field(default_factory=dict)  # node -> tracetext.summary()
    raw: dict[str, str] = field(default_factory=dict, repr=False)  # node -> monitor output

    def as_report(self) -> dict:
        return {
            "source": self.source,
            "target": self.target,
            "protocol": self.protocol,
            "sourcePort": self.sport,
            "proxyMode": self.mode,
            "answer": self.answer,
            "nodes": self.nodes,
        }


def _match(protocol: str, sport: int, nft: bool) -> str:
    """The marked packet: our DSCP (kept through NAT, unlike the source port, which a
    masquerade may change) and, for TCP, a SYN alone."""
    if protocol == "UDP":
        return f"ip dscp {DSCP:#04x} meta l4proto udp" if nft else f"-p udp -m dscp --dscp {DSCP}"
    if nft:
        return f"ip dscp {DSCP:#04x} tcp flags & (syn|ack|fin|rst) == syn"
    return f"-p tcp -m dscp --dscp {DSCP} --tcp-flags FIN,SYN,RST,ACK SYN"


def _nft_table(protocol: str, sport: int) -> str:
    match = _match(protocol, sport, nft=True)
    chains = "".join(
        f"  chain {name} {{ type filter hook {hook} priority -350; {match} meta nftrace set 1; }}\n"
        for name, hook in (("pre", "prerouting"), ("out", "output"))
    )
    return f"table ip {tracetext.OUR_TABLE} {{\n{chains}}}\n"


def _iptables(action: str, chain: str, protocol: str, sport: int) -> list[str]:
    return [
        "iptables",
        "-w",
        "-t",
        "raw",
        action,
        chain,
        *_match(protocol, sport, False).split(),
        "-j",
        "TRACE",
    ]


def _check_tools(mode: str) -> None:
    import shutil

    if mode == "nftables":
        if shutil.which("nft") is None:
            raise TraceError("nft is not installed: apt-get install nftables")
        return
    if shutil.which("xtables-monitor") is None:
        raise TraceError("xtables-monitor is not installed: apt-get install iptables")
    version = subprocess.run(["iptables", "-V"], capture_output=True, text=True).stdout
    if "nf_tables" not in version:
        raise TraceError(
            f"tracing iptables rules needs iptables-nft; this host runs {version.strip()} "
            "(update-alternatives --set iptables /usr/sbin/iptables-nft)"
        )


@contextlib.contextmanager
def _marking(namespaces: list[str], mode: str, protocol: str, sport: int):
    """Mark the packet in every node; unmark on every way out, errors included."""
    done: list[str] = []
    try:
        for ns in namespaces:
            if mode == "nftables":
                run_in(ns, ["nft", "-f", "-"], text=_nft_table(protocol, sport))
            else:
                for chain in ("PREROUTING", "OUTPUT"):
                    run_in(ns, _iptables("-I", chain, protocol, sport))
            done.append(ns)
        yield
    finally:
        for ns in done:
            with contextlib.suppress(Exception):
                if mode == "nftables":
                    run_in(ns, ["nft", "delete", "table", "ip", tracetext.OUR_TABLE])
                else:
                    for chain in ("PREROUTING", "OUTPUT"):
                        run_in(ns, _iptables("-D", chain, protocol, sport))


def _monitor(ns: str, mode: str) -> subprocess.Popen:
    argv = ["nft", "monitor", "trace"] if mode == "nftables" else ["xtables-monitor", "--trace"]
    with netns.entered(ns):  # forked here, so it starts inside the namespace
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _send(ns: str, aim: Aim, sport: int) -> str:
    """One SYN (or datagram) from `sport`: answered, refused, or no answer in time."""
    kind = socket.SOCK_DGRAM if aim.protocol == "UDP" else socket.SOCK_STREAM
    sock = netns.socket_in(ns, socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, DSCP << 2)
        sock.bind(("0.0.0.0", sport))
        sock.setblocking(False)
        if aim.protocol == "UDP":
            sock.sendto(b"trace\n", (aim.ip, aim.port))
            if not select.select([sock], [], [], ANSWER_WAIT)[0]:
                return "no answer"
            try:
                sock.recv(2048)
            except ConnectionRefusedError:
                return "refused"
            return "answered"
        sock.connect_ex((aim.ip, aim.port))
        if not select.select([], [sock], [], ANSWER_WAIT)[1]:
            return "no answer"
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return (
            "answered" if error == 0 else "refused" if error == errno.ECONNREFUSED else "no answer"
        )
    finally:
        # a reset, not a FIN, if it connected: nothing lingers on the port
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        sock.close()


def _free_port(ns: str, protocol: str) -> int:
    kind = socket.SOCK_DGRAM if protocol == "UDP" else socket.SOCK_STREAM
    for _ in range(20):
        port = random.randint(20000, 60999)
        sock = netns.socket_in(ns, socket.AF_INET, kind)
        try:
            sock.bind(("0.0.0.0", port))
            return port
        except OSError:
            continue
        finally:
            sock.close()
    raise TraceError(f"no free source port in {ns}")


def trace(lab_id: str, plan: Plan, source: str, aim: Aim) -> Traced:
    """Send one marked packet from `source` to `aim`; per node, the rules it went through."""
    mode = plan.proxy.mode
    _check_tools(mode)
    nodes = {n.name: ns_name(lab_id, n.name) for n in plan.nodes}
    src_ns = ns_name(lab_id, source)
    sport = _free_port(src_ns, aim.protocol)
    monitors: dict[str, subprocess.Popen] = {}
    outputs: dict[str, str] = {}
    with _marking(list(nodes.values()), mode, aim.protocol, sport):
        try:
            for node, ns in nodes.items():
                monitors[node] = _monitor(ns, mode)
            time.sleep(SETTLE)
            answer = _send(src_ns, aim, sport)
            time.sleep(SETTLE)
        finally:
            for node, proc in monitors.items():
                proc.terminate()
                try:
                    outputs[node] = proc.communicate(timeout=5)[0] or ""
                except subprocess.TimeoutExpired:
                    proc.kill()
                    outputs[node] = proc.communicate()[0] or ""
    parse = tracetext.parse_nft if mode == "nftables" else tracetext.parse_xtables
    hooks = {node: parse(text) for node, text in outputs.items()}
    ipid = tracetext.marked_id([h for got in hooks.values() for h in got], sport)
    entry = [n for n, got in hooks.items() if tracetext.marked_id(got, sport)]
    order = [*entry, *(n for n in hooks if n not in entry)]  # the entry node first
    found = {n: tracetext.summary(tracetext.marked(hooks[n], sport, ipid)) for n in order}
    return Traced(source, aim.text, aim.protocol, sport, mode, answer, found, outputs)


def lines(traced: Traced) -> list[str]:
    """The trace for a terminal: per node that saw the packet, its verdict and chain paths."""
    out = [
        f"trace: {traced.source} -> {traced.target} ({traced.protocol} "
        f"{'SYN' if traced.protocol == 'TCP' else 'datagram'} from port {traced.sport}, "
        f"{traced.mode} mode)"
    ]
    unseen = [n for n, s in traced.nodes.items() if s["verdict"] == "not seen"]
    for node, got in traced.nodes.items():
        if node in unseen:
            continue
        out.append(f"{node}: {got['verdict']}")
        out += [f"  {h['path']}" for h in got["hooks"]]
    if unseen:
        out.append(f"not seen by {', '.join(unseen)}")
    out.append(f"the source: {traced.answer}")
    return out
