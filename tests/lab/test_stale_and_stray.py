"""Conntrack in the story, in real namespaces: a pinned UDP flow and its stale entry, and a
pod's out-of-window segment, as the library scenarios show them (both proxy modes; the
real kube-proxy for the variants it can run)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from testbed.core.model import Target
from testbed.core.records import BROKEN, COMPLETED, DELIVERED, DROPPED, REJECTED
from testbed.live.lab import Lab
from tests.support.commands import run_testbed
from tests.support.world import lab_namespaces, load_plan

pytestmark = pytest.mark.lab

MODES = ("iptables", "nftables")
SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "report.schema.json"


def entries(verdict) -> list[dict]:
    return verdict.details.get("conntrack", [])


@pytest.mark.parametrize("mode", MODES)
def test_a_pinned_udp_flow_stays_on_its_pod_until_kube_proxy_cleans_it(library_runs, mode):
    v, obs = library_runs.observation("udp-stale-conntrack", mode, "still-pinned")
    assert dict(obs.pods) == {"dns-0": obs.sent}  # two replicas, one flow: one pod
    v, obs = library_runs.observation("udp-stale-conntrack", mode, "recovered-at-once")
    assert obs.ended(COMPLETED) == obs.sent and set(obs.pods) == {"dns-1"}
    dnat = [e for e in entries(v) if e["node"] == "node-1" and e.get("dnat")]
    assert [e["pod"] for e in dnat] == ["dns-1"]  # the entry to dns-0 went with its sync
    assert any("node-1 conntrack: udp" in line and "(dns-1)" in line for line in v.lines)


@pytest.mark.parametrize("mode", MODES)
def test_without_cleanup_the_flow_is_stuck_on_the_dead_pod(library_runs, mode):
    v, obs = library_runs.observation("udp-stale-conntrack-no-cleanup", mode, "stuck-on-dead-pod")
    assert obs.count(DROPPED) == obs.sent and v.passed
    assert [e["pod"] for e in entries(v) if e.get("dnat")] == ["dead pod dns-0"]
    assert any("(dead pod dns-0)" in line for line in v.lines)
    _, fresh = library_runs.observation("udp-stale-conntrack-no-cleanup", mode, "new-port-fine")
    assert fresh.ended(COMPLETED) == fresh.sent  # a new port is a new flow


@pytest.mark.parametrize(
    ("name", "mode", "end"),
    [
        ("tcp-invalid-segment", "iptables", COMPLETED),
        ("tcp-invalid-segment", "nftables", BROKEN),
        ("tcp-invalid-segment-no-drop", "iptables", BROKEN),
        ("tcp-invalid-segment-be-liberal", "iptables", COMPLETED),
        ("tcp-invalid-segment-be-liberal", "nftables", COMPLETED),
    ],
)
def test_an_out_of_window_segment_resets_only_without_drop_or_be_liberal(
    library_runs, name, mode, end
):
    result, observations = library_runs(name, mode)
    obs = observations[0]
    assert result.verdicts[0].passed, result.verdicts[0].reasons
    assert obs.count(DELIVERED) == obs.sent
    assert {a.end for a in obs.attempts} == {end}
    # a reset connection: the client's kernel sent the RST that killed the pod's side
    assert all(a.client_reset for a in obs.attempts) == (end == BROKEN)


@pytest.mark.parametrize("mode", MODES)
def test_the_real_kube_proxy_cleans_stale_udp_entries(library_runs, mode):
    result, observations = library_runs("udp-stale-conntrack", mode, "upstream")
    assert result.error is None, result.error
    assert all(v.passed for v in result.verdicts), [v.reasons for v in result.verdicts]
    last = observations[-1]
    assert set(last.pods) == {"dns-1"} and last.ended(COMPLETED) == last.sent


def test_an_out_of_window_attempt_nothing_answers_is_rejected_and_the_lab_goes():
    """No handshake, no segment to send: refused at once, and nothing stays behind."""
    plan = load_plan("tcp-invalid-segment")
    before = lab_namespaces()
    with Lab(plan) as lab:
        web = plan.pod("web-0")
        probe = replace(plan.probes[0], target=Target(address=web.ip, port=9), count=2, expect=None)
        obs, _ = lab.observe(probe)
        assert {a.outcome for a in obs.attempts} == {REJECTED}
    assert lab_namespaces() == before


def test_the_report_shows_the_stale_entry_in_json_and_under_the_row(tmp_path):
    report = tmp_path / "r.json"
    done = run_testbed("run", "udp-stale-conntrack-no-cleanup", "-o", "wide", "--json", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    stuck = next(p for p in data["scenarios"][0]["probes"] if p["name"] == "stuck-on-dead-pod")
    assert stuck["conntrack"] == [
        {
            "node": "node-1",
            "protocol": "udp",
            "source": f"{stuck['route']['sourceAddress']}:5353",
            "destination": stuck["route"]["target"],
            "dnat": stuck["conntrack"][0]["dnat"],
            "pod": "dead pod dns-0",
        }
    ]
    assert "node-1 conntrack: udp " in done.stdout and "(dead pod dns-0)" in done.stdout
