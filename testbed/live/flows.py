"""Flows from one source port across probes: where each went, and the conntrack entries.

A UDP probe with a `sourcePort` is one conntrack flow. The lab remembers where each such
flow went (the pod that answered, its address), so the oracle can predict the next probe
from the same port (verdict/conntrack.py), and it reads the nodes' conntrack entries for
that port after the probe: the report shows them, naming the pod each DNATs to, dead or
alive, under `conntrack` in the JSON and one line each under the probe's row.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from testbed.core.model import Plan, ProbePlan
from testbed.core.records import DELIVERED, Observation
from testbed.core.targets import aim
from testbed.kernel import conntrack
from testbed.verdict.conntrack import Pin
from testbed.verdict.judge import Verdict

if TYPE_CHECKING:
    from testbed.live.lab import Lab


@dataclass
class FlowBook:
    """What a lab remembers of its pinned flows, and every pod address it has had."""

    pins: dict[tuple[str, int, str], Pin] = field(default_factory=dict)
    pods: dict[str, str] = field(default_factory=dict)  # ip -> pod, the dead ones too

    def key(self, plan: Plan, probe: ProbePlan) -> tuple[str, int, str] | None:
        if probe.source_port is None:
            return None
        return (probe.source, probe.source_port, aim(plan, probe).text)

    def pin(self, plan: Plan, probe: ProbePlan) -> Pin | None:
        key = self.key(plan, probe)
        return None if key is None else self.pins.get(key)

    def remember(self, plan: Plan, probe: ProbePlan, observed: Observation) -> None:
        """The last pod the flow reached; a flow that reached none keeps its old pin (the
        entry, stale or not, still says where it goes)."""
        self.pods.update({p.ip: p.name for p in plan.pods})
        key = self.key(plan, probe)
        if key is None:
            return
        reached = [a for a in observed.attempts if a.outcome == DELIVERED and a.pod]
        if reached:
            last = reached[-1]
            ip = last.dnat or next(
                (f"{p.ip}:{aim(plan, probe).port}" for p in plan.pods if p.name == last.pod), ""
            )
            self.pins[key] = Pin(last.pod or "", ip)


def _describe(entry: conntrack.Entry, plan: Plan, book: FlowBook) -> str:
    if entry.dnat is None:
        return ""
    ip = entry.dnat.rpartition(":")[0]
    alive = {p.ip: p.name for p in plan.pods}
    if ip in alive:
        return f" ({alive[ip]})"
    if ip in book.pods:
        return f" (dead pod {book.pods[ip]})"
    return " (no pod)"


def _stray_line(probe: ProbePlan, observed: Observation) -> str:
    """What the captures say the stray segments did: a RST from the source, or nothing."""
    reset = sum(1 for a in observed.attempts if a.client_reset)
    if not reset:
        return f"stray segments: none made {probe.source}'s kernel send a RST"
    return (
        f"stray segments: in {reset} of {observed.sent} attempts one reached {probe.source} "
        f"from the pod's own address and {probe.source}'s kernel answered with a RST"
    )


def after_probe(
    lab: Lab,
    plan: Plan,
    probe: ProbePlan,
    observed: Observation,
    verdict: Verdict,
    notes: tuple[str, ...] = (),
) -> Verdict:
    """Remember the flow, and add the nodes' conntrack entries of its source port (and the
    oracle's word on the flow's entry, when it has one)."""
    lab.flows.remember(plan, probe, observed)
    if probe.mode == "outOfWindow":
        return replace(verdict, lines=(*verdict.lines, _stray_line(probe, observed)))
    if probe.source_port is None:
        return verdict
    found = []
    for node in plan.nodes:
        for e in conntrack.entries(lab.ns(node.name)):
            if e.sport == probe.source_port:
                found.append((node.name, e))
    report = [
        {
            "node": node,
            "protocol": e.protocol,
            "source": f"{e.src}:{e.sport}",
            "destination": f"{e.dst}:{e.dport}",
            **({"dnat": e.dnat} if e.dnat else {}),
            **({"state": e.state} if e.state else {}),
            "pod": _describe(e, plan, lab.flows).strip(" ()") or None,
        }
        for node, e in found
    ]
    lines = [f"{node} conntrack: {e.text()}{_describe(e, plan, lab.flows)}" for node, e in found]
    if not found:
        lines = [f"conntrack: no entry from port {probe.source_port} on any node"]
    lines = [n for n in notes if "conntrack entry" in n] + lines
    return replace(
        verdict, details={**verdict.details, "conntrack": report}, lines=(*verdict.lines, *lines)
    )
