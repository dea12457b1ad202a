"""Every attempt of a probe, grouped by the way it went: the data a path drawing needs.

An attempt's way is where it entered, where it was rewritten, which pod took it, what
source that pod saw, where the reply came from and how it ended for the source. Attempts
that went the same way form one flow with a count, so a probe of 100,000 attempts is
still a handful of flows. The oracle's fates are grouped the same way, with their cause.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from testbed.core.model import ProbePlan
from testbed.core.records import DELIVERED, Attempt, Observation
from testbed.verdict.prediction import Prediction

MAX_FLOWS = 24  # more ways than this are summed into the last as "other"


def _way(a: Attempt) -> tuple:
    return (
        a.end,
        a.edge_node,
        a.entry_node,
        a.dnat,
        a.snat,
        a.pod,
        a.serving_node,
        a.source_ip,
        a.reply_from,
        a.return_path,
        a.client_reset,
    )


KEYS = (
    "end",
    "edgeNode",
    "entryNode",
    "dnat",
    "snat",
    "pod",
    "servingNode",
    "sourceIP",
    "replyFrom",
    "returnPath",
    "clientReset",
)


def observed_flows(attempts: Iterable[Attempt]) -> list[dict]:
    """The report's `flows`: one item per way, most taken first, with count and share."""
    ways = Counter(_way(a) for a in attempts)
    total = sum(ways.values())
    out = []
    for way, n in sorted(ways.items(), key=lambda kv: (-kv[1], [str(x) for x in kv[0]])):
        item = {k: v for k, v in zip(KEYS, way, strict=True) if v not in (None, False)}
        item["count"] = n
        item["share"] = round(n / total, 4)
        out.append(item)
    if len(out) > MAX_FLOWS:
        rest = out[MAX_FLOWS - 1 :]
        n = sum(f["count"] for f in rest)
        out = out[: MAX_FLOWS - 1] + [{"end": "other", "count": n, "share": round(n / total, 4)}]
    return out


def predicted_flows(prediction: Prediction) -> list[dict]:
    """The oracle's fates as flows: probability, entry node, pod, source seen and cause."""
    grouped: dict[tuple, float] = {}
    for f in prediction.fates:
        if f.probability <= 0:
            continue
        end = f.outcome
        if f.outcome == DELIVERED:
            end = "completed" if f.return_path == "correct" and not f.reset else "broken"
        key = (end, f.entry_node, f.pod, f.serving_node, f.source_ip, f.reply_from, f.why)
        grouped[key] = grouped.get(key, 0.0) + f.probability
    out = []
    names = ("end", "entryNode", "pod", "servingNode", "sourceIP", "replyFrom", "why")
    for key, p in sorted(grouped.items(), key=lambda kv: (-kv[1], [str(x) for x in kv[0]])):
        item = {k: v for k, v in zip(names, key, strict=True) if v}
        item["share"] = round(p, 4)
        out.append(item)
    return out[:MAX_FLOWS]


def route(probe: ProbePlan, observed: Observation, prediction: Prediction) -> dict:
    """Where the probe went from and to, as the scenario asked and as addresses."""
    target = probe.target
    out: dict = {
        "source": probe.source,
        "sourceKind": prediction.source_kind,
        "sourceAddress": observed.source_address or prediction.source_address,
        "target": observed.target or prediction.target,
        "via": target.via if target.service else "address",
        "protocol": probe.protocol,
    }
    if target.service:
        out["service"] = target.service
    if target.node:
        out["node"] = target.node
    return out


def details(probe: ProbePlan, observed: Observation, prediction: Prediction) -> dict:
    """The report keys `route`, `flows` and `oracleFlows` of one probe."""
    return {
        "route": route(probe, observed, prediction),
        "flows": observed_flows(observed.attempts),
        "oracleFlows": predicted_flows(prediction),
    }
