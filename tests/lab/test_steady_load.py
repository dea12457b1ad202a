"""A steady load across steps, on real labs: where it fails, and that it does not fail
where nothing should (both proxy modes, our renderer and the real kube-proxy)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest

from testbed.core.load import load_both
from testbed.core.model import LoadPlan, Target
from testbed.kernel import upstreambin
from testbed.live import runner
from testbed.live.load import RunningLoad
from tests.support.commands import run_testbed

pytestmark = pytest.mark.lab

MODES = ("iptables", "nftables")
STORY = "lb-local-load-pod-loss"
SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "report.schema.json"

HARMLESS = """\
apiVersion: testbed/v1alpha1
kind: Lab
metadata: {name: load-harmless}
spec:
  nodes: 3
  clients: [{name: client, ip: 203.0.113.10}]
  loadBalancer: {mode: ecmp, healthChecks: true,
                 healthCheck: {intervalSeconds: 0.25, unhealthyThreshold: 2, healthyThreshold: 2}}
  steps:
    - name: tcp-load
      load: {from: client, to: {service: web, port: http, via: loadBalancer},
             ratePerSecond: 100, timeoutSeconds: 2, windowSeconds: 0.5, until: settled,
             expect: {successRate: 1}}
    - name: udp-load
      load: {from: client, to: {service: web, port: dns, via: nodePort, node: node-2},
             protocol: UDP, ratePerSecond: 50, timeoutSeconds: 2, windowSeconds: 0.5,
             expect: {successRate: 1}}
    - name: scale-up
      scale: {deployment: web, replicas: 3}
    - name: settled
      waitForHealthChecks: true
    - name: one-more-look
      probe: {from: client, to: {service: web, port: http, via: loadBalancer}, count: 60,
              measureLatency: true}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: 8080}
    - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          ports: [{containerPort: 8080}, {containerPort: 5353, protocol: UDP}]
"""


def _load(result, name: str):
    verdict = next(v for v in result.verdicts if v.name == name)
    return verdict, verdict.details["load"]


def _claims_of_the_story(result) -> None:
    """Failures only at node-2's entries, a window below 1.0, every window after the
    edge settled at 1.0."""
    assert result.error is None, result.error
    verdict, info = _load(result, "steady-load")
    assert verdict.passed, verdict.reasons
    failed = verdict.observed["sent"] - verdict.observed["completed"]
    assert failed > 0, info
    assert info["nodes"]["node-2"]["failed"] == failed, info["nodes"]
    assert info["nodes"]["node-1"]["failed"] == 0
    assert set(info["nodes"]) <= {"node-1", "node-2"}, "node-3 never entered the pool"
    assert info["worstWindow"]["rate"] < 1.0
    settled = next(s for s in info["steps"] if s["name"] == "settled")
    after = [w for w in info["windows"] if w[0] >= settled["end"] and w[1]]
    assert after, info["windows"]
    assert all(w[2] == w[1] for w in after), after
    # the longest run of failures began before the edge settled: with the deletion, or
    # with an attempt still in flight when it came (the load's first starts just before)
    outage = info["longestOutage"]
    delete = next(s for s in info["steps"] if s["name"] == "delete-last-pod-on-node-2")
    began = delete["start"] - info["timeoutSeconds"]
    assert began <= outage["start"] < settled["end"], (outage, info["steps"])
    assert info["pods"]["web-a"]["node"] == "node-1"
    # the row takes the load step's place: first, before the probe step after it
    assert [v.name for v in result.verdicts] == ["steady-load", "after-only-node-1-serves"]
    assert any(line.startswith("failures by entry node: node-2") for line in verdict.lines)


@pytest.mark.parametrize("mode", MODES)
def test_a_load_across_losing_a_nodes_last_pod_fails_there_until_the_edge_settles(
    library_runs, mode
):
    result, _ = library_runs(STORY, mode)
    _claims_of_the_story(result)


@pytest.mark.skipif(not upstreambin.built(), reason="no upstream binaries built")
def test_the_same_load_under_the_real_kube_proxy(library_runs):
    result, _ = library_runs(STORY, "iptables", "upstream")
    _claims_of_the_story(result)


@pytest.mark.parametrize("mode", MODES)
def test_loads_across_a_harmless_scale_up_complete_every_attempt(tmp_path, mode):
    path = tmp_path / "harmless.yaml"
    path.write_text(HARMLESS)
    result, observations = runner.run_path(str(path), mode, loaded=load_both(str(path), mode))
    assert result.error is None, result.error
    assert [v.name for v in result.verdicts] == ["tcp-load", "udp-load", "one-more-look"]
    assert len(observations) == 3
    for name, entries in (("tcp-load", {"node-1", "node-2", "node-3"}), ("udp-load", {"node-2"})):
        verdict, info = _load(result, name)
        assert verdict.passed, (name, verdict.reasons)
        assert verdict.observed["completed"] == verdict.observed["sent"] > 20, verdict.observed
        assert all(w[2] == w[1] for w in info["windows"]), info["windows"]
        assert info["longestOutage"] is None
        assert set(info["nodes"]) <= entries, info["nodes"]
    # the TCP load ended with `settled`, the UDP one ran on to the last step
    tcp, udp = _load(result, "tcp-load")[1], _load(result, "udp-load")[1]
    assert tcp["until"] == "settled" and udp["until"] == "one-more-look"
    assert [s["name"] for s in udp["steps"]][-1] == "one-more-look"
    assert "one-more-look" not in [s["name"] for s in tcp["steps"]]
    assert set(tcp["nodes"]) == {"node-1", "node-2", "node-3"}  # Cluster: every node checks well
    # the new pod got its share once it was there
    assert {"web-0", "web-1", "web-2"} <= set(tcp["pods"]) | set(udp["pods"])


def test_run_writes_the_timeline_picture_and_a_report_that_fits_the_schema(tmp_path):
    report = tmp_path / "report.json"
    done = run_testbed(
        "run",
        "-q",
        STORY,
        "--plots",
        str(tmp_path),
        "--json",
        str(report),
        "--html",
        str(tmp_path / "report.html"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / f"{STORY}-iptables-steady-load-timeline.png").stat().st_size > 10_000
    data = json.loads(report.read_text())
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    load = data["scenarios"][0]["probes"][0]["load"]
    assert load["attempts"] == sum(w[1] for w in load["windows"])
    assert "polyline" in (tmp_path / "report.html").read_text()


def test_a_load_from_python_around_a_change(lab):
    built = lab(STORY)
    plan = LoadPlan(
        "from-python",
        "client",
        Target(service="default/web", port=80, via="loadBalancer"),
        rate=100,
        timeout=0.5,
        window=0.5,
        success_rate=1.0,
    )
    with built.load(plan) as running:
        time.sleep(0.6)
        built.delete_pod("web-b")
        time.sleep(0.6)
    verdict = running.verdict()
    info = verdict.details["load"]
    assert verdict.observed["sent"] >= 100, verdict.observed  # 1.2 s at 100/s, at least
    assert not verdict.passed  # node-2 dropped flows until the edge noticed
    assert "failures entered at node-2" in verdict.reasons[0]
    assert info["windows"][0][2] == info["windows"][0][1], "all well before the deletion"
    assert [s["name"] for s in info["steps"]] == ["from-python"]  # no steps: one span


def test_a_load_stops_at_its_attempt_limit_and_says_so(lab):
    built = lab(STORY)
    plan = LoadPlan(
        "capped", "client", Target(service="default/web", port=80, via="loadBalancer"), rate=200
    )
    running = RunningLoad(built, plan, limit=40).start()
    time.sleep(0.5)  # 100 attempts due: the limit stops it at 40
    verdict = running.verdict()
    info = verdict.details["load"]
    assert (info["attempts"], info["capped"]) == (40, True)
    assert not verdict.passed
    assert "stopped at 40 attempts" in verdict.reasons[-1]
