"""Numbers a probe's attempts add up to: latency per path and shares per node and pod.

Pure functions over the plain records (and the oracle's prediction for the
expected shares), so they are testable without root. Latency is split by path:
`local` when the node that took the packet in also hosts the pod that answered,
`cross-node` when the packet had to travel on to another node. A difference
between the paths is claimed only when a Mann-Whitney U test says the two
samples differ by more than their spread; otherwise the words say so.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from testbed.core.records import DELIVERED, Attempt
from testbed.verdict.prediction import Prediction
from testbed.verdict.statistics import (
    ALPHA,  # the judge's per-check level: a difference needs p below it
)

LOCAL = "local"
CROSS_NODE = "cross-node"
PATHS = (LOCAL, CROSS_NODE)
QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))
MIN_SAMPLES = 8  # per path; below this the normal approximation of U is not trusted
NOTHING_SHOWN = "no difference the samples can show"


# -- percentiles ----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 1:
        raise ValueError("q must be within [0, 1]")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def quantiles(values: Sequence[float]) -> dict[str, float]:
    return {name: round(percentile(values, q), 4) for name, q in QUANTILES}


def path_of(attempt: Attempt) -> str | None:
    """local / cross-node for a delivered attempt whose entry and serving node are known."""
    if attempt.outcome != DELIVERED or not attempt.entry_node or not attempt.serving_node:
        return None
    return LOCAL if attempt.entry_node == attempt.serving_node else CROSS_NODE


def samples(attempts: Iterable[Attempt], metric: str) -> dict[str, list[float]]:
    """Path -> the attempts' `connect_ms` or `rtt_ms` values (attempts without one skipped)."""
    out: dict[str, list[float]] = {}
    for a in attempts:
        value = getattr(a, metric)
        path = path_of(a)
        if path is not None and value is not None:
            out.setdefault(path, []).append(value)
    return {p: out[p] for p in PATHS if p in out}


def latency(attempts: Sequence[Attempt]) -> dict:
    """The report's `latency` object: {path: {samples, connect_ms: {p50,p90,p99}, rtt_ms}}."""
    connect = samples(attempts, "connect_ms")
    rtt = samples(attempts, "rtt_ms")
    out: dict = {}
    for path in PATHS:
        if path not in connect:
            continue
        entry: dict = {"samples": len(connect[path]), "connect_ms": quantiles(connect[path])}
        if rtt.get(path):
            entry["rtt_ms"] = quantiles(rtt[path])
        out[path] = entry
    return out


# -- is there a difference? -----------------------------------------------------------


def _ranks(values: Sequence[float]) -> tuple[list[float], float]:
    """Average ranks (1-based) of `values`, and the tie term sum(t^3 - t)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    return ranks, ties


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """U of `a` and the two-sided p-value (normal approximation, tie and continuity corrected)."""
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        raise ValueError("both samples need values")
    ranks, ties = _ranks([*a, *b])
    u = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    n = n1 + n2
    mean = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return u, 1.0
    z = (abs(u - mean) - 0.5) / math.sqrt(var)
    return u, min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


@dataclass(frozen=True)
class Comparison:
    """Whether two samples differ by more than their spread, in one sentence."""

    what: str  # e.g. "connect time"
    names: tuple[str, str]
    sizes: tuple[int, int]
    medians: tuple[float, float] | None
    p: float | None  # None: too few samples to test
    shown: bool
    sentence: str


def compare(
    a: Sequence[float],
    b: Sequence[float],
    names: tuple[str, str] = (LOCAL, CROSS_NODE),
    what: str = "connect time",
    alpha: float = ALPHA,
) -> Comparison:
    """Say which sample is slower only when the test shows it; never otherwise."""
    sizes = (len(a), len(b))
    if min(sizes) < MIN_SAMPLES:
        sentence = (
            f"{what}: too few samples to compare ({names[0]} {sizes[0]}, {names[1]} {sizes[1]}; "
            f"at least {MIN_SAMPLES} each), so {NOTHING_SHOWN}"
        )
        return Comparison(what, names, sizes, None, None, False, sentence)
    medians = (percentile(a, 0.5), percentile(b, 0.5))
    u, p = mann_whitney(a, b)
    shown = p < alpha
    at = f"medians {medians[0]:.3f} vs {medians[1]:.3f} ms, n = {sizes[0]} and {sizes[1]}"
    if not shown:
        test = f"Mann-Whitney p = {p:.2g}, not below alpha {alpha:g}"
        sentence = f"{what}: {NOTHING_SHOWN} between {names[0]} and {names[1]} ({at}; {test})"
    else:
        test = f"Mann-Whitney p = {p:.2g} < alpha {alpha:g}"
        slower, faster = (names[0], names[1]) if u > sizes[0] * sizes[1] / 2 else names[::-1]
        sentence = f"{what}: {slower} is slower than {faster} ({at}; {test})"
    return Comparison(what, names, sizes, medians, p, shown, sentence)


def latency_lines(attempts: Sequence[Attempt]) -> list[str]:
    """Compact table lines: percentiles per path, then the comparison when both paths ran."""
    report = latency(attempts)
    if not report:
        return ["latency: no delivered TCP attempt with a known path"]
    lines = []
    for path, entry in report.items():
        c = entry["connect_ms"]
        text = (
            f"latency {path}: n={entry['samples']} connect p50/p90/p99 "
            f"{c['p50']:.3f}/{c['p90']:.3f}/{c['p99']:.3f} ms"
        )
        if "rtt_ms" in entry:
            r = entry["rtt_ms"]
            text += f", request {r['p50']:.3f}/{r['p90']:.3f}/{r['p99']:.3f} ms"
        lines.append(text)
    if len(report) == 2:
        for metric, what in (("connect_ms", "connect time"), ("rtt_ms", "request time")):
            split = samples(attempts, metric)
            if len(split) == 2:
                lines.append(compare(split[LOCAL], split[CROSS_NODE], what=what).sentence)
    return lines


# -- shares per node --------------------------------------------------------------------


def _fractions(counts: Mapping[str, float]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def node_shares(
    attempts: Sequence[Attempt],
    prediction: Prediction | None = None,
    expected_share: Mapping[str, float] | None = None,
) -> dict:
    """The report's `nodes` object: per node the attempts it took in and served, per pod.

    Expected fractions come from the oracle (entry and serving nodes) and from
    `expected_share` (the scenario's pod shares, else the oracle's); none when the
    service is sticky, where the split is one draw and not a share.
    """
    delivered = [a for a in attempts if a.outcome == DELIVERED]
    entered = Counter(a.entry_node for a in delivered if a.entry_node)
    served = Counter(a.serving_node for a in delivered if a.serving_node)
    pods = Counter(a.pod for a in delivered if a.pod)
    home = {a.pod: a.serving_node for a in delivered if a.pod and a.serving_node}
    want_entry: dict[str, float] = {}
    want_served: dict[str, float] = {}
    want_pod: dict[str, float] = _fractions(dict(expected_share or {}))
    if prediction is not None and not prediction.sticky:
        fates = prediction.delivered
        want_entry = _fractions(_sum(fates, "entry_node"))
        want_served = _fractions(_sum(fates, "serving_node"))
        for f in fates:
            if f.pod and f.serving_node:
                home.setdefault(f.pod, f.serving_node)
        if expected_share is None:
            want_pod = prediction.share
    elif prediction is not None:
        want_pod = {}
    share_entry, share_served, share_pod = (_fractions(c) for c in (entered, served, pods))
    names = sorted({*entered, *served, *want_entry, *want_served, *home.values()})
    out: dict = {}
    for node in names:
        item: dict = {
            "entered": entered.get(node, 0),
            "entryShare": round(share_entry.get(node, 0.0), 4),
            "served": served.get(node, 0),
            "servedShare": round(share_served.get(node, 0.0), 4),
        }
        if want_entry or want_served:
            item["expectedEntryShare"] = round(want_entry.get(node, 0.0), 4)
            item["expectedServedShare"] = round(want_served.get(node, 0.0), 4)
        pod_items = {}
        for pod in sorted(p for p, n in home.items() if n == node):
            entry: dict = {"count": pods.get(pod, 0), "share": round(share_pod.get(pod, 0.0), 4)}
            if pod in want_pod:
                entry["expectedShare"] = round(want_pod[pod], 4)
            pod_items[pod] = entry
        item["pods"] = pod_items
        out[node] = item
    return out


def _sum(fates: Iterable, key: str) -> Counter:
    total: Counter = Counter()
    for f in fates:
        name = getattr(f, key)
        if name:
            total[name] += f.probability
    return total
