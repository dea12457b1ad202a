"""The HTML report: a pure function of the JSON report, self-contained and escaped.

The saved report in tests/data is the JSON of a real run of cluster-to-local-outage,
no-snat-broken-return and lb-local-healthcheck (iptables mode).
"""

from __future__ import annotations

import copy
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from testbed.cli import main
from testbed.core.records import Attempt
from testbed.verdict import flows, html

SAVED = Path(__file__).resolve().parents[1] / "data" / "report-outage-broken-healthcheck.json"


def saved() -> dict:
    return json.loads(SAVED.read_text())


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of every <text> element."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.texts: list[str] = []
        self._in_text = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_text = tag == "text"

    def handle_endtag(self, tag):
        if tag == "text":
            self._in_text = False

    def handle_data(self, data):
        if self._in_text:
            self.texts.append(data)


def parsed(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    return tags


def paths(tags: Tags) -> list[dict]:
    return [a for t, a in tags.tags if t == "svg" and a.get("class") == "path"]


def test_one_path_drawing_per_probe_in_order() -> None:
    report = saved()
    tags = parsed(html.render(report))
    names = [p["name"] for s in report["scenarios"] for p in s["probes"]]
    drawn = [a["data-probe"] for a in paths(tags)]
    assert sorted(drawn) == sorted(names) and len(drawn) == len(names) == 9
    # steps in order: the change between the probes, in the scenario's order
    page = html.render(report)
    first, flip, second = (
        page.index('data-probe="cluster-all-complete"'),
        page.index("set externalTrafficPolicy Local on default/runners"),
        page.index('data-probe="local-no-health-checks"'),
    )
    assert first < flip < second


def test_the_page_needs_no_network() -> None:
    page = html.render(saved())
    tags = parsed(page)
    assert not [t for t, _ in tags.tags if t in ("script", "link", "img", "iframe", "object")]
    assert not [a for _, a in tags.tags if "src" in a or "href" in a and a["href"][:1] != "#"]
    urls = set(re.findall(r"https?://[^\s\"')]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}  # the SVG namespace, never fetched
    assert re.findall(r"url\(([^)]*)\)", page) and all(
        u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", page)
    )
    assert "@import" not in page and "@font-face" not in page


def test_local_drops_are_drawn_at_the_pod_less_nodes_with_their_cause() -> None:
    report = saved()
    probe = next(
        p for p in report["scenarios"][0]["probes"] if p["name"] == "local-no-health-checks"
    )
    svg = html.pathsvg.draw(
        report["scenarios"][0]["topology"],
        probe["route"],
        probe["flows"],
        "u",
        probe["name"],
        probe["oracleFlows"],
    )
    texts = " ".join(parsed(svg).texts)
    dropped = {f["entryNode"]: f["count"] for f in probe["flows"] if f["end"] == "dropped"}
    assert set(dropped) == {"node-2", "node-3"}
    for n in dropped.values():
        assert f"{n} dropped here" in texts
    assert "node-2 has no local endpoint," in texts
    assert "no SNAT" in texts and "saw 203.0.113.10" in texts
    assert 'class="flow end-dropped"' in svg


def test_cluster_shows_each_node_s_snat_and_the_addresses_the_pods_saw() -> None:
    report = saved()
    probe = report["scenarios"][0]["probes"][0]
    svg = html.pathsvg.draw(report["scenarios"][0]["topology"], probe["route"], probe["flows"])
    texts = " ".join(parsed(svg).texts)
    for ip in ("172.18.0.12", "172.18.0.13"):
        assert f"SNAT to {ip}" in texts and f"saw {ip}" in texts
    assert "dropped" not in texts


def test_a_broken_return_comes_straight_from_the_pod() -> None:
    report = saved()
    scenario = report["scenarios"][1]
    probe = scenario["probes"][0]
    svg = html.pathsvg.draw(scenario["topology"], probe["route"], probe["flows"])
    assert 'class="reply broken"' in svg
    texts = " ".join(parsed(svg).texts)
    assert "reply from 10.244.1.2:8080," in texts and "the source resets it" in texts


def test_every_string_from_the_scenario_is_escaped() -> None:
    report = saved()
    evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    scenario = report["scenarios"][1]
    scenario["name"] = scenario["description"] = evil
    scenario["warnings"] = [evil]
    scenario["topology"]["nodes"][0]["pods"][0]["name"] = evil
    scenario["topology"]["services"][0]["name"] = evil
    probe = scenario["probes"][0]
    probe["name"] = evil
    probe["reasons"] = [evil]
    probe["route"]["source"] = evil
    for f in probe["flows"]:
        f["pod"] = evil
    probe["observed"]["pods"] = {evil: 10}
    page = html.render(report)
    tags = parsed(page)
    assert not [t for t, _ in tags.tags if t in ("script", "img")]
    assert not [a for _, a in tags.tags if any(k.startswith("on") for k in a)]
    assert evil in [a.get("data-probe") for a in paths(tags)]  # the attribute holds it, inert


def test_a_report_without_topology_or_flows_still_draws_each_probe() -> None:
    report = saved()
    for scenario in report["scenarios"]:
        scenario.pop("topology")
        for probe in scenario["probes"]:
            for key in ("route", "flows", "oracleFlows"):
                probe.pop(key)
    assert len(paths(parsed(html.render(report)))) == 9


def test_render_is_pure_and_stable() -> None:
    report = saved()
    before = copy.deepcopy(report)
    assert html.render(report) == html.render(report)
    assert report == before


def test_flows_group_attempts_by_their_way_most_taken_first() -> None:
    local = Attempt(
        "delivered",
        "web-0",
        "203.0.113.10",
        "198.51.100.10:80",
        "correct",
        entry_node="node-1",
        serving_node="node-1",
        dnat="10.244.1.2:8080",
        answered=True,
        edge_node="node-1",
    )
    drop = Attempt("dropped", entry_node="node-2", edge_node="node-2")
    got = flows.observed_flows([drop, local, drop])
    assert [f["end"] for f in got] == ["dropped", "completed"]
    assert got[0] == {
        "end": "dropped",
        "edgeNode": "node-2",
        "entryNode": "node-2",
        "returnPath": "none",
        "count": 2,
        "share": 0.6667,
    }
    assert got[1]["pod"] == "web-0" and got[1]["dnat"] == "10.244.1.2:8080"


def test_many_ways_are_capped_with_the_rest_as_other() -> None:
    attempts = [Attempt("delivered", f"p{i}", "203.0.113.10") for i in range(40)]
    got = flows.observed_flows(attempts)
    assert len(got) == flows.MAX_FLOWS and got[-1]["end"] == "other"
    assert sum(f["count"] for f in got) == 40


def test_report_command_draws_a_saved_report(tmp_path, capsys) -> None:
    out = tmp_path / "page.html"
    assert main(["report", str(SAVED), "--html", str(out)]) == 0
    assert out.read_text() == html.render(saved())


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"a":', "bad.json:1:6: not JSON"),
        ("[1, 2]", "not a `testbed run --json` report"),
        ('{"scenarios": [{"probes": [{"observed": {}, "flows": [{}]}]}]}', "cannot draw"),
    ],
)
def test_report_command_refuses_bad_input_in_one_line(tmp_path, capsys, content, words) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    out = tmp_path / "page.html"
    assert main(["report", str(bad), "--html", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not out.exists()


def test_report_command_does_not_write_through_a_link(tmp_path, capsys) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    link = tmp_path / "page.html"
    os.symlink(target, link)
    assert main(["report", str(SAVED), "--html", str(link)]) == 2
    assert "link" in capsys.readouterr().err
    assert target.read_text() == "keep"


def test_a_probe_s_kernel_trace_is_drawn_as_its_chains() -> None:
    report = saved()
    probe = report["scenarios"][1]["probes"][0]
    probe["trace"] = {
        "source": "client",
        "target": "172.18.0.12:30080",
        "protocol": "TCP",
        "sourcePort": 40000,
        "proxyMode": "iptables",
        "answer": "no answer",
        "nodes": {
            "node-2": {
                "verdict": "dropped in KUBE-EXTERNAL-SERVICES: <b>no local endpoints",
                "hooks": [
                    {
                        "hook": "filter INPUT",
                        "path": "filter INPUT: KUBE-FIREWALL -> KUBE-EXTERNAL-SERVICES: DROP (x)",
                    }
                ],
            },
            "node-1": {"verdict": "not seen", "hooks": []},
        },
    }
    report["scenarios"][1]["probes"][1]["trace"] = {"error": "xtables-monitor is not installed"}
    page = html.render(report)
    tags = parsed(page)
    chains = [a for t, a in tags.tags if t == "ol" and a.get("class") == "chain"]
    assert len(chains) == 1
    assert "KUBE-EXTERNAL-SERVICES" in page and "not seen by node-1" in page
    assert "<b>no local endpoints" not in page  # escaped
    assert "kernel trace: not available: xtables-monitor is not installed" in page


def test_a_pod_a_step_deleted_is_drawn_deleted_in_the_probes_after_it() -> None:
    report = saved()
    scenario = report["scenarios"][2]  # lb-local-healthcheck: deletes web-b, then probes
    scenario["topology"]["steps"][0]["pod"] = "web-b"
    page = html.render(report)
    before, after = page.split("step delete-last-pod-on-node-2", 1)
    assert "deleted by a step" not in before and "deleted by a step" in after
