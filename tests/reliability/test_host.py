"""Host isolation: a full `testbed run` of the library leaves the host's network untouched.

The host namespace is snapshotted before and after (links, addresses, routes of every
table, rules, nftables, iptables, the sysctls the lab sets inside its nodes, /run/netns
and its mounts apart from lab namespaces) and must be identical.

Sockets: while the run goes on, a sampler lists every socket descriptor the lab
process (and its children) holds, as `socket:[INODE]` links in /proc/PID/fd, and looks
each inode up in the host namespace's own socket tables (/proc/<our pid>/net/tcp, udp,
raw, packet, netlink, unix: those list only sockets that live in the reader's
namespace). A lab socket found there lives in the host namespace. This can fail: the
detector is first shown a process that opens one socket in the host and one inside a
lab namespace, and must flag exactly the first. Unnamed AF_UNIX socketpairs (the
capture thread's and the event loop's wake-up pipes) carry no network traffic; they
are counted, and only a *bound* unix socket counts as a host socket.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.commands import ROOT
from tests.support.private import Private
from tests.support.world import netns_names

pytestmark = [pytest.mark.reliability, pytest.mark.lab]

# The sysctls the lab writes inside its namespaces (topology.wire), read here in the host.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv4/conf/all/rp_filter",
    "net/ipv4/conf/default/rp_filter",
    "net/ipv4/icmp_ratelimit",
    "net/ipv4/fib_multipath_hash_policy",
)
# What the lab writes for each, to tell which host values could show a leak at all.
LAB_VALUES = {
    "net/ipv4/ip_forward": "1",
    "net/ipv4/conf/all/route_localnet": "1",
    "net/ipv4/conf/all/rp_filter": "0",
    "net/ipv4/conf/default/rp_filter": "0",
    "net/ipv4/icmp_ratelimit": "0",
    "net/ipv4/fib_multipath_hash_policy": "1",
}
INET_TABLES = ("tcp", "tcp6", "udp", "udp6", "raw", "raw6")


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return f"<{argv[0]} not installed>"
    return f"rc={done.returncode}\n{done.stdout}{done.stderr}"


def _tidy(text: str) -> str:
    """Drop what changes by itself: address lifetimes, route expiry, dated comments, counters."""
    text = re.sub(r"valid_lft \S+ preferred_lft \S+", "", text)
    text = re.sub(r"expires \S+", "", text)
    text = re.sub(r"\[\d+:\d+\]", "[-]", text)
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def host_snapshot(own_prefix: str) -> dict[str, str]:
    snap = {
        "links": _run(["ip", "-o", "link", "show"]),
        "addresses": _run(["ip", "-o", "addr", "show"]),
        "routes4": _run(["ip", "-4", "route", "show", "table", "all"]),
        "routes6": _run(["ip", "-6", "route", "show", "table", "all"]),
        "rules4": _run(["ip", "-4", "rule", "show"]),
        "rules6": _run(["ip", "-6", "rule", "show"]),
        "nft": _run(["nft", "list", "ruleset"]),
        "iptables": _run(["iptables-save"]),
        "ip6tables": _run(["ip6tables-save"]),
        "iptables-legacy": _run(["iptables-legacy-save"]),
    }
    snap = {k: _tidy(v) for k, v in snap.items()}
    for key in SYSCTLS:
        with open(f"/proc/sys/{key}") as handle:
            snap[key] = handle.read().strip()
    # Other people's labs and benchmarks come and go meanwhile, under prefixes of their
    # own (TESTBED_NS_PREFIX); every namespace this run makes carries `own_prefix`.
    names = netns_names()
    snap["own-netns"] = "\n".join(n for n in names if n.startswith(own_prefix))
    with open("/proc/self/mountinfo") as handle:
        mounts = []
        for line in handle:
            fields = line.split()
            point = fields[4]
            others = point.startswith("/run/netns/") and not point.startswith(
                f"/run/netns/{own_prefix}"
            )
            if not others:
                mounts.append(" ".join([fields[3], point, *fields[fields.index("-") :]]))
        snap["mounts"] = "\n".join(sorted(mounts))
    return snap


# -- sockets --------------------------------------------------------------------


def host_socket_inodes() -> dict[int, str]:
    """inode -> kind, for every socket that lives in the host namespace (ours)."""
    found: dict[int, str] = {}
    base = f"/proc/{os.getpid()}/net"
    for table in (*INET_TABLES, "packet", "netlink"):
        try:
            with open(f"{base}/{table}") as handle:
                rows = handle.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        column = 9 if table in INET_TABLES else -1
        for row in rows:
            fields = row.split()
            if len(fields) > abs(column):
                found[int(fields[column])] = table
    with open(f"{base}/unix") as handle:
        for row in handle.read().splitlines()[1:]:
            fields = row.split()
            if len(fields) >= 7:
                found[int(fields[6])] = "unix " + (fields[7] if len(fields) > 7 else "(unnamed)")
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo += [int(c) for c in handle.read().split()]
        except (OSError, ValueError):
            continue
    return pids


def process_sockets(pid: int) -> dict[int, int]:
    """socket inode -> the pid holding it, over `pid` and all its descendants."""
    held: dict[int, int] = {}
    for member in _tree(pid):
        try:
            fds = os.listdir(f"/proc/{member}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{member}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                held[int(link[8:-1])] = member
    return held


def host_sockets_of(pid: int) -> tuple[dict[int, str], int]:
    """The sockets of `pid` that live in the host namespace (by kind), and unnamed pairs."""
    held = process_sockets(pid)
    host = host_socket_inodes()
    leaks = {}
    pairs = 0
    for inode in held:
        kind = host.get(inode)
        if kind is None:
            continue
        if kind == "unix (unnamed)":
            pairs += 1
        else:
            leaks[inode] = kind
    return leaks, pairs


class Sampler(threading.Thread):
    """Look at the lab process's sockets every few milliseconds until told to stop."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.samples = 0
        self.sockets_seen: set[int] = set()
        self.leaks: dict[int, str] = {}
        self.pairs = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.sockets_seen |= process_sockets(self.pid).keys()
            leaks, pairs = host_sockets_of(self.pid)
            self.leaks.update(leaks)
            self.pairs = max(self.pairs, pairs)
            self.samples += 1
            time.sleep(0.01)


HOLDER = """
import socket, sys, time
from testbed.kernel import netns
host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
host.bind(("127.0.0.1", 0))
inside = netns.socket_in(sys.argv[1], socket.AF_INET, socket.SOCK_DGRAM)
inside.bind(("0.0.0.0", 0))
link = netns.socket_in(sys.argv[1], socket.AF_NETLINK, socket.SOCK_RAW, 0)
print(host.fileno(), inside.fileno(), link.fileno(), flush=True)
time.sleep(60)
"""


def test_the_socket_detector_can_fail(private: Private):
    """A process with one host socket and two lab-namespace sockets: exactly one is flagged."""
    from testbed.kernel import netns

    name = f"{private.prefix}detector"
    netns.create(name)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, name], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        host_fd, inside_fd, link_fd = map(int, holder.stdout.readline().split())
        inode = {
            fd: int(os.readlink(f"/proc/{holder.pid}/fd/{fd}")[8:-1])
            for fd in (host_fd, inside_fd, link_fd)
        }
        leaks, _pairs = host_sockets_of(holder.pid)
        assert leaks == {inode[host_fd]: "udp"}
    finally:
        holder.kill()
        holder.wait()
        netns.remove(name)


def test_library_run_leaves_the_host_untouched_and_opens_no_host_socket(
    private: Private, tmp_path: Path
):
    before = host_snapshot(private.prefix)
    report = tmp_path / "library.json"
    proc = subprocess.Popen(
        private.argv("run", "-q", "--json", str(report)),
        cwd=ROOT,
        env=private.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    private.procs.append(proc)
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        sampler.stop.set()
        sampler.join()
    data = json.loads(report.read_text())
    scenarios = data["scenarios"]
    assert len(scenarios) >= 12 and not [s for s in scenarios if s.get("error")], out + err
    assert proc.returncode in (0, 1), err
    after = host_snapshot(private.prefix)
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, changed
    assert after["own-netns"] == ""
    assert private.state_files() == set()
    can_show = [k for k in SYSCTLS if before[k] != LAB_VALUES[k]]
    print(
        f"\nHOST: {len(before)} host facts identical after {len(scenarios)} scenarios; "
        f"sysctls whose host value differs from the lab's (so a leak would show): "
        f"{', '.join(k.rsplit('/', 1)[1] for k in can_show)}"
    )
    print(
        f"SOCKETS: {sampler.samples} samples, {len(sampler.sockets_seen)} distinct lab sockets"
        f" seen, {len(sampler.leaks)} in the host namespace, up to {sampler.pairs} unnamed"
        " AF_UNIX pairs"
    )
    assert sampler.samples > 50 and len(sampler.sockets_seen) > 100
    assert not sampler.leaks, sampler.leaks


def test_a_lab_mid_probe_holds_no_host_socket(private: Private):
    """Frozen between probes, with servers, captures and edge health checks all open."""
    proc, pid = private.stalled("probing", "run", "-q", "default")
    held = process_sockets(pid)
    leaks, pairs = host_sockets_of(pid)
    proc.kill()
    proc.wait()
    assert len(held) > 20, "servers, captures and netlink sockets are open"
    assert not leaks, leaks
    assert pairs <= 4
