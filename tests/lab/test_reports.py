"""What `testbed run` writes for machines and for Wireshark, and what `rules` shows."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from testbed.kubeproxy import names
from tests.support.commands import run_testbed

pytestmark = pytest.mark.lab
SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "report.schema.json"


def test_json_junit_and_pcap_reports(tmp_path):
    report, junit, pcaps = tmp_path / "r.json", tmp_path / "r.xml", tmp_path / "pcap"
    done = run_testbed(
        "run",
        "-q",
        "cluster-snat",
        "--json",
        str(report),
        "--junit",
        str(junit),
        "--pcap",
        str(pcaps),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    probe = data["scenarios"][0]["probes"][0]
    observed = probe["observed"]
    assert observed["delivered"] + observed["dropped"] + observed["rejected"] == observed["sent"]
    assert observed["sourceIPs"] == {"172.18.0.12": observed["sent"]}
    cases = ET.parse(junit).getroot().iter("testcase")
    assert {c.get("name") for c in cases} == {"via-node-without-pods", "via-node-with-pods"}

    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap

    hop = pcaps / "cluster-snat" / "via-node-without-pods" / "node-2_eth0.pcap"
    packets = rdpcap(str(hop))
    syns = [p for p in packets if TCP in p and p[TCP].flags & 0x02 and not p[TCP].flags & 0x10]
    # node-2 sees each SYN twice: arriving for its NodePort, leaving DNATed and SNATed
    assert any(p[TCP].dport == 30080 for p in syns)
    assert any(p[TCP].dport == 8080 and p[IP].src == "172.18.0.12" for p in syns)


def test_rules_show_kube_proxy_chain_names():
    up = run_testbed("up", "default")
    assert up.returncode == 0, up.stderr
    lab = up.stdout.split()[1]
    try:
        rules = run_testbed("rules", lab, "node-1").stdout
    finally:
        run_testbed("down", lab)
    port_name = "default/web:http"
    for chain in (
        names.svc_chain(port_name, "TCP"),
        names.ext_chain(port_name, "TCP"),
        names.sep_chain(port_name, "TCP", "10.244.1.2:8080"),
    ):
        assert f":{chain} " in rules, chain
    assert "-j MASQUERADE --random-fully" in rules
