"""The external load balancer stories, in both proxy modes, with the claims they make.

Each scenario runs once per mode (cached for the module): its probes, then its
steps. The tests read the verdicts' report data (shares per node, latency,
convergence) and, for the health-check story, the edge's routing table itself.
"""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path

import pytest

from testbed.core.load import load_both
from testbed.core.records import DROPPED
from testbed.kernel import lbview, netns
from testbed.kernel.frames import ACK, SYN
from testbed.live import steps
from testbed.live.lab import Lab
from testbed.verdict import measure
from tests.support.commands import SCENARIOS, run_testbed
from tests.support.stats import fits

pytestmark = pytest.mark.lab

MODES = ("iptables", "nftables")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "name",
    [
        "cluster-to-local-outage",
        "lb-local-healthcheck",
        "lb-cluster-vs-local-balance",
        "lb-local-latency",
    ],
)
def test_story_passes(library_runs, name, mode):
    result, observations = library_runs(name, mode)
    assert result.error is None, result.error
    assert {v.name: v.reasons for v in result.verdicts if not v.passed} == {}
    assert len(observations) == len(result.verdicts)


@pytest.mark.parametrize("mode", MODES)
def test_the_seed_story_reads_as_told(library_runs, mode):
    name = "cluster-to-local-outage"
    cluster = library_runs.verdict(name, mode, "cluster-all-complete").observed
    assert cluster["completed"] == cluster["sent"] == 300
    assert "203.0.113.10" not in cluster["sourceIPs"]  # masqueraded to node addresses
    local = library_runs.verdict(name, mode, "local-no-health-checks")
    seen = local.observed
    assert seen["completed"] == seen["delivered"] and seen["broken"] == 0
    assert seen["completed"] + seen["dropped"] == 300 and seen["dropped"] > seen["completed"]
    assert seen["sourceIPsBy"] == {"203.0.113.10": {"answer": seen["completed"], "capture": 0}}
    assert set(local.details["nodes"]) == {"node-1"}  # only node-1 ever answers
    checked = library_runs.verdict(name, mode, "local-with-health-checks").observed
    assert checked["completed"] == checked["sent"] == 300
    spread = library_runs.verdict(name, mode, "spread-pods-even-load").details["nodes"]
    assert sorted(spread) == ["node-1", "node-2", "node-3"]


@pytest.mark.parametrize("mode", MODES)
def test_node_that_loses_its_last_pod_drops_flows_only_until_the_edge_settles(library_runs, mode):
    watched = library_runs.verdict("lb-local-healthcheck", mode, "while-the-edge-converges")
    info = watched.details["convergence"]
    assert info["afterConvergence"]["dropped"] == 0
    assert info["afterConvergence"]["sent"] == steps.AFTER_BATCHES * 10
    assert info["beforeConvergence"]["dropped"] > 0  # the edge still sent flows to node-2
    assert info["poolChanges"] == "node-2 left 198.51.100.10's pool"
    # out after 3 bad answers, one per 0.25 s round (+1 round under way at the change): about
    # 1 s, which is the benchmark's to time; here only a hang (the edge's give-up) fails
    assert info["poolChangedSeconds"] is not None
    assert info["poolChangedSeconds"] < steps.SETTLE_TIMEOUT
    assert info["settledSeconds"] >= info["poolChangedSeconds"]
    later = library_runs.verdict("lb-local-healthcheck", mode, "after-only-node-1-serves")
    assert later.observed["dropped"] == 0 and later.observed["pods"] == {"web-a": 100}
    before = library_runs.verdict("lb-local-healthcheck", mode, "before-both-nodes-serve")
    assert set(before.details["nodes"]) == {"node-1", "node-2"}  # node-3 has no pod: no flow


def test_the_edge_route_loses_the_node_and_its_check_says_503():
    scenario, plan = load_both(str(SCENARIOS / "lb-local-healthcheck.yaml"))
    with Lab(plan, scenario=scenario) as lab:
        lab.wait_for_edge()
        edge_ns = lab.wiring.ns("edge")
        assert set(lbview.read_routes(edge_ns)["198.51.100.10"]) == {"172.18.0.11", "172.18.0.12"}
        steps.run(lab, scenario.lab.steps[:1])  # delete web-b
        assert steps.wait_settled(lab, None)
        assert lbview.read_routes(edge_ns)["198.51.100.10"] == ("172.18.0.11",)
        (view,) = lbview.look(lab.plan, lab.id)
        answers = {c.node: (c.answer, c.in_route) for c in view.nodes}
        assert answers == {
            "node-1": ("200", True),
            "node-2": ("503", False),
            "node-3": ("503", False),
        }


@pytest.mark.parametrize("mode", MODES)
def test_cluster_splits_per_pod_and_local_per_node(library_runs, mode):
    name = "lb-cluster-vs-local-balance"
    cluster = library_runs.verdict(name, mode, "cluster-packed").details["nodes"]
    assert {n for n, item in cluster.items() if item["entered"]} == {"node-1", "node-2", "node-3"}
    assert cluster["node-3"]["served"] == 0  # it only forwards
    assert cluster["node-1"]["expectedServedShare"] == 0.75
    packed = library_runs.verdict(name, mode, "local-packed").details["nodes"]
    assert "node-3" not in packed  # no pod, no health, no flow
    assert all(item["entered"] == item["served"] for item in packed.values())  # Local stays
    lone = packed["node-2"]["pods"]["lone"]
    total = sum(pod["count"] for item in packed.values() for pod in item["pods"].values())
    assert lone["expectedShare"] == 0.5 and fits(lone["count"], total, 0.5), (lone, total)
    spread = library_runs.verdict(name, mode, "local-spread").details["nodes"]
    assert sorted(spread) == ["node-1", "node-2", "node-3"]
    served = sum(item["served"] for item in spread.values())
    assert all(fits(item["served"], served, 1 / 3) for item in spread.values()), spread


@pytest.mark.parametrize("mode", MODES)
def test_latency_is_reported_per_path(library_runs, mode):
    local = library_runs.verdict("lb-local-latency", mode, "local-always-local")
    assert list(local.details["latency"]) == ["local"]
    assert local.details["latency"]["local"]["samples"] == 100
    mixed = library_runs.verdict("lb-local-latency", mode, "cluster-local-and-cross-node")
    paths = mixed.details["latency"]
    assert set(paths) == {"local", "cross-node"}
    assert sum(p["samples"] for p in paths.values()) == 200
    for entry in paths.values():
        c = entry["connect_ms"]
        assert 0 < c["p50"] <= c["p90"] <= c["p99"] < 1000
    said = [line for line in mixed.lines if line.startswith("connect time")]
    assert len(said) == 1
    assert "slower" in said[0] or measure.NOTHING_SHOWN in said[0]


def test_run_writes_pictures_and_a_report_with_the_extra_keys(tmp_path: Path):
    pytest.importorskip("matplotlib")
    report = tmp_path / "r.json"
    done = run_testbed(
        "run", "-q", "lb-local-healthcheck", "--plots", str(tmp_path), "--json", str(report)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pictures = sorted(tmp_path.glob("*.png"))
    names = {p.name for p in pictures}
    assert "lb-local-healthcheck-iptables-before-both-nodes-serve-shares.png" in names
    assert "lb-local-healthcheck-iptables-while-the-edge-converges-convergence.png" in names
    assert all(p.stat().st_size > 10_000 for p in pictures)
    probes = json.loads(report.read_text())["scenarios"][0]["probes"]
    watched = next(p for p in probes if p["name"] == "while-the-edge-converges")
    assert watched["convergence"]["afterConvergence"][DROPPED] == 0
    assert "nodes" in watched and "latency" not in watched  # a burst times the burst


def test_lb_command_reads_a_lab_left_up():
    up = run_testbed("up", "lb-local-healthcheck")
    assert up.returncode == 0, up.stderr
    lab_id = up.stdout.split()[1]
    try:
        shown = run_testbed("lb", lab_id)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert (
            "  edge route: via node-1 172.18.0.11, node-2 172.18.0.12 "
            "(ECMP: each flow hashed to one of them)" in lines
        )
        assert any("policy 3, fields 0x0037" in line for line in lines)
        node3 = next(line for line in lines if line.startswith("    node-3"))
        assert "503" in node3 and node3.rstrip().endswith("no")
    finally:
        assert run_testbed("down", lab_id).returncode == 0


FLOWS = 12  # with 3 nodes, a re-hash would leave all of them on their node about 1 in 500,000


@pytest.mark.parametrize("mode", MODES)
def test_a_retransmitted_syn_goes_to_the_node_its_first_syn_went_to(mode):
    """A pass-through LB pins a flow by its 5-tuple: a SYN the client retransmits (here
    because its first SYN-ACK is dropped in the client's own namespace) reaches the node
    the first one reached, and the connection then completes."""
    scenario, plan = load_both(str(SCENARIOS / "cluster-to-local-outage.yaml"), mode)
    vip = plan.service("runners").lb_ips[0]
    with Lab(plan, scenario=scenario) as lab:
        first_reply = "--connbytes 1:1 --connbytes-dir reply --connbytes-mode packets"
        rule = f"-A INPUT -p tcp --tcp-flags SYN,ACK SYN,ACK -m connbytes {first_reply} -j DROP"
        done = lab.exec("client", ["iptables", *rule.split()])
        assert done.returncode == 0, done.stderr
        with lab.capture([n.name for n in plan.nodes]) as cap:
            socks = []
            for _ in range(FLOWS):
                sock = netns.socket_in(lab.ns("client"))
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 2)
                sock.connect_ex((vip, 80))
                socks.append(sock)
            _, writable, _ = select.select([], socks, [], 0)
            assert writable == []  # every first SYN-ACK was dropped
            deadline = time.monotonic() + 2.5  # the first retransmit comes after 1 s
            while time.monotonic() < deadline and len(writable) < FLOWS:
                _, writable, _ = select.select([], socks, [], 0.1)
            cap.flush()
            frames = cap.frames()
        errors = [s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) for s in socks]
        ports = {s.getsockname()[1] for s in socks}
        for sock in socks:
            sock.close()
    nodes_of: dict[int, list[str]] = {}
    for f in frames:
        syn = f.proto == 6 and f.flags & SYN and not f.flags & ACK and not f.outgoing
        if syn and f.dst == vip and f.sport in ports:
            nodes_of.setdefault(f.sport, []).append(f.point.split("/")[0])
    assert set(nodes_of) == ports
    assert all(len(seen) >= 2 for seen in nodes_of.values()), nodes_of  # retransmitted
    assert all(len(set(seen)) == 1 for seen in nodes_of.values()), nodes_of  # one node each
    assert len({seen[0] for seen in nodes_of.values()}) > 1  # and the flows were spread
    assert errors == [0] * FLOWS  # each connection completed on its retransmitted SYN


def test_a_clusterip_from_outside_is_rejected_every_time_and_says_why():
    """The newcomer's first probe: the edge has no route to the Service CIDR and answers
    each attempt (a kernel without a route answers about five in a burst per source)."""
    scenario, plan = load_both(str(SCENARIOS / "default.yaml"))
    with Lab(plan, scenario=scenario) as lab:
        first = lab.probe(source="client", service="web", count=60)
        again = lab.probe(source="client", service="web", count=60)
        pod = lab.plan.pods[0]
        from_outside = lab.probe(source="client", address=pod.ip, port=8080, count=20)
    for verdict in (first, again):
        assert verdict.passed, verdict.reasons
        assert verdict.observed["rejected"] == 60 and verdict.observed["completed"] == 0
        assert "rejected (icmp-unreach from 203.0.113.1)" in verdict.path
        assert any(
            "no route to the Service CIDR: outside traffic" in line for line in verdict.lines
        )
    assert from_outside.passed, from_outside.reasons
    assert from_outside.observed["rejected"] == 20
