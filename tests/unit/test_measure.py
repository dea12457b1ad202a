"""Latency percentiles and the path comparison, shares per node, and the pictures."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.core.records import Attempt, Observation
from testbed.verdict import measure
from testbed.verdict.judge import Verdict
from testbed.verdict.oracle import Fate, Prediction
from testbed.verdict.report import ScenarioResult, table


def attempt(entry: str, serving: str, connect: float | None = 0.2, rtt: float | None = 0.5, **kw):
    pod = kw.pop("pod", f"web-{serving[-1]}")
    return Attempt(
        kw.pop("outcome", "delivered"),
        pod=pod,
        entry_node=entry,
        serving_node=serving,
        connect_ms=connect,
        rtt_ms=rtt,
        **kw,
    )


# -- percentiles --------------------------------------------------------------------------


def test_percentile_interpolates_between_closest_ranks():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert measure.percentile(values, 0.5) == 3.0
    assert measure.percentile(values, 0.0) == 1.0 and measure.percentile(values, 1.0) == 5.0
    assert measure.percentile(values, 0.9) == pytest.approx(4.6)
    assert measure.percentile([1.0, 2.0], 0.99) == pytest.approx(1.99)
    assert measure.percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        measure.percentile([], 0.5)
    with pytest.raises(ValueError):
        measure.percentile([1.0], 1.5)


@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=60))
def test_percentiles_are_ordered_and_within_the_sample(values):
    q = measure.quantiles(values)
    assert min(values) - 1e-3 <= q["p50"] <= q["p90"] <= q["p99"] <= max(values) + 1e-3


def test_latency_is_split_by_path_and_skips_what_it_cannot_place():
    attempts = [
        attempt("node-1", "node-1", 0.1, 0.3),
        attempt("node-1", "node-1", 0.3, 0.5),
        attempt("node-2", "node-1", 0.5, 0.9),
        attempt("node-2", "node-1", None, None),  # no handshake time: not counted
        attempt("node-2", "node-1", 0.5, 0.9, outcome="dropped"),
        Attempt("delivered", pod="web-1", connect_ms=0.4),  # path unknown
    ]
    report = measure.latency(attempts)
    assert list(report) == ["local", "cross-node"]
    assert report["local"]["samples"] == 2
    assert report["local"]["connect_ms"] == {"p50": 0.2, "p90": 0.28, "p99": 0.298}
    assert report["cross-node"] == {
        "samples": 1,
        "connect_ms": {"p50": 0.5, "p90": 0.5, "p99": 0.5},
        "rtt_ms": {"p50": 0.9, "p90": 0.9, "p99": 0.9},
    }
    assert measure.latency([Attempt("dropped")]) == {}


# -- the difference test ------------------------------------------------------------------


def test_mann_whitney_matches_the_textbook_value_for_separated_samples():
    a = [float(x) for x in range(1, 11)]
    b = [float(x) for x in range(11, 21)]
    u, p = measure.mann_whitney(a, b)
    assert u == 0
    # z = (50 - 0.5) / sqrt(10 * 10 * 21 / 12) = 3.7418; two-sided p = erfc(z / sqrt 2)
    assert p == pytest.approx(math.erfc(3.7418 / math.sqrt(2)), rel=1e-3)
    u_rev, p_rev = measure.mann_whitney(b, a)
    assert u_rev == 100 and p_rev == pytest.approx(p)


def test_mann_whitney_handles_ties_and_constant_samples():
    assert measure.mann_whitney([1.0, 1.0, 1.0], [1.0, 1.0]) == (3.0, 1.0)
    u, p = measure.mann_whitney([1.0, 2.0, 2.0, 3.0], [2.0, 2.0, 3.0, 4.0])
    assert 0 <= p <= 1 and u == pytest.approx(4.5)


def test_compare_claims_a_difference_only_when_the_samples_show_it():
    rng = random.Random(7)
    local = [0.20 + rng.gauss(0, 0.02) for _ in range(200)]
    far = [0.30 + rng.gauss(0, 0.02) for _ in range(200)]
    shown = measure.compare(local, far)
    assert shown.shown and shown.p is not None and shown.p < measure.ALPHA
    assert shown.sentence.startswith("connect time: cross-node is slower than local")
    flipped = measure.compare(far, local)  # the first sample is called local
    assert flipped.sentence.startswith("connect time: local is slower than cross-node")

    same = [0.20 + rng.gauss(0, 0.05) for _ in range(200)]
    other = [0.20 + rng.gauss(0, 0.05) for _ in range(200)]
    unclear = measure.compare(same, other)
    assert not unclear.shown
    assert measure.NOTHING_SHOWN in unclear.sentence and "slower" not in unclear.sentence


def test_compare_with_too_few_samples_says_nothing_is_shown():
    result = measure.compare([0.1] * 3, [9.0] * 30)
    assert not result.shown and result.p is None and result.medians is None
    assert "too few samples" in result.sentence and measure.NOTHING_SHOWN in result.sentence


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.01, 10, allow_nan=False), min_size=8, max_size=80))
def test_a_sample_never_differs_from_itself(values):
    assert not measure.compare(values, list(reversed(values))).shown


def test_latency_lines_give_percentiles_per_path_and_the_comparison():
    attempts = [attempt("node-1", "node-1", 0.2, 0.4) for _ in range(10)]
    attempts += [attempt("node-2", "node-1", 0.2, 0.4) for _ in range(10)]
    lines = measure.latency_lines(attempts)
    assert lines[0] == (
        "latency local: n=10 connect p50/p90/p99 0.200/0.200/0.200 ms, request 0.400/0.400/0.400 ms"
    )
    assert lines[1].startswith("latency cross-node: n=10")
    assert lines[2].startswith(f"connect time: {measure.NOTHING_SHOWN}")
    assert lines[3].startswith(f"request time: {measure.NOTHING_SHOWN}")
    assert measure.latency_lines([Attempt("dropped")]) == [
        "latency: no delivered TCP attempt with a known path"
    ]


# -- shares per node ------------------------------------------------------------------------


def local_packed_prediction() -> Prediction:
    """Local through the edge: two nodes in the pool, three pods on node-1, one on node-2."""
    fates = [
        Fate(0.5 / 3, "delivered", f"p-{i}", entry_node="node-1", serving_node="node-1")
        for i in range(3)
    ]
    fates.append(Fate(0.5, "delivered", "lone", entry_node="node-2", serving_node="node-2"))
    return Prediction(tuple(fates), "client", "client", "203.0.113.10", "198.51.100.10:80")


def test_node_shares_count_entries_and_pods_against_the_oracle():
    attempts = [attempt("node-1", "node-1", pod="p-0") for _ in range(20)]
    attempts += [attempt("node-1", "node-1", pod="p-1") for _ in range(10)]
    attempts += [attempt("node-2", "node-2", pod="lone") for _ in range(30)]
    attempts += [Attempt("dropped", entry_node="node-3")]
    nodes = measure.node_shares(attempts, local_packed_prediction())
    assert list(nodes) == ["node-1", "node-2"]
    one = nodes["node-1"]
    assert (one["entered"], one["entryShare"], one["expectedEntryShare"]) == (30, 0.5, 0.5)
    assert (one["served"], one["servedShare"], one["expectedServedShare"]) == (30, 0.5, 0.5)
    assert one["pods"]["p-0"] == {"count": 20, "share": 0.3333, "expectedShare": 0.1667}
    assert one["pods"]["p-2"] == {"count": 0, "share": 0.0, "expectedShare": 0.1667}
    assert nodes["node-2"]["pods"] == {"lone": {"count": 30, "share": 0.5, "expectedShare": 0.5}}


def test_node_shares_take_the_scenarios_pod_shares_and_none_when_sticky():
    attempts = [attempt("node-1", "node-1", pod="p-0"), attempt("node-2", "node-2", pod="lone")]
    pred = local_packed_prediction()
    nodes = measure.node_shares(attempts, pred, {"p-0": 0.3, "lone": 0.3})
    assert nodes["node-1"]["pods"]["p-0"]["expectedShare"] == 0.5
    assert "expectedShare" not in nodes["node-1"]["pods"]["p-1"]
    from dataclasses import replace

    sticky = measure.node_shares(attempts, replace(pred, sticky=True))
    assert "expectedEntryShare" not in sticky["node-1"]
    assert "expectedShare" not in sticky["node-1"]["pods"]["p-0"]


# -- the table and the pictures ----------------------------------------------------------


def share_verdict(name: str, counts: dict[str, int]) -> Verdict:
    attempts = [attempt(_home(pod), _home(pod), pod=pod) for pod, n in counts.items()]
    attempts = [a for a, n in zip(attempts, counts.values(), strict=True) for _ in range(n)]
    obs = Observation(name, tuple(attempts), "client", "203.0.113.10", "198.51.100.10:80")
    pred = local_packed_prediction()
    return Verdict(
        name=name,
        passed=True,
        reasons=(),
        observed=obs.as_report(),
        expected={"outcome": "delivered", "share": pred.share},
        oracle={},
        details={"nodes": measure.node_shares(attempts, pred), "latency": {}},
        lines=("latency local: n=3",),
    )


def _home(pod: str) -> str:
    return "node-2" if pod == "lone" else "node-1"


def test_table_shows_a_verdicts_lines_under_its_row():
    verdict = share_verdict("p", {"p-0": 1, "lone": 1})
    text = table([ScenarioResult("s", "s.yaml", "iptables", 1.0, (verdict,))])
    assert "      | latency local: n=3" in text.splitlines()


def test_plots_write_readable_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    from testbed.verdict import plots

    counts = {"p-0": 70, "p-1": 65, "p-2": 66, "lone": 199}
    first, second = share_verdict("packed", counts), share_verdict("again", counts)
    convergence = share_verdict("watch", {"p-0": 10})
    info = {
        "after": "kill",
        "settleRounds": 4,
        "settledSeconds": 0.9,
        "poolChangedSeconds": 0.7,
        "poolChanges": "node-2 left 198.51.100.10's pool",
        "beforeConvergence": {"sent": 20, "delivered": 12, "dropped": 8, "rejected": 0},
        "afterConvergence": {"sent": 10, "delivered": 10, "dropped": 0, "rejected": 0},
        "timeline": [[0.0, 10, 4], [0.4, 10, 4], [1.0, 10, 0]],
    }
    from dataclasses import replace

    convergence = replace(convergence, details={**convergence.details, "convergence": info})
    result = ScenarioResult(
        "s", "s.yaml", "nftables", 1.0, (first, second, convergence), description="a story"
    )
    rng = random.Random(1)
    timed = [attempt("node-1", "node-1", rng.uniform(0.1, 0.3)) for _ in range(30)]
    timed += [attempt("node-2", "node-1", rng.uniform(0.2, 0.4)) for _ in range(30)]
    latency = Observation("timed", tuple(timed))
    written = plots.write(str(tmp_path), result, [latency], {"timed"})
    names = sorted(p.rsplit("/", 1)[1] for p in written)
    assert names == [
        "s-nftables-again-shares.png",
        "s-nftables-outcomes.png",
        "s-nftables-packed-shares.png",
        "s-nftables-shares.png",
        "s-nftables-timed-latency.png",
        "s-nftables-watch-convergence.png",
        "s-nftables-watch-shares.png",
    ]
    for path in written:
        with open(path, "rb") as handle:
            data = handle.read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plots_say_how_to_get_matplotlib_when_it_is_missing(monkeypatch):
    import builtins

    from testbed.verdict import plots

    real = builtins.__import__

    def no_matplotlib(name, *args, **kw):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert not plots.available()
    with pytest.raises(plots.PlotsUnavailable) as err:
        plots._figure(1, 1)
    assert str(err.value) == "plots need matplotlib: pip install 'kubeproxy-testbed[plots]'"


def test_a_scenario_whose_probes_only_drop_still_gets_a_picture(tmp_path):
    pytest.importorskip("matplotlib")
    from testbed.verdict import plots

    dropped = Verdict(
        "local-via-node-2", True, (), {"sent": 30, "completed": 0, "dropped": 30}, {}, {}
    )
    result = ScenarioResult("only-drops", "s.yaml", "iptables", 1.0, (dropped,))
    written = plots.write(str(tmp_path), result, [], ())
    assert [p.rsplit("/", 1)[1] for p in written] == ["only-drops-iptables-outcomes.png"]


def test_share_whiskers_are_at_the_tests_alpha_and_the_axis_stops_at_100():
    pytest.importorskip("matplotlib")
    from testbed.verdict import plots
    from testbed.verdict.statistics import ALPHA

    assert math.erfc(plots.Z / math.sqrt(2)) == pytest.approx(ALPHA, rel=1e-6)
    assert plots.Z > 4  # far wider than the 1.96 of a 95% interval
    lone = share_verdict("lone", {"lone": 40})
    assert plots._top(lone) <= 100
