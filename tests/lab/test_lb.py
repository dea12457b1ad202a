"""The external load balancer stories, in both proxy modes, with the claims they make.

Each scenario runs once per mode (cached for the module): its probes, then its
steps. The tests read the verdicts' report data (shares per node, latency,
convergence) and, for the health-check story, the edge's routing table itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed import lbview, measure, runner, steps
from testbed.lab import Lab
from testbed.records import DROPPED
from tests.lab.conftest import SCENARIOS, run_testbed
from tests.stats import fits

pytestmark = pytest.mark.lab

MODES = ("iptables", "nftables")
_runs: dict[tuple[str, str], tuple] = {}


def run(name: str, mode: str):
    if (name, mode) not in _runs:
        scenario, plan = runner.load_both(str(SCENARIOS / f"{name}.yaml"), mode)
        _runs[(name, mode)] = runner.run_plan(plan, scenario=scenario)
    return _runs[(name, mode)]


def verdict(name: str, mode: str, probe: str):
    result, _ = run(name, mode)
    return next(v for v in result.verdicts if v.name == probe)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "name", ["lb-local-healthcheck", "lb-cluster-vs-local-balance", "lb-local-latency"]
)
def test_story_passes(name, mode):
    result, observations = run(name, mode)
    assert result.error is None, result.error
    assert {v.name: v.reasons for v in result.verdicts if not v.passed} == {}
    assert len(observations) == len(result.verdicts)


@pytest.mark.parametrize("mode", MODES)
def test_node_that_loses_its_last_pod_drops_flows_only_until_the_edge_settles(mode):
    watched = verdict("lb-local-healthcheck", mode, "while-the-edge-converges")
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
    later = verdict("lb-local-healthcheck", mode, "after-only-node-1-serves")
    assert later.observed["dropped"] == 0 and later.observed["pods"] == {"web-a": 100}
    before = verdict("lb-local-healthcheck", mode, "before-both-nodes-serve")
    assert set(before.details["nodes"]) == {"node-1", "node-2"}  # node-3 has no pod: no flow


def test_the_edge_route_loses_the_node_and_its_check_says_503():
    scenario, plan = runner.load_both(str(SCENARIOS / "lb-local-healthcheck.yaml"))
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
def test_cluster_splits_per_pod_and_local_per_node(mode):
    name = "lb-cluster-vs-local-balance"
    cluster = verdict(name, mode, "cluster-packed").details["nodes"]
    assert {n for n, item in cluster.items() if item["entered"]} == {"node-1", "node-2", "node-3"}
    assert cluster["node-3"]["served"] == 0  # it only forwards
    assert cluster["node-1"]["expectedServedShare"] == 0.75
    packed = verdict(name, mode, "local-packed").details["nodes"]
    assert "node-3" not in packed  # no pod, no health, no flow
    assert all(item["entered"] == item["served"] for item in packed.values())  # Local stays
    lone = packed["node-2"]["pods"]["lone"]
    total = sum(pod["count"] for item in packed.values() for pod in item["pods"].values())
    assert lone["expectedShare"] == 0.5 and fits(lone["count"], total, 0.5), (lone, total)
    spread = verdict(name, mode, "local-spread").details["nodes"]
    assert sorted(spread) == ["node-1", "node-2", "node-3"]
    served = sum(item["served"] for item in spread.values())
    assert all(fits(item["served"], served, 1 / 3) for item in spread.values()), spread


@pytest.mark.parametrize("mode", MODES)
def test_latency_is_reported_per_path(mode):
    local = verdict("lb-local-latency", mode, "local-always-local")
    assert list(local.details["latency"]) == ["local"]
    assert local.details["latency"]["local"]["samples"] == 100
    mixed = verdict("lb-local-latency", mode, "cluster-local-and-cross-node")
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
            "  edge route: via node-1 172.18.0.11, node-2 172.18.0.12 (ECMP: one flow, one node)"
            in lines
        )
        node3 = next(line for line in lines if line.startswith("    node-3"))
        assert "503" in node3 and node3.rstrip().endswith("no")
    finally:
        assert run_testbed("down", lab_id).returncode == 0
