"""Report renderers: schema-valid JSON, parseable JUnit, a table a person can read."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from testbed.core.records import Attempt, Hop, Observation
from testbed.verdict.judge import judge
from testbed.verdict.oracle import predict
from testbed.verdict.report import ScenarioResult, summary_line, table, to_json, to_junit
from testbed.verdict.statistics import ALPHA
from tests.support.oracle_worlds import CLIENT_IP, N2, probe, world

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "schemas" / "report.schema.json").read_text(encoding="utf-8")
)
TARGET = f"{N2.ip}:30080"
HOP = Hop("client/eth0", "203.0.113.10:40001", TARGET, "syn")


def attempt(pod: str, seen: str) -> Attempt:
    return Attempt(
        "delivered",
        pod,
        seen,
        TARGET,
        "correct",
        entry_node="node-2",
        dnat="10.244.1.2:8080" if pod == "web-0" else "10.244.2.2:8080",
        snat=seen,
        server_view=f"{seen}:40001",
        answered=True,
        hops=(HOP,),
    )


def results() -> list[ScenarioResult]:
    plan = world()
    pr = probe("client", "nodePort", "node-2", name="external-via-node-2")
    good = [attempt("web-0", N2.ip), attempt("web-1", N2.gateway)] * 25
    bad = [attempt("web-0", CLIENT_IP)] * 50
    pred = predict(plan, pr)
    passing = judge(pr, Observation(pr.name, tuple(good), "client", CLIENT_IP, TARGET), pred, plan)
    failing = judge(pr, Observation(pr.name, tuple(bad), "client", CLIENT_IP, TARGET), pred, plan)
    assert passing.passed and not failing.passed
    return [
        ScenarioResult("etp-cluster", "scenarios/etp-cluster.yaml", "iptables", 1.93, (passing,)),
        ScenarioResult("etp-cluster", "scenarios/etp-cluster.yaml", "nftables", 2.0, (failing,)),
        ScenarioResult("broken", "scenarios/broken.yaml", "iptables", 0.1, (), "node-2: EEXIST"),
    ]


def test_json_report_matches_the_schema() -> None:
    report = to_json(results())
    jsonschema.validate(report, SCHEMA)
    json.dumps(report)  # plain data only
    assert report["summary"] == {
        "scenarios": 3,
        "probes": 2,
        "passed": 1,
        "failed": 1,
        "errors": 1,
        "alpha": ALPHA,
    }
    first, second, third = report["scenarios"]
    assert first["passed"] is True and second["passed"] is False and third["passed"] is False
    assert third["error"] == "node-2: EEXIST"
    probe_report = first["probes"][0]
    assert probe_report["observed"]["pods"] == {"web-0": 25, "web-1": 25}
    assert probe_report["oracle"]["sourceIP"] == "node"
    assert second["probes"][0]["reasons"]


def test_schema_rejects_a_broken_report() -> None:
    report = to_json(results())
    del report["scenarios"][0]["probes"][0]["observed"]["sent"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(report, SCHEMA)


def test_junit_parses_with_one_suite_per_scenario_and_a_failure_per_failing_probe() -> None:
    root = ET.fromstring(to_junit(results()))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [
        "etp-cluster [iptables]",
        "etp-cluster [nftables]",
        "broken [iptables]",
    ]
    assert [s.get("failures") for s in suites] == ["0", "1", "0"]
    assert suites[2].get("errors") == "1"
    ok_case = suites[0].find("testcase")
    assert ok_case is not None and ok_case.get("name") == "external-via-node-2"
    assert ok_case.find("failure") is None
    failure = suites[1].find("testcase/failure")
    assert failure is not None
    assert "expected the pod to see an address of the entry node" in failure.get("message", "")
    assert suites[2].find("testcase/error").get("message") == "node-2: EEXIST"


def test_table_shows_the_path_and_indented_reasons() -> None:
    text = table(results())
    assert (
        "203.0.113.10:40001 -> 172.18.0.12:30080 | DNAT 10.244.1.2:8080 SNAT 172.18.0.12 "
        "| pod web-0 saw 172.18.0.12"
    ) in text
    lines = text.splitlines()
    fail_row = next(
        i for i, line in enumerate(lines) if line.endswith("FAIL") and "external-via" in line
    )
    assert lines[fail_row + 1].startswith("      - expected the pod to see")
    assert any(line.rstrip().endswith("PASS") and "external-via-node-2" in line for line in lines)
    assert "error: node-2: EEXIST" in text
    assert text.splitlines()[-1] == summary_line(results())


def test_table_counts_completed_first_and_says_who_reported_each_source() -> None:
    header, row = table(results(), summary=False).splitlines()[1:3]
    assert header.split()[:3] == ["PROBE", "COMPLETED", "PATH"]
    assert row.split()[:2] == ["external-via-node-2", "50/50"]
    assert "172.18.0.12 x25 (answer)" in row
    broken = Observation(
        "p",
        (
            Attempt("delivered", "web-0", CLIENT_IP, "10.244.1.2:8080", "broken"),
            Attempt("dropped"),
            attempt("web-0", CLIENT_IP),
        ),
        "client",
        CLIENT_IP,
        TARGET,
    ).as_report()
    assert report_cells(broken) == (
        "1/3 (1 broken, 1 dropped)",
        f"{CLIENT_IP} x2 (answer 1, capture only 1)",
    )


def report_cells(observed: dict) -> tuple[str, str]:
    from testbed.verdict.report import _completed, _sources

    return _completed(observed), _sources(observed)


def test_summary_line() -> None:
    assert summary_line(results()) == (
        f"3 scenarios, 2 probes: 1 passed, 1 failed, 1 scenario could not run "
        f"(statistical checks at alpha {ALPHA:g} each, Bonferroni: 0.001 for up to 200)"
    )
    assert summary_line([]).startswith("0 scenarios, 0 probes: 0 passed, 0 failed")
