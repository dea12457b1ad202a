"""The words of verdicts: percentages, lists, addresses and shares, as the report says them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from testbed.core.model import Plan
from testbed.verdict.prediction import MIXED, Prediction

MAX_SENTENCES = 5  # per check, so one bad probe does not flood the report


# -- words ------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.3g}%"


def and_list(items: Sequence[str]) -> str:
    items = list(items)
    if not items:
        return "none"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def capped(sentences: list[str]) -> list[str]:
    if len(sentences) <= MAX_SENTENCES:
        return sentences
    rest = len(sentences) - MAX_SENTENCES + 1
    return sentences[: MAX_SENTENCES - 1] + [f"... and {rest} more disagreements of this kind"]


def describe_ip(plan: Plan, ip: str) -> str:
    """Whose address this is, in the words of the lab."""
    for node in plan.nodes:
        if ip in (node.ip, node.gateway):
            return f"an address of {node.name}"
    for pod in plan.pods:
        if pod.ip == ip:
            return f"the address of pod {pod.name}"
    for client in plan.clients:
        if client.ip == ip:
            if len(plan.clients) == 1:
                return "the client's address"
            return f"the address of client {client.name}"
    if ip in (plan.network.edge_fabric_ip, plan.network.edge_external_ip):
        return "an address of the edge router"
    for svc in plan.services:
        if ip == svc.cluster_ip or ip in svc.lb_ips or ip in svc.external_ips:
            return f"a service address of {svc.key}"
    if ip.startswith("127."):
        return "a loopback address"
    return "an address the lab does not know"


def describe_label(label: str | None, pred: Prediction, nodes: Iterable[str]) -> str:
    if label is None:
        return "nothing delivered"
    if label == "client":
        who = "client's" if pred.source_kind == "client" else "source's own"
        return f"the {who} address {pred.source_address}"
    if label == "node":
        addrs = [f"{n}: {' or '.join(pred.addresses_of(n))}" for n in nodes]
        return f"an address of the entry node ({'; '.join(addrs)})"
    if label == MIXED:
        return "different addresses for different pods"
    return f"the address {label}"


def describe_outcomes(outcomes: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {pct(v)}" for k, v in outcomes.items())
