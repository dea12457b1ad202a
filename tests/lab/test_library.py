"""The scenario library under both proxy modes, with the facts each story claims.

Each scenario is built, probed and judged once per mode (cached for the module);
the tests then assert on what the packets and the pods' own answers showed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from testbed.core.load import load, load_both
from testbed.core.records import COMPLETED, DELIVERED, DROPPED, REJECTED
from testbed.live import runner

pytestmark = pytest.mark.lab

LIBRARY = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.yaml"))
MODES = ("iptables", "nftables")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", LIBRARY, ids=[p.stem for p in LIBRARY])
def test_every_scenario_passes(library_runs, path, mode):
    result, _ = library_runs(path.stem, mode)
    failing = {v.name: v.reasons for v in result.verdicts if not v.passed}
    assert result.error is None, result.error
    assert not failing, failing


# Scenarios whose story differs between the modes, and why
MODE_STORIES = {
    # nftables mode has no conntrack-INVALID drop (kube-proxy v1.37.2's neither): the pod's
    # out-of-window segment resets the connection there, iptables mode drops it
    "tcp-invalid-segment": "completed in iptables mode, reset in nftables mode",
}


@pytest.mark.parametrize(
    "path", [p for p in LIBRARY if p.stem not in MODE_STORIES], ids=lambda p: p.stem
)
def test_both_modes_give_the_same_verdicts(library_runs, path):
    def facts(mode):
        result, observations = library_runs(path.stem, mode)
        rows = []
        for v, o in zip(result.verdicts, observations, strict=True):
            if "load" in v.details:  # a load's windows follow the timing: its verdict is the fact
                rows.append((v.name, v.passed))
                continue
            outcomes = (o.count(DELIVERED), o.count(DROPPED), o.count(REJECTED))
            if v.oracle["outcome"] == "mixed":  # the edge's or kube-proxy's draw: which ones
                outcomes = tuple(sorted({a.outcome for a in o.attempts}))
            done = o.ended(COMPLETED)
            # a fraction between 0 and 1 is a draw too: only "some, not all" is the fact
            completed = done if v.oracle["completed"] in (0, 1) else 0 < done < o.sent
            # with affinity, which pod is a draw: only "one pod" is the fact
            seen = (
                len(o.pods) if v.oracle.get("affinity") else (sorted(o.pods), sorted(o.source_ips))
            )
            rows.append((v.name, v.passed, outcomes, completed, seen, o.return_path))
        return rows

    assert facts("iptables") == facts("nftables")


@pytest.mark.parametrize("mode", MODES)
def test_cluster_policy_pod_sees_an_address_of_the_entry_node(library_runs, mode):
    _, obs = library_runs.observation("cluster-snat", mode, "via-node-without-pods")
    assert obs.count(DELIVERED) == obs.sent
    assert set(obs.source_ips) == {"172.18.0.12"}  # node-2, the entry node
    assert {a.entry_node for a in obs.attempts} == {"node-2"}
    assert {a.serving_node for a in obs.attempts} == {"node-1"}


@pytest.mark.parametrize("mode", MODES)
def test_local_policy_pod_sees_the_client_and_says_so_itself(library_runs, mode):
    _, obs = library_runs.observation("local-preserves-client-ip", mode, "via-node-with-a-pod")
    assert set(obs.source_ips) == {"203.0.113.10"}
    views = {a.server_view.split(":")[0] for a in obs.attempts if a.server_view}
    assert views == {"203.0.113.10"}  # the echo server's own /clientip answer


@pytest.mark.parametrize("mode", MODES)
def test_local_without_local_endpoint_reaches_no_pod_at_all(library_runs, mode):
    _, obs = library_runs.observation("local-no-local-endpoint", mode, "local-via-node-2-dropped")
    assert obs.count(DROPPED) == obs.sent
    assert not any(h.point.endswith("web-0/eth0") for a in obs.attempts for h in a.hops)


@pytest.mark.parametrize("mode", MODES)
def test_no_endpoints_is_refused_at_once(library_runs, mode):
    _, obs = library_runs.observation("no-endpoints-reject", mode, "client-via-nodeport-rejected")
    assert obs.count(REJECTED) == obs.sent
    assert all(a.hops and a.hops[-1].kind == "icmp-unreach" for a in obs.attempts)


@pytest.mark.parametrize("mode", MODES)
def test_hairpin_is_masqueraded_and_other_pods_see_the_pod_ip(library_runs, mode):
    _, obs = library_runs.observation("default", mode, "pod-to-cluster-ip")
    for attempt in obs.attempts:
        if attempt.pod == "web-0":  # the caller itself
            assert attempt.source_ip == "10.244.1.1"
        else:
            assert attempt.source_ip == "10.244.1.2"


@pytest.mark.parametrize("mode", MODES)
def test_pod_to_local_nodeport_and_lb_ip_go_cluster_wide_unmasqueraded(library_runs, mode):
    for probe in ("caller-to-own-node-nodeport", "caller-to-lb-ip"):
        _, obs = library_runs.observation("pod-to-nodeport-local", mode, probe)
        assert set(obs.pods) == {"web-0"} and set(obs.source_ips) == {"10.244.2.2"}
        assert {a.entry_node for a in obs.attempts} == {"node-2"}


@pytest.mark.parametrize("mode", MODES)
def test_session_affinity_keeps_one_pod(library_runs, mode):
    _, sticky = library_runs.observation("session-affinity", mode, "sticky-client")
    _, plain = library_runs.observation("session-affinity", mode, "without-affinity-spreads")
    assert len(sticky.pods) == 1 and sum(sticky.pods.values()) == 50
    assert len(plain.pods) == 3


@pytest.mark.parametrize("mode", MODES)
def test_source_ranges_allow_one_client_and_drop_the_other(library_runs, mode):
    _, allowed = library_runs.observation("source-ranges", mode, "allowed-via-lb")
    _, blocked = library_runs.observation("source-ranges", mode, "blocked-via-lb")
    assert allowed.count(DELIVERED) == allowed.sent
    assert blocked.count(DROPPED) == blocked.sent


@pytest.mark.parametrize("mode", MODES)
def test_no_snat_client_gets_a_reply_from_the_pod_address_and_resets_it(library_runs, mode):
    _, obs = library_runs.observation("no-snat-broken-return", mode, "via-node-2-broken")
    for attempt in obs.attempts:
        assert attempt.reply_from == "10.244.1.2:8080"
        assert attempt.client_reset
        assert attempt.server_view is None  # the handshake never completes


def test_a_wrong_expectation_fails_with_a_reason():
    """Three stories, each given a deliberately wrong expectation, must fail."""
    from testbed.live.lab import Lab

    wrong = {
        "cluster-snat": {"source_ip": "client"},
        "local-no-local-endpoint": {"outcome": "delivered"},
        "no-snat-broken-return": {"return_path": "correct"},
    }
    for name, change in wrong.items():
        plan = load(str(LIBRARY[0].parent / f"{name}.yaml"))
        first = plan.probes[0]
        bad = replace(first, expect=replace(first.expect, **change))
        plan = replace(plan, probes=(bad,))
        with Lab(plan) as built:
            verdict = built.verdicts()[0]
        assert not verdict.passed, name
        assert any("scenario expects" in r or "expected" in r for r in verdict.reasons), name


def test_cli_exit_code_follows_the_verdicts(tmp_path):
    from tests.support.commands import run_testbed

    text = (LIBRARY[0].parent / "local-preserves-client-ip.yaml").read_text()
    broken = tmp_path / "wrong.yaml"
    broken.write_text(text.replace("sourceIP: client", "sourceIP: node"))
    failed = run_testbed("run", "-q", str(broken), "--json", str(tmp_path / "r.json"))
    assert failed.returncode == 1
    assert "FAIL" in failed.stdout
    passed = run_testbed("run", "-q", "local-preserves-client-ip")
    assert passed.returncode == 0, passed.stdout


@pytest.mark.parametrize(("mode", "outcome"), [("iptables", DELIVERED), ("nftables", REJECTED)])
def test_localhost_nodeports_work_only_in_iptables_mode(mode, outcome):
    """iptables mode DNATs 127.0.0.1:NodePort (route_localnet); nftables mode has no such rule."""
    from testbed.live.lab import Lab

    with Lab.from_file(str(LIBRARY[0].parent / "node-traffic.yaml"), mode) as built:
        verdict = built.probe(source="node-1", address="127.0.0.1", port=30080, count=10)
    assert verdict.passed, verdict.reasons
    assert verdict.observed[outcome] == 10


PACKET_STORIES = [
    "cluster-snat",
    "local-no-local-endpoint",
    "no-snat-broken-return",
    "udp-dns-like",
    "no-endpoints-reject",
    "pod-to-nodeport-local",
]


@pytest.mark.parametrize("name", PACKET_STORIES)
def test_scapy_packet_probes_tell_the_same_story_as_connections(library_runs, name):
    """The same probes as Scapy-built SYNs/datagrams: same outcomes, pods, sources, paths."""
    scenario, plan = load_both(str(LIBRARY[0].parent / f"{name}.yaml"))
    plan = replace(plan, probes=tuple(replace(p, mode="packet") for p in plan.probes))
    result, observations = runner.run_plan(plan, scenario=scenario)
    failing = {v.name: v.reasons for v in result.verdicts if not v.passed}
    assert not failing, failing
    _, connected = library_runs(name, "iptables")
    for packet, conn in zip(observations, connected, strict=True):
        assert packet.return_path == conn.return_path, packet.probe
        assert set(packet.pods) == set(conn.pods), packet.probe
        assert set(packet.source_ips) == set(conn.source_ips), packet.probe
        assert all(a.server_view is None for a in packet.attempts)  # no socket, no answer
        # the source's kernel knows no such connection: it resets every SYN-ACK it gets
        answered = [a for a in packet.attempts if any(h.kind == "syn-ack" for h in a.hops)]
        assert all(a.client_reset for a in answered if a.hops[0].point.startswith("client"))
