"""What conntrack adds to a prediction: flows pinned to an endpoint, and stray segments.

Pure, like the oracle it finishes:

- a UDP probe with a `sourcePort` is one conntrack flow: every attempt goes where its
  entry DNATs it. `Pin` is the endpoint the flow reached in the previous probe with the
  same source, port and target (the lab remembers it, live/flows.py). While that
  endpoint serves, every attempt goes to it; once it is gone kube-proxy deletes the
  entry after its sync (kubeproxy/conntrack.py) and the flow starts afresh, unless the
  what-if fault `no-conntrack-cleanup` keeps it: then every datagram is DNATed to the
  dead address and dropped.
- an `outOfWindow` probe's stray segment is conntrack INVALID: the connection lives if
  the node drops it (iptables mode's KUBE-FORWARD rule) or if nf_conntrack_tcp_be_liberal
  makes it valid; otherwise the client's RST resets the pod's side.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from testbed.core.model import UDP, Plan, PortPlan, ProbePlan
from testbed.core.records import DELIVERED, DROPPED
from testbed.kubeproxy.conntrack import NO_INVALID_DROP, cleans_conntrack, drops_invalid
from testbed.verdict.prediction import CORRECT, Fate, Prediction


@dataclass(frozen=True)
class Pin:
    """The endpoint a source port's conntrack entry DNATs to, as the last probe saw it."""

    pod: str
    ip: str  # ip:port


def pinned_flow(plan: Plan, probe: ProbePlan) -> bool:
    """Whether attempts of this probe share one conntrack entry (UDP from one port)."""
    return probe.source_port is not None and _udp(plan, probe)


def _port(plan: Plan, probe: ProbePlan) -> PortPlan | None:
    if probe.target.address or probe.target.service is None:
        return None
    svc = plan.service(probe.target.service)
    return next((p for p in svc.ports if probe.target.port in (p.port, p.name)), None)


def _udp(plan: Plan, probe: ProbePlan) -> bool:
    if probe.target.address or probe.target.service is None:
        return probe.protocol.upper() == UDP
    port = _port(plan, probe)
    return port is not None and port.protocol == UDP


def _serving_ips(plan: Plan, probe: ProbePlan) -> set[str]:
    """The target's serving endpoints (ip:port): those kube-proxy keeps entries to."""
    port = _port(plan, probe)
    # a raw address: every serving endpoint of the plan
    ports = [p for s in plan.services for p in s.ports] if port is None else [port]
    return {f"{ep.ip}:{ep.port}" for p in ports for ep in p.endpoints if ep.serving}


def follow(pred: Prediction, plan: Plan, probe: ProbePlan, pin: Pin | None) -> Prediction:
    """The prediction for a pinned UDP flow (see the module's note); others as they are."""
    if not pinned_flow(plan, probe):
        return pred
    if pin is None or not pred.delivered:
        return replace(pred, sticky=True)  # the first datagram chooses; the rest follow
    if pin.ip in _serving_ips(plan, probe):
        mine = [f for f in pred.delivered if f.pod == pin.pod]
        total = sum(f.probability for f in mine)
        if not mine or total <= 0:
            return replace(pred, sticky=True)
        why = f"; the flow's conntrack entry DNATs it to {pin.ip} ({pin.pod}), still serving"
        fates = tuple(replace(f, probability=f.probability / total, why=f.why + why) for f in mine)
        return replace(pred, fates=fates, sticky=True)
    if cleans_conntrack(plan.proxy):
        note = (
            f"kube-proxy deletes the flow's stale conntrack entry to {pin.ip} (deleted pod "
            f"{pin.pod}) after its sync, so the next datagram chooses a serving endpoint afresh"
        )
        return replace(pred, sticky=True, notes=(*pred.notes, note))
    node = pred.delivered[0].entry_node
    why = (
        f"{node} still holds the flow's conntrack entry, DNAT to {pin.ip} (deleted pod "
        f"{pin.pod}); kube-proxy would delete it after its sync, but what-if "
        "no-conntrack-cleanup leaves it, so every datagram goes to the dead address"
    )
    stuck = Fate(1.0, DROPPED, entry_node=node, why=why)
    return replace(pred, fates=(stuck,), sticky=False)


def out_of_window(pred: Prediction, plan: Plan, probe: ProbePlan) -> Prediction:
    """An outOfWindow probe: each delivered connection survives the stray segment or not."""
    if probe.mode != "outOfWindow":
        return pred
    opts = plan.proxy
    if opts.tcp_be_liberal:
        why = (
            "; conntrack.tcpBeLiberal: nf_conntrack_tcp_be_liberal makes the pod's "
            "out-of-window segment valid, it is un-DNATed and the client's socket ignores it"
        )
        reset = False
    elif drops_invalid(opts):
        why = (
            "; the pod's out-of-window segment is conntrack INVALID and KUBE-FORWARD drops "
            "it: the connection lives"
        )
        reset = False
    else:
        cause = (
            "what-if no-invalid-drop leaves out KUBE-FORWARD's INVALID drop"
            if NO_INVALID_DROP in opts.what_if
            else "nftables mode has no INVALID drop"
        )
        why = (
            "; the pod's out-of-window segment is conntrack INVALID, so it is not un-DNATed, "
            f"and {cause}: it reaches the client from the pod's own address, the client's "
            "kernel answers with a RST and that RST resets the pod's connection"
        )
        reset = True
    fates = tuple(
        replace(f, reset=reset, why=f.why + why)
        if f.outcome == DELIVERED and f.return_path == CORRECT
        else f
        for f in pred.fates
    )
    return replace(pred, fates=fates)
