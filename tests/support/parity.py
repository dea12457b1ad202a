"""Two runs of one scenario compared probe by probe: our renderer against the real kube-proxy.

Deterministic facts must be equal (the verdict); counts are compared as distributions,
because each lab draws its own ECMP hash seed and kube-proxy's endpoint choice is random:
how attempts ended, which pods answered, and what kind of source address the pods saw
(the client's own, a node's, a pod's). Each comparison is a chi-square homogeneity test at
a level the caller divides among all the comparisons it makes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from testbed.core.model import Plan
from testbed.core.records import Observation
from testbed.verdict.statistics import homogeneity

ENDS = ("completed", "broken", "rejected", "dropped")
CHECKS_PER_PROBE = 3  # ends, pods, source kinds


def source_kinds(plan: Plan, observation: Observation) -> Counter[str]:
    """The source addresses the pods saw, by kind: client (the probe's own), node, pod."""
    nodes = {n.ip for n in plan.nodes} | {n.gateway for n in plan.nodes}
    pods = {p.ip for p in plan.pods}
    kinds: Counter[str] = Counter()
    for ip, n in observation.source_ips.items():
        if ip == observation.source_address:
            kinds["client"] += n
        elif ip in nodes:
            kinds["node"] += n
        elif ip in pods:
            kinds["pod"] += n
        else:
            kinds["other"] += n
    return kinds


def _same(a: Counter[str], b: Counter[str], alpha: float) -> tuple[bool, float]:
    keys = sorted(set(a) | set(b))
    p = homogeneity([a[k] for k in keys], [b[k] for k in keys])
    return p >= alpha, p


def differences(
    plan: Plan,
    ours: Sequence[tuple[bool, Observation]],
    theirs: Sequence[tuple[bool, Observation]],
    alpha: float,
    sticky: Sequence[str] = (),
) -> list[str]:
    """What differs between two runs' probes, given as (passed, observation) in order.

    `sticky`: probes under session affinity, whose one pod is each lab's own draw: there
    the number of pods answering is compared, not which."""
    out: list[str] = []
    if [o.probe for _, o in ours] != [o.probe for _, o in theirs]:
        return [f"probes differ: {[o.probe for _, o in ours]} vs {[o.probe for _, o in theirs]}"]
    for (passed_a, a), (passed_b, b) in zip(ours, theirs, strict=True):
        if passed_a != passed_b:
            out.append(f"{a.probe}: verdict {passed_a} (builtin) vs {passed_b} (upstream)")
        ends_a = Counter({e: a.ended(e) for e in ENDS})
        ends_b = Counter({e: b.ended(e) for e in ENDS})
        pods_a, pods_b = a.pods, b.pods
        if a.probe in sticky:  # which pod is a draw; how many is the behaviour
            pods_a = Counter({"one pod" if len(pods_a) == 1 else "several": pods_a.total()})
            pods_b = Counter({"one pod" if len(pods_b) == 1 else "several": pods_b.total()})
        for what, x, y in (
            ("ends", ends_a, ends_b),
            ("pods", pods_a, pods_b),
            ("source kinds", source_kinds(plan, a), source_kinds(plan, b)),
        ):
            same, p = _same(x, y, alpha)
            if not same:
                out.append(f"{a.probe}: {what} {dict(x)} vs {dict(y)} (p = {p:.2g} < {alpha:.2g})")
    return out
