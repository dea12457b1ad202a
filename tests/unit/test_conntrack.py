"""Conntrack in the story, the pure parts: which UDP entries kube-proxy deletes, the INVALID
rule, the oracle's pinned flows and stray segments, and the loader's fields. No root."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from testbed.core.errors import LabError
from testbed.core.library import resolve
from testbed.core.load import load
from testbed.core.model import Endpoint
from testbed.core.records import BROKEN, COMPLETED, DROPPED
from testbed.core.scenario import ScenarioError, load_dict
from testbed.kubeproxy import conntrack, objects
from testbed.kubeproxy.iptables import render
from testbed.live.proxy import RenderedProxy
from testbed.verdict.conntrack import Pin
from testbed.verdict.oracle import predict
from tests.support.fakes import FakeKernel

INVALID_DROP = "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"
# `conntrack -L` as conntrack-tools 1.4.7 prints it
LISTING = "\n".join(
    [
        "udp      17 29 src=10.244.1.3 dst=10.96.0.10 sport=5353 dport=53"
        " src=10.244.1.2 dst=10.244.1.3 sport=5353 dport=5353 [ASSURED] mark=0 use=1",
        "udp      17 29 src=10.244.1.3 dst=10.96.0.10 sport=5354 dport=53"
        " src=10.244.2.2 dst=10.244.1.3 sport=5353 dport=5354 mark=0 use=1",
        "udp      17 29 src=203.0.113.10 dst=172.18.0.11 sport=4000 dport=30053"
        " src=10.244.9.9 dst=172.18.0.11 sport=5353 dport=4000 mark=0 use=1",
        "tcp      6 431999 ESTABLISHED src=10.244.1.2 dst=10.96.0.10 sport=40000 dport=80"
        " src=10.244.2.2 dst=10.244.1.2 sport=8080 dport=40000 [ASSURED] mark=0 use=1",
        "conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.",
    ]
)


def planned(name: str, mode: str | None = None):
    return load(str(resolve(name)), mode)


def dns_plan(*pods: tuple[str, str]):
    """udp-stale-conntrack with dns served by these (pod, ip) endpoints."""
    plan = planned("udp-stale-conntrack")
    svc = plan.service("dns")
    port = replace(
        svc.ports[0],
        endpoints=tuple(Endpoint(ip, 5353, "node-2", pod) for pod, ip in pods),
        node_port=30053,
    )
    return replace(plan, services=(replace(svc, ports=(port,)),))


def test_conntrack_listing_reads_original_and_reply_tuples():
    entries = conntrack.parse(LISTING)
    assert len(entries) == 4
    first = entries[0]
    assert (first.src, first.sport, first.dst, first.dport) == (
        "10.244.1.3",
        5353,
        "10.96.0.10",
        53,
    )
    assert first.dnat == "10.244.1.2:5353"
    assert first.text() == "udp 10.244.1.3:5353 -> 10.96.0.10:53 DNAT 10.244.1.2:5353"
    assert entries[3].state == "ESTABLISHED"


def test_an_entry_to_an_endpoint_that_no_longer_serves_is_stale():
    plan = dns_plan(("dns-1", "10.244.2.2"))
    found = conntrack.stale(plan.services, conntrack.parse(LISTING))
    assert conntrack.Filter("10.244.1.2", 53, "10.96.0.10") in found  # the dead dns-0
    assert conntrack.Filter("10.244.9.9", 30053) in found  # a NodePort entry, any address
    assert all(f.reply_src != "10.244.2.2" for f in found)  # the serving one stays
    assert len(found) == len(set(found)) == 2  # TCP entries are never touched


def test_a_service_without_serving_endpoints_keeps_its_entries():
    plan = dns_plan()
    assert conntrack.stale(plan.services, conntrack.parse(LISTING)) == []


def test_a_filter_deletes_as_kube_proxy_s_filters_do():
    f = conntrack.Filter("10.244.1.2", 53, "10.96.0.10")
    assert f.argv() == [
        "conntrack", "-D", "-p", "udp", "--orig-port-dst", "53",
        "--orig-dst", "10.96.0.10", "--reply-src", "10.244.1.2",
    ]  # fmt: skip
    entries = conntrack.parse(LISTING)
    assert [e.sport for e in entries if f.matches(e)] == [5353]


def test_the_invalid_drop_goes_with_be_liberal_and_the_fault_in_iptables_mode():
    plan = planned("tcp-invalid-segment", "iptables")
    node = plan.nodes[0]
    assert INVALID_DROP in render(node, plan.services, plan.proxy)
    for opts in (
        replace(plan.proxy, tcp_be_liberal=True),
        replace(plan.proxy, what_if=("no-invalid-drop",)),
    ):
        assert INVALID_DROP not in render(node, plan.services, opts)
        assert not conntrack.drops_invalid(opts)
    assert not conntrack.drops_invalid(replace(plan.proxy, mode="nftables"))


def test_upstream_mode_gets_tcp_be_liberal_and_refuses_the_new_faults():
    plan = planned("tcp-invalid-segment-be-liberal")
    config = json.loads(objects.kube_proxy_config(plan.nodes[0], plan, "/kubeconfig"))
    assert config["conntrack"] == {"maxPerCore": 0, "tcpBeLiberal": True}
    for name, fault in (
        ("udp-stale-conntrack-no-cleanup", "no-conntrack-cleanup"),
        ("tcp-invalid-segment-no-drop", "no-invalid-drop"),
    ):
        with pytest.raises(LabError, match=f"whatIf {fault} is a fault of the built-in"):
            objects.check(planned(name))


def test_the_builtin_proxy_cleans_udp_entries_after_each_sync_and_sets_be_liberal():
    kernel = FakeKernel()
    proxy = RenderedProxy(run=kernel.run)
    udp = planned("udp-stale-conntrack")
    proxy.program("ns1", udp.nodes[0], None, udp)
    assert ["conntrack", "-L", "-p", "udp"] in [list(r.argv) for r in kernel.runs]
    kernel.runs.clear()
    tcp = planned("tcp-invalid-segment-be-liberal")
    proxy.program("ns1", tcp.nodes[0], None, tcp)
    argvs = [list(r.argv) for r in kernel.runs]
    assert ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_be_liberal=1"] in argvs
    assert not any(a[0] == "conntrack" for a in argvs)  # no UDP service: nothing to clean
    kernel.runs.clear()
    off = replace(udp, proxy=replace(udp.proxy, what_if=("no-conntrack-cleanup",)))
    proxy.program("ns1", off.nodes[0], None, off)
    assert not any(r.argv[0] == "conntrack" for r in kernel.runs)


# -- the oracle --------------------------------------------------------------------


def test_a_first_pinned_flow_sticks_to_one_pod_of_any():
    plan = dns_plan(("dns-0", "10.244.1.2"), ("dns-1", "10.244.2.2"))
    pred = predict(plan, plan.probes[0])
    assert pred.sticky and set(pred.pods) == {"dns-0", "dns-1"}


def test_a_pinned_flow_stays_on_its_serving_pod():
    plan = dns_plan(("dns-0", "10.244.1.2"), ("dns-1", "10.244.2.2"))
    pred = predict(plan, plan.probes[0], pin=Pin("dns-0", "10.244.1.2:5353"))
    assert pred.pods == ("dns-0",) and pred.completed == 1


def test_a_flow_pinned_to_a_deleted_pod_recovers_with_cleanup_and_is_stuck_without():
    plan = dns_plan(("dns-1", "10.244.2.2"))
    pin = Pin("dns-0", "10.244.1.2:5353")
    pred = predict(plan, plan.probes[0], pin=pin)
    assert pred.pods == ("dns-1",) and pred.completed == 1
    assert any("deletes the flow's stale conntrack entry" in n for n in pred.notes)
    stuck = replace(plan, proxy=replace(plan.proxy, what_if=("no-conntrack-cleanup",)))
    pred = predict(stuck, stuck.probes[0], pin=pin)
    assert pred.ends == {DROPPED: 1.0}
    assert "no-conntrack-cleanup" in pred.fates[0].why and "dns-0" in pred.fates[0].why


def test_a_probe_without_source_port_ignores_pins():
    plan = dns_plan(("dns-1", "10.244.2.2"))
    probe = replace(plan.probes[0], source_port=None)
    stuck = replace(plan, proxy=replace(plan.proxy, what_if=("no-conntrack-cleanup",)))
    pred = predict(stuck, probe, pin=Pin("dns-0", "10.244.1.2:5353"))
    assert pred.completed == 1 and not pred.sticky


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
def test_an_out_of_window_segment_resets_only_without_drop_and_be_liberal(name, mode, end):
    plan = planned(name, mode)
    pred = predict(plan, plan.probes[0])
    assert pred.ends == {end: 1.0}
    assert "out-of-window segment" in pred.fates[0].why


# -- the loader ----------------------------------------------------------------------


def lab_doc(probe: dict, kube_proxy: dict | None = None) -> list[dict]:
    spec: dict = {"nodes": 2, "probes": [{"name": "p", "from": "app", **probe}]}
    if kube_proxy is not None:
        spec["kubeProxy"] = kube_proxy
    return [
        {"apiVersion": "testbed/v1alpha1", "kind": "Lab", "metadata": {"name": "t"}, "spec": spec},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "h", "port": 80}, {"name": "d", "port": 53, "protocol": "UDP"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-0", "labels": {"app": "web"}},
            "spec": {
                "nodeName": "node-2",
                "containers": [
                    {
                        "name": "c",
                        "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
                    }
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "app"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c"}]},
        },
    ]


def test_the_loader_reads_source_port_out_of_window_and_be_liberal():
    s = load_dict(
        lab_doc(
            {"to": {"service": "web", "port": 53}, "sourcePort": 5353, "count": 3},
            {"conntrack": {"tcpBeLiberal": True}},
        ),
        "t.yaml",
    )
    assert s.lab.probes[0].source_port == 5353 and s.lab.kube_proxy.tcp_be_liberal
    tcp = {"to": {"service": "web", "port": 80}, "sourcePort": 40000, "count": 30}
    s = load_dict(lab_doc(tcp), "t")  # one connection after another from one port
    assert (s.lab.probes[0].source_port, s.lab.probes[0].count) == (40000, 30)
    s = load_dict(lab_doc({"to": {"service": "web", "port": 80}, "mode": "outOfWindow"}), "t")
    assert s.lab.probes[0].mode == "outOfWindow" and s.lab.probes[0].source_port is None


@pytest.mark.parametrize(
    ("probe", "kube_proxy", "message"),
    [
        ({"sourcePort": 80}, None, "sourcePort: 80 is outside 1024-65535"),
        ({"sourcePort": 5000, "mode": "packet"}, None, "sourcePort is for mode: connection"),
        ({"mode": "outOfWindow", "to": {"service": "web", "port": 53}}, None, "a TCP story"),
        ({"mode": "outOfWindow", "from": "node-1"}, None, "outOfWindow probes start at a pod"),
        ({}, {"conntrack": {"tcpBeLiberal": "yes"}}, "spec.kubeProxy.conntrack.tcpBeLiberal"),
        ({}, {"conntrack": {"maxPerCore": 0}}, "spec.kubeProxy.conntrack"),
    ],
)
def test_bad_conntrack_fields_are_one_line_naming_them(probe, kube_proxy, message):
    docs = lab_doc({"to": {"service": "web", "port": 80}, **probe}, kube_proxy)
    with pytest.raises(ScenarioError) as caught:
        load_dict(docs, "t.yaml")
    text = str(caught.value)
    assert message in text and "\n" not in text and text.startswith("t.yaml:")


def test_every_library_scenario_of_the_story_is_listed_in_the_readme():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in (
        "udp-stale-conntrack",
        "udp-stale-conntrack-no-cleanup",
        "tcp-invalid-segment",
        "tcp-invalid-segment-no-drop",
        "tcp-invalid-segment-be-liberal",
    ):
        assert f"| `{name}` |" in readme
