"""The example scripts, run as a user runs them, and the facts their stories claim.

Each script builds its own lab (namespaces `tb-<lab id>-*`), prints a story whose
facts come from the verdicts, and tears the lab down. These tests read the story
back and check each claim against what the scenario's physics must give.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.commands import ROOT
from tests.support.stats import fits
from tests.support.waiting import wait_until

pytestmark = pytest.mark.lab

SCRIPTS = ROOT / "scripts"


def run_script(name: str) -> str:
    """Run one example; it must exit 0 and leave none of its namespaces behind."""
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / name)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",  # the scripts must not depend on where they are started from
    )
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.match(r"lab (\S+) ", done.stdout)
    assert match, done.stdout
    from testbed.core.topology import NS_PREFIX

    prefix = f"{NS_PREFIX}{match.group(1)}-"

    def mine() -> list[str]:
        try:
            return [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
        except FileNotFoundError:
            return []

    assert wait_until(lambda: not mine()), mine()
    return done.stdout


def blocks(text: str, header: str) -> list[tuple[str, str]]:
    """(title, body) for each block that starts with a line matching `header`."""
    parts = re.split(rf"^{header}", text, flags=re.M)
    return [(p.split("\n", 1)[0], p) for p in parts[1:]]


def test_policy_flip_tells_the_outage_story():
    out = run_script("policy-flip.py")
    client = re.search(r"client (\S+) calls NodePort", out).group(1)
    phases = blocks(out, "externalTrafficPolicy: ")
    assert [title for title, _ in phases] == ["Cluster", "Local", "Cluster"]
    rows = [
        dict(re.findall(r"^  via (node-\d): (.*?)  \[PASS\]$", body, flags=re.M))
        for _, body in phases
    ]
    assert all(len(r) == 3 for r in rows), out  # three nodes per phase, every verdict PASS
    cluster, local, back = rows
    for node, facts in [*cluster.items(), *back.items()]:
        # Cluster: every node forwards to web-0 and masquerades to its own address
        assert facts.startswith("completed 10/10, received by web-0 x10"), facts
        assert f"(an address of {node})" in facts and client not in facts, facts
    assert local["node-1"].startswith("completed 10/10, received by web-0 x10"), local
    assert f"pod saw {client} (the client's address)" in local["node-1"], local
    assert local["node-2"] == local["node-3"] == "dropped 10/10"
    assert "Under Local, 2 of 3 nodes dropped every connection in silence" in out
    assert "node-2, node-3: exactly the nodes without a local pod" in out
    assert f"Through node-1 the pod saw {client}, the client's address." in out
    assert "Back on Cluster, 3 of 3 nodes complete every connection again." in out


def test_anti_affinity_shows_uneven_shares_when_packed_and_even_when_spread():
    out = run_script("anti-affinity.py")
    services = dict(blocks(out, r"\n?(?=packed: |spread: )"))
    packed_body = next(b for t, b in services.items() if t.startswith("packed: 300"))
    spread_body = next(b for t, b in services.items() if t.startswith("spread: 300"))
    assert "the edge sends them to node-1, node-2\n" in packed_body  # node-3 fails the check

    def counts(body: str) -> dict[str, tuple[str, int]]:
        found = re.findall(r"^  (\S+)\s+on (\S+):\s+(\d+)/300 = ", body, flags=re.M)
        return {pod: (node, int(n)) for pod, node, n in found}

    packed, spread = counts(packed_body), counts(spread_body)
    assert set(packed) == {"packed-0", "packed-1", "packed-2", "lone"}
    assert {packed[p][0] for p in packed if p != "lone"} == {"node-1"}
    assert packed["lone"][0] == "node-2"
    assert sum(n for _, n in packed.values()) == 300  # every connection was answered
    lone = packed["lone"][1]
    assert fits(lone, 300, 0.5), packed  # half of 300; far outside chance if shares were equal
    assert all(lone > n for p, (_, n) in packed.items() if p != "lone"), packed
    assert {node for node, _ in spread.values()} == {"node-1", "node-2", "node-3"}
    assert all(60 <= n <= 140 for _, n in spread.values()), spread
    assert out.count("pods saw: 203.0.113.10 (the client's address)") == 2  # Local keeps it
    assert out.count("verdict: PASS") == 2


def test_return_path_shows_the_reply_from_the_pod_and_the_reset():
    out = run_script("return-path.py")
    probes = dict(blocks(out, r"\n(?=via-node-)"))
    broken = next(b for t, b in probes.items() if t.startswith("via-node-2-broken"))
    fine = next(b for t, b in probes.items() if t.startswith("via-node-1-fine"))
    assert "kube-proxy faults: ('no-snat',)" in out

    def hops(body: str) -> list[tuple[str, str, str, str]]:
        return re.findall(r"^\s+[\d.]+ ms  (\S+)\s+(\S+)\s+(\S+) -> (\S+)$", body, flags=re.M)

    path = hops(broken)
    # node-2 DNATs to the pod on node-1 but keeps the client's address ...
    assert ("node-2/eth0", "syn", "203.0.113.10", "10.244.1.2:8080") in [
        (p, k, s.rsplit(":", 1)[0], d) for p, k, s, d in path
    ]
    # ... so the pod answers straight back through node-1, and node-2 never sees the reply
    assert ("node-1/eth0", "syn-ack", "10.244.1.2:8080") in [(p, k, s) for p, k, s, _ in path]
    assert not any(p == "node-2/eth0" and k == "syn-ack" for p, k, _, _ in path)
    assert "which saw 203.0.113.10 (the client's address)" in broken
    assert "the reply came from 10.244.1.2:8080 (the address of pod web-0)" in broken
    assert "but the client dialled 172.18.0.12:30080" in broken
    assert "the client reset the reply in 10 of 10 attempts" in broken
    assert "return path: broken; verdict: PASS" in broken
    assert "the reply came from 172.18.0.11:30080 (an address of node-1)" in fine
    assert "the client reset the reply in 0 of 10 attempts" in fine
    assert "return path: correct; verdict: PASS" in fine
    fine_path = [(p, k) for p, k, _, _ in hops(fine)]
    assert sorted(fine_path) == sorted(
        [
            (p, k)
            for p in ("client/eth0", "edge/node-1", "node-1/eth0", "web-0/eth0")
            for k in ("syn", "syn-ack")
        ]
    )


def test_custom_topology_builds_in_code_execs_and_captures():
    out = run_script("custom-topology.py")
    assert re.search(r"^lab custom-\S+ \(nftables\); Service api has nodePort (\d+)$", out, re.M)
    node_port = re.search(r"nodePort (\d+)", out).group(1)
    pods = dict(re.findall(r"^  pod (\S+)\s+(\S+)\s+on ", out, flags=re.M))
    clients = dict(re.findall(r"^  client (\S+)\s+(\S+)$", out, flags=re.M))
    assert clients["alice"] == "203.0.113.20"
    # Local: each client reaches the pod on the node it called, which sees the client itself
    assert re.search(rf"^alice via worker-a: pod api-0 saw {clients['alice']}:\d+$", out, re.M)
    assert re.search(rf"^bob via worker-b: pod api-1 saw {clients['bob']}:\d+$", out, re.M)
    assert re.search(rf"^caller via ClusterIP \S+: pod saw {pods['caller']}:\d+$", out, re.M)
    syns = re.findall(r"^  (\S+/eth0)\s+(\S+):(\d+) -> (\S+)$", out, flags=re.M)
    assert [(point, src, dst) for point, src, _, dst in syns] == [
        ("worker-a/eth0", clients["bob"], f"172.18.0.11:{node_port}"),
        ("api-0/eth0", clients["bob"], f"{pods['api-0']}:8080"),
    ]
    assert syns[0][2] == syns[1][2]  # one connection, seen before and after DNAT
    pcap = Path(re.search(r"^wrote (\S+) \((\d+) frames\)", out, re.M).group(1))
    try:
        assert pcap.stat().st_size > 24  # more than a pcap header
    finally:
        pcap.unlink(missing_ok=True)
        pcap.parent.rmdir()
    assert f"tcp . {node_port} : goto external-" in out  # the nftables NodePort map entry


def test_rollout_prestop_shows_terminating_pods_answering_behind_a_failing_health_check():
    out = run_script("rollout-prestop.py")
    lines = re.findall(
        r"^    (node-\d): healthCheckNodePort says (\d+); .*: (\d+)/(\d+) completed", out, re.M
    )
    assert [(node, status) for node, status, _, _ in lines] == [
        ("node-1", "503"),
        ("node-2", "503"),
        ("node-3", "503"),
    ], out
    assert all(done == sent for _, _, done, sent in lines), out  # the terminating pod answers
    assert "web-0 terminating (node-1)" in out
    assert re.search(r"^done in .*: web-3 on node-4, web-4 on node-1, web-5 on node-2$", out, re.M)
    assert "every verdict agrees" in out
