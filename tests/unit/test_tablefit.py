"""The run table fits every width from 60 to 200 columns; `-o wide` keeps rows whole."""

from __future__ import annotations

import pytest

from testbed.verdict import report, tablefit
from testbed.verdict.judge import Verdict
from testbed.verdict.report import ScenarioResult

PATH = (
    "203.0.113.10:53230 -> 198.51.100.10:80 | edge to node-2 | DNAT 10.244.2.2:8080"
    " SNAT 10.244.2.1 | pod web-1 saw 10.244.2.1"
)


def _verdict(name: str, passed: bool = True, sent: int = 300) -> Verdict:
    observed = {
        "sent": sent,
        "completed": 94,
        "broken": 3,
        "dropped": sent - 97 - 5,
        "pods": {"runners-0": 52, "runners-1": 42, "a-very-long-pod-name-indeed-0": 1},
        "sourceIPs": {"203.0.113.10": 94, "172.18.0.12": 7},
        "sourceIPsBy": {"203.0.113.10": {"answer": 94}, "172.18.0.12": {"capture": 7}},
    }
    expected = {"completed": 0.333, "outcome": "delivered", "sourceIP": "client", "pods": ["a"]}
    return Verdict(
        name=name,
        passed=passed,
        reasons=() if passed else ("completed 94/300 is below the expected 100% at alpha 5e-06",),
        observed=observed,
        expected=expected,
        oracle={},
        path=PATH,
        lines=(
            "why dropped (33.3%): LB IP 198.51.100.10 at node-2, externalTrafficPolicy Local:"
            " node-2 has no local endpoint, so kube-proxy drops it",
        ),
    )


RESULTS = [
    ScenarioResult(
        "cluster-to-local-outage",
        "/work/some/long/directory/scenarios/cluster-to-local-outage.yaml",
        "iptables",
        3.0,
        (
            _verdict("cluster-all-complete"),
            _verdict("local-no-health-checks-and-a-long-name", passed=False),
            _verdict("x", sent=100000),
        ),
        error="could not build: " + "a long reason " * 12,
    )
]


@pytest.mark.parametrize("width", range(60, 201))
def test_no_line_is_wider_than_the_terminal(width: int) -> None:
    text = report.table(RESULTS, width=width)
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert not too_wide, too_wide


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_nothing_is_lost_when_it_fits(width: int) -> None:
    """Every word of every cell is still in the table, only on more lines."""
    fitted = " ".join(report.table(RESULTS, width=width).split())
    for word in PATH.split() + ["runners-0", "x52,", "PASS", "FAIL", "(answer),", "5e-06"]:
        assert word in fitted, word


def test_wide_keeps_one_line_per_row() -> None:
    text = report.table(RESULTS, width=None)
    rows = [line for line in text.splitlines() if line.startswith("  cluster-all-complete")]
    assert len(rows) == 1 and PATH in rows[0]


def test_a_table_that_fits_is_unchanged() -> None:
    columns = [tablefit.Column("A", "a", keep=9), tablefit.Column("B", "b", keep=1)]
    fitted = tablefit.fit(columns, [("x", "y, z")], width=80)
    assert fitted.header == ["  A  B"] and fitted.rows == [["  x  y, z"]]


def test_the_least_kept_column_goes_under_the_row_first() -> None:
    columns = [
        tablefit.Column("NAME", "name", keep=9),
        tablefit.Column("PATH", "path", keep=1),
        tablefit.Column("PODS", "pods", keep=5),
    ]
    long = "hop " * 20
    fitted = tablefit.fit(columns, [("probe", long.strip(), "web-0 x1")], width=30)
    assert fitted.header == ["  NAME   PODS"]
    assert fitted.rows[0][1].startswith("      path: hop hop")


def test_wrap_prefers_list_separators_and_never_exceeds() -> None:
    lines = tablefit.wrap("web-0 x9, web-1 x7, web-2 x12", 20)
    assert lines == ["web-0 x9, web-1 x7,", "web-2 x12"]
    assert all(len(line) <= 7 for line in tablefit.wrap("abcdefghijklmnopqrstuvwxyz", 7))
