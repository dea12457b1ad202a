"""`testbed trace` on a running lab: the kernel's own rule path, in both proxy modes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.support.commands import run_testbed

pytestmark = pytest.mark.lab
SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "report.schema.json"


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_trace_a_local_nodeport_through_a_node_with_and_without_its_pod(mode):
    up = run_testbed("up", "local-no-local-endpoint", "--proxy-mode", mode)
    assert up.returncode == 0, up.stderr
    lab = up.stdout.split()[1]
    try:
        via = ("trace", lab, "--from", "client", "--to", "web-local", "--via", "nodePort")
        home = run_testbed(*via, "--node", "node-1")
        assert home.returncode == 0, home.stderr
        lines = home.stdout.splitlines()
        assert "node-1: DNAT to 10.244.1.2:8080" in lines
        dnat = next(
            line for line in lines if line.endswith(": DNAT to 10.244.1.2:8080") and "->" in line
        )
        if mode == "iptables":
            assert dnat.strip().startswith(
                "nat PREROUTING: KUBE-SERVICES -> KUBE-NODEPORTS -> KUBE-EXT-"
            )
            assert "-> KUBE-SVL-" in dnat and "-> KUBE-SEP-" in dnat
        else:
            assert "services -> external-" in dnat and "-> endpoint-" in dnat
        assert "not seen by node-2, node-3" in lines and "the source: answered" in lines

        away = run_testbed(*via, "--node", "node-2", "-o", "json")
        assert away.returncode == 0, away.stderr
        got = json.loads(away.stdout)
        assert got["answer"] == "no answer" and got["proxyMode"] == mode
        assert got["nodes"]["node-2"]["verdict"].startswith("dropped in ")
        last = got["nodes"]["node-2"]["hooks"][-1]
        assert last["rules"][-1]["verdict"] == "drop"
        assert {got["nodes"][n]["verdict"] for n in ("node-1", "node-3")} == {"not seen"}

        # nothing of the trace is left in the nodes
        for node in ("node-1", "node-2", "node-3"):
            if mode == "nftables":
                tables = run_testbed("exec", "--lab", lab, node, "--", "nft", "list", "tables")
                assert "testbed_trace" not in tables.stdout
            else:
                raw = run_testbed("exec", "--lab", lab, node, "--", "iptables", "-t", "raw", "-S")
                assert "TRACE" not in raw.stdout
    finally:
        run_testbed("down", lab)


def test_trace_refuses_a_bad_target_in_one_line():
    up = run_testbed("up", "local-no-local-endpoint")
    assert up.returncode == 0, up.stderr
    lab = up.stdout.split()[1]
    try:
        bad = run_testbed("trace", lab, "--from", "client", "--to", "nope", "--via", "nodePort")
        assert bad.returncode == 2
        assert bad.stderr.strip() == f"testbed: no service default/nope in lab {lab}"
    finally:
        run_testbed("down", lab)


def test_trace_true_on_probes_reaches_the_table_the_json_and_the_page(tmp_path):
    report, page = tmp_path / "r.json", tmp_path / "r.html"
    run = run_testbed(
        "run", "-q", "local-no-local-endpoint", "--json", str(report), "--html", str(page)
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert (
        "| kernel trace at node-2: dropped in KUBE-EXTERNAL-SERVICES: "
        "default/web-local:http has no local endpoints"
    ) in run.stdout
    data = json.loads(report.read_text())
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    probes = {p["name"]: p for p in data["scenarios"][0]["probes"]}
    assert probes["local-via-node-1-works"]["trace"]["nodes"]["node-1"]["verdict"] == (
        "DNAT to 10.244.1.2:8080"
    )
    cluster = probes["cluster-via-node-2-works"]["trace"]["nodes"]
    assert list(cluster)[0] == "node-2"  # the entry node first
    assert cluster["node-2"]["verdict"] == "DNAT to 10.244.1.2:8080, MASQUERADE"
    assert cluster["node-1"]["verdict"] == "passed on, no rewrite here"
    html = page.read_text()
    assert html.count('<div class="trace">') == 3
    assert "KUBE-EXTERNAL-SERVICES" in html and "KUBE-SVL-" in html
