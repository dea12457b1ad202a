"""A steady load: what the loader reads and refuses, and the pure timeline judgement."""

from __future__ import annotations

import pytest

from testbed.core.model import LoadPlan, Target
from testbed.core.records import ENDS
from testbed.verdict import report
from testbed.verdict.timeline import (
    LoadSample,
    StepMark,
    durations,
    judge_load,
    longest_outage,
    step_at,
    windows,
)
from tests.unit.test_steps_scenario import error, load

OK, BROKEN, REJECTED, DROPPED = (ENDS.index(e) for e in ENDS)

LOAD = (
    "    - name: steady\n"
    "      load:\n"
    "        from: client\n"
    "        to: {{service: web, via: loadBalancer}}\n"
    "{extra}"
    "        expect: {{successRate: 0.9}}\n"
    "    - {{name: kill, deletePod: web-1}}\n"
    "    - {{name: settle, waitForHealthChecks: true}}\n"
)


def steps(extra: str = "") -> str:
    return "  steps:\n" + LOAD.format(extra=extra)


def test_a_load_step_reads_with_its_defaults():
    step = load(steps()).lab.steps[0]
    assert step.action == "load" and step.probe is None
    assert step.load == LoadPlan(
        "steady",
        "client",
        Target(service="default/web", port=80, via="loadBalancer"),
        "TCP",
        50.0,
        5.0,
        1.0,
        None,
        0.9,
    )
    assert not step.changes_lab


def test_a_load_reads_rate_timeout_window_protocol_and_until():
    extra = (
        "        ratePerSecond: 200\n        timeoutSeconds: 0.5\n"
        "        windowSeconds: 0.25\n        until: kill\n"
    )
    got = load(steps(extra)).lab.steps[0].load
    assert (got.rate, got.timeout, got.window, got.until) == (200, 0.5, 0.25, "kill")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "        until: steady\n",
            "t.yaml:12: spec.steps[0].load.until: a load cannot run until its own step",
        ),
        ("        until: nope\n", "'nope' is no such step; name a later step (kill, settle)"),
        (
            "        ratePerSecond: 0\n",
            "spec.steps[0].load.ratePerSecond: 0 is outside 1-1000 per second",
        ),
        ("        ratePerSecond: 1001\n", "1001 is outside 1-1000 per second"),
        ("        timeoutSeconds: 61\n", "load.timeoutSeconds: 61 is outside 0.1-60 seconds"),
        ("        windowSeconds: 0.01\n", "load.windowSeconds: 0.01 is outside 0.1-60 seconds"),
        ("        count: 5\n", "spec.steps[0].load.count: unknown field"),
        ("        protocol: UDP\n", "UDP"),
    ],
)
def test_bad_loads_are_refused_with_file_line_and_field(extra: str, expected: str):
    assert expected in error(steps(extra))


def test_until_must_name_a_later_step_not_an_earlier_one():
    tail = "  steps:\n    - {name: first, deletePod: web-0}\n" + LOAD.format(
        extra="        until: first\n"
    ).replace("web-1", "web-1")
    assert "'first' is not a later step" in error(tail)


def test_a_load_needs_an_expected_success_rate_within_0_and_1():
    no_expect = steps().replace("        expect: {successRate: 0.9}\n", "")
    assert "spec.steps[0].load.expect: required field is missing" in error(no_expect)
    assert "1.5 is outside [0, 1]" in error(steps().replace("0.9}", "1.5}"))
    assert "load.from: 'ghost' is not a client" in error(
        steps().replace("from: client", "from: ghost")
    )


# -- the pure timeline ------------------------------------------------------------------

MARKS = [StepMark("steady", 0.0, 0.0), StepMark("kill", 0.0, 0.1), StepMark("settle", 0.1, 2.0)]
PLAN = LoadPlan(
    "steady", "client", Target(service="default/web", via="loadBalancer"), success_rate=0.9
)


def sample(rows, **kw) -> LoadSample:
    return LoadSample(rows, pods=("web-0",), nodes=("node-1", "node-2"), target="1.2.3.4:80", **kw)


def test_attempts_count_in_the_window_they_started_in_and_empty_windows_are_not_judged():
    rows = [(0.1, 4.0, DROPPED, -1, 1), (0.5, 0.01, OK, 0, 0), (2.2, 0.01, OK, 0, 0)]
    got = windows(sample(rows), 1.0)
    assert [(w.start, w.sent, w.rate) for w in got] == [(0.0, 2, 0.5), (1.0, 0, 1.0), (2.0, 1, 1.0)]
    assert got[0].entries == {"node-2": 1}
    verdict = judge_load(PLAN, sample(rows), MARKS, {"web-0": "node-1"}, "client")
    assert verdict.details["load"]["worstWindow"]["start"] == 0.0
    assert verdict.details["load"]["windows"][1] == [1.0, 0, 0, 0, 0, 0]


def test_the_longest_outage_runs_from_the_first_failure_to_the_next_success():
    rows = [
        (0.0, 0.01, OK, 0, 0),
        (0.2, 1.0, DROPPED, -1, 1),
        (0.4, 1.0, REJECTED, -1, 1),
        (0.6, 0.01, OK, 0, 0),
        (1.0, 0.3, BROKEN, -1, 1),
    ]
    got = longest_outage(sample(rows), MARKS)
    assert (got.attempts, got.start, got.end, got.step) == (2, 0.2, 0.6, "settle")
    assert round(got.seconds, 6) == 0.4
    # a run that lasts to the end ends when its last attempt ended
    tail = longest_outage(sample(rows[:3]), MARKS)
    assert (tail.attempts, tail.end) == (2, 1.4)
    assert longest_outage(sample([rows[0]]), MARKS) is None


def test_every_window_at_the_rate_passes_and_one_below_fails_naming_window_step_and_node():
    good = [(i / 10, 0.002, OK, 0, i % 2) for i in range(20)]
    v = judge_load(PLAN, sample(good), MARKS, {"web-0": "node-1"}, "client")
    assert v.passed and v.reasons == ()
    assert v.observed["completed"] == 20 and v.observed["pods"] == {"web-0": 20}
    assert v.details["load"]["pods"] == {"web-0": {"served": 20, "node": "node-1"}}
    bad = good[:10] + [(1.0 + i / 10, 0.5, DROPPED, -1, 1) for i in range(2)] + good[12:]
    v = judge_load(PLAN, sample(bad), MARKS, {}, "client")
    assert not v.passed
    assert v.reasons == (
        "window 1.0-2.0 s: success rate 0.80 < 0.9 (8 of 10 completed) during settle; "
        "failures entered at node-2 (2)",
    )
    assert v.details["load"]["nodes"] == {
        "node-1": {"sent": 9, "failed": 0},
        "node-2": {"sent": 11, "failed": 2},
    }
    assert "failures by entry node: node-2 2 of 11" in v.lines


def test_a_capped_or_empty_load_fails_with_its_reason():
    rows = [(0.0, 0.01, OK, 0, 0)]
    v = judge_load(PLAN, sample(rows, capped=True, limit=100_000), MARKS, {}, "client")
    assert not v.passed and "stopped at 100,000 attempts" in v.reasons[0]
    v = judge_load(PLAN, sample([]), MARKS, {}, "client")
    assert v.reasons == ("no attempt started: nothing to judge",)


def test_steps_and_durations_and_the_table_words():
    assert step_at(MARKS, 0.05) == "kill" and step_at(MARKS, 5.0) == "settle"
    rows = [(i / 100, (i + 1) / 1000, OK, 0, 0) for i in range(100)]
    assert durations(rows) == {"p50Ms": 51.0, "p99Ms": 100.0, "maxMs": 100.0}
    assert durations([(0.0, 1.0, DROPPED, -1, 0)]) is None
    v = judge_load(PLAN, sample(rows), MARKS, {}, "client")
    per_step = {s["name"]: s["sent"] for s in v.details["load"]["steps"]}
    assert per_step == {"steady": 0, "kill": 10, "settle": 90}
    assert report.expected_words(v.expected) == "success >= 90% per 1 s"
    assert report.expected_words({}) == "-"
