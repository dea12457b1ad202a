"""Steps: changes to a running lab and the probes that watch the edge follow them.

A change (deletePod, scale, setPolicy, proxyHealthy) reloads the nodes' rules at
once, but the edge load balancer learns of it only through its health checks:
a node leaves a VIP's pool after `unhealthyThreshold` bad answers in a row and
joins after `healthyThreshold` good ones, one answer per check round. Until
then the edge may still send flows to a node that now drops them. The edge has
settled once that many full rounds have run after the change; one round is
added because the round under way when the change landed may have asked a node
before it.

`probeDuringConvergence` sends its probe in batches of `count` attempts, about
every `BATCH_EVERY` seconds, from the change until the edge has settled, then
`AFTER_BATCHES` more; the verdict judges the attempts sent after convergence
and reports the drops before and after.

A probe with `measureLatency` sends its attempts one after another (`observe`):
sent all at once, each connection's time would mostly be the wait for the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from testbed.core.model import ProbePlan
from testbed.core.records import COMPLETED, DELIVERED, DROPPED, REJECTED, Observation
from testbed.core.scenario import Step
from testbed.kernel import signals
from testbed.kernel.checkpoint import reached
from testbed.kernel.probe import DEFAULT_TIMEOUT
from testbed.live import tracing
from testbed.live.load import Loads
from testbed.verdict import judge, oracle
from testbed.verdict.judge import Verdict

if TYPE_CHECKING:
    from testbed.live.lab import Lab  # the Lab runs steps; steps only call it back

BATCH_EVERY = 0.1  # seconds between the starts of two batches, at the least
BATCH_TIMEOUT = 0.3  # before the edge settles: unanswered this long counts as dropped
AFTER_BATCHES = 5  # batches sent once the edge has settled: the sample that is judged
SETTLE_TIMEOUT = 30.0  # give up waiting for the edge after this long
EXTRA_ROUNDS = 1  # the round under way when the change landed

Progress = Callable[[str], None]


@dataclass
class _Since:
    """The last change: when it landed, at which check round, and the pools before it."""

    at: float
    round: int
    pools: dict[str, tuple[str, ...]]
    step: str


def settle_rounds(lab: Lab) -> int:
    cfg = lab.plan.load_balancer.health
    return max(cfg.healthy_threshold, cfg.unhealthy_threshold) + EXTRA_ROUNDS


def _checking(lab: Lab) -> bool:
    """Whether the edge runs health checks in the background (else it never changes)."""
    return lab.edge is not None and lab.edge._thread is not None


def _rounds(lab: Lab) -> int:
    return lab.edge.rounds if _checking(lab) else 0


def _settled(lab: Lab, since: _Since) -> bool:
    return not _checking(lab) or _rounds(lab) >= since.round + settle_rounds(lab)


def wait_settled(lab: Lab, since: _Since | None, timeout: float = SETTLE_TIMEOUT) -> bool:
    """Wait until the edge has had enough check rounds after the change `since`."""
    if not _checking(lab):
        return True
    start = since.round if since else _rounds(lab)
    target = start + settle_rounds(lab)
    return lab.edge.wait_rounds(max(0, target - _rounds(lab)), timeout=timeout)


def _narrate(progress: Progress | None, step: Step):
    """For steps that take time: each instant's pod events as a progress line."""
    if progress is None:
        return None
    words = {"create": "starting", "ready": "ready", "terminate": "terminating", "gone": "gone"}

    def told(at: float, events) -> None:
        done = ", ".join(f"{e.pod} {words[e.what]}" for e in events)
        progress(f"{step.name}: +{at:.1f} s: {done}")

    return told


def _change(lab: Lab, step: Step, progress: Progress | None = None) -> None:
    if step.action == "deletePod":
        lab.delete_pod(step.pod)
    elif step.action == "scale":
        lab.scale(step.deployment, step.replicas)
    elif step.action == "setPolicy":
        lab.set_policy(step.service, step.external_policy, step.internal_policy)
    elif step.action == "proxyHealthy":
        lab.set_proxy_health(step.node, step.healthy)
    elif step.action == "edgeHealthChecks":
        lab.set_edge_health_checks(step.healthy)
    elif step.action == "rollout":
        lab.rollout(step.deployment, step.rollout, _narrate(progress, step))
    elif step.action == "drainNode":
        lab.drain_node(step.node, step.drain, _narrate(progress, step))
    elif step.action == "taintNode":
        lab.taint_node(step.node, step.taint.key, step.taint.value, step.taint.effect)
    else:
        raise ValueError(f"{step.action} is not a change")


def _merge(probe: ProbePlan, parts: Sequence[Observation]) -> Observation:
    attempts = tuple(a for part in parts for a in part.attempts)
    first = parts[0] if parts else Observation(probe.name, ())
    return Observation(probe.name, attempts, first.source, first.source_address, first.target)


def _counts(obs: Observation) -> dict[str, int]:
    return {
        "sent": obs.sent,
        "completed": obs.ended(COMPLETED),
        "delivered": obs.count(DELIVERED),
        "dropped": obs.count(DROPPED),
        "rejected": obs.count(REJECTED),
    }


def _batch(lab: Lab, probe: ProbePlan, timeout: float = BATCH_TIMEOUT) -> Observation:
    return lab.send(probe, timeout)


def observe(lab: Lab, probe: ProbePlan) -> tuple[Observation, Verdict]:
    """Lab.observe, except that a probe measuring latency sends one attempt at a time, and
    a probe with `trace: true` then sends one marked packet (live/tracing.py)."""
    observed, verdict = _observe(lab, probe)
    return observed, (tracing.traced(lab, probe, verdict) if probe.trace else verdict)


def _observe(lab: Lab, probe: ProbePlan) -> tuple[Observation, Verdict]:
    if not probe.measure_latency:
        return lab.observe(probe)

    one = replace(probe, count=1)
    observed = _merge(probe, [_batch(lab, one, DEFAULT_TIMEOUT) for _ in range(probe.count)])
    predicted = oracle.predict(lab.plan, probe, lb_nodes=lab.lb_nodes())
    return observed, judge.judge(probe, observed, predicted, lab.plan)


def _pool_moves(before: dict[str, tuple[str, ...]], after: dict[str, tuple[str, ...]]) -> str:
    words = []
    for vip in sorted(before.keys() | after.keys()):
        old, new = set(before.get(vip, ())), set(after.get(vip, ()))
        for node in sorted(old - new):
            words.append(f"{node} left {vip}'s pool")
        for node in sorted(new - old):
            words.append(f"{node} joined {vip}'s pool")
    return ", ".join(words)


def during_convergence(lab: Lab, probe: ProbePlan, since: _Since) -> tuple[Observation, Verdict]:
    """Batches from the change until the edge settles and a few after; judge the after part."""

    before: list[Observation] = []
    after: list[Observation] = []
    moved_at: float | None = None
    deadline = time.monotonic() + SETTLE_TIMEOUT
    settled_at: float | None = None
    timeline = []  # per batch: seconds since the change, sent, dropped, completed
    while len(after) < AFTER_BATCHES and time.monotonic() < deadline:
        started = time.monotonic()
        if moved_at is None and lab.lb_nodes() != since.pools:
            moved_at = started
        if settled_at is None and _settled(lab, since):
            settled_at = started
        # the judged batches wait as long as any probe does: a slow answer on a busy
        # machine is not a drop; the short wait only sharpens the timeline before
        batch = _batch(lab, probe, BATCH_TIMEOUT if settled_at is None else DEFAULT_TIMEOUT)
        (after if settled_at is not None else before).append(batch)
        row = [
            round(started - since.at, 3),
            batch.sent,
            batch.count(DROPPED),
            batch.ended(COMPLETED),
        ]
        timeline.append(row)
        time.sleep(max(0.0, BATCH_EVERY - (time.monotonic() - started)))
    early, late = _merge(probe, before), _merge(probe, after)
    predicted = oracle.predict(lab.plan, probe, lb_nodes=lab.lb_nodes())
    verdict = judge.judge(probe, late, predicted, lab.plan)
    reasons = list(verdict.reasons)
    if settled_at is None:
        reasons.append(f"the edge did not settle within {SETTLE_TIMEOUT:g} s of {since.step}")
    moves = _pool_moves(since.pools, lab.lb_nodes()) or "no node joined or left a pool"
    info = {
        "after": since.step,
        "settleRounds": settle_rounds(lab),
        "settledSeconds": round(settled_at - since.at, 3) if settled_at else None,
        "poolChangedSeconds": round(moved_at - since.at, 3) if moved_at else None,
        "poolChanges": moves,
        "batches": {"before": len(before), "after": len(after), "size": probe.count},
        "beforeConvergence": _counts(early),
        "afterConvergence": _counts(late),
        "timeline": timeline,
    }
    seen = f" after {moved_at - since.at:.2f} s" if moved_at else ""
    settled = f"{settled_at - since.at:.2f} s" if settled_at else "never"
    lines = [
        f"convergence after {since.step}: {moves}{seen}; edge settled in {settled} "
        f"({settle_rounds(lab)} check rounds)",
        f"dropped before convergence: {early.count(DROPPED)} of {early.sent}; "
        f"after: {late.count(DROPPED)} of {late.sent}",
    ]
    verdict = replace(
        verdict,
        passed=not reasons,
        reasons=tuple(reasons),
        details={**verdict.details, "convergence": info},
        lines=(*lines, *verdict.lines),
    )
    return late, verdict


def run(
    lab: Lab, steps: Sequence[Step], progress: Progress | None = None
) -> list[tuple[Observation, Verdict]]:
    """Run the steps in order; every probe step gives an (Observation, Verdict).

    A load step starts a load that runs on in the background; its verdict takes the
    load step's place in the results once its `until` step (or the last) has ended.
    """
    loads = Loads(lab)
    try:
        return [r for r in _run(lab, steps, progress, loads) if r is not None]
    finally:
        loads.close()  # an error stopped the steps: let go of the loads under way


def _run(
    lab: Lab, steps: Sequence[Step], progress: Progress | None, loads: Loads
) -> list[tuple[Observation, Verdict] | None]:
    out: list[tuple[Observation, Verdict] | None] = []
    since: _Since | None = None
    for step in steps:
        if progress:
            progress(f"{lab.plan.name}: step {step.name} ({step.action})")
        loads.step_began()
        if step.changes_lab:
            pools = lab.lb_nodes()
            _change(lab, step, progress)
            since = _Since(time.monotonic(), _rounds(lab), pools, step.name)
        elif step.action == "load":
            out.append(loads.start(step, len(out)))  # a place kept for its verdict
        elif step.action == "waitForHealthChecks":
            wait_settled(lab, since)
        elif step.action == "probeDuringConvergence":
            assert step.probe is not None and since is not None  # the loader checks both
            out.append(during_convergence(lab, step.probe, since))
        else:
            assert step.probe is not None
            out.append(observe(lab, step.probe))
        loads.step_ended(step, last=step is steps[-1], out=out)
    return out


def run_scenario(
    lab: Lab,
    progress: Progress | None = None,
    after_probe: Callable[[str, float], None] | None = None,
) -> list[tuple[Observation, Verdict]]:
    """Every probe of the lab's scenario, then its steps: what `testbed run` does on a lab.

    `after_probe(name, started)` runs after each probe (the runner writes pcaps there).
    """
    lab.wait_for_edge()
    results = []
    for probe in lab.plan.probes:
        signals.check()  # a stop whose exception was swallowed still stops here
        if progress:
            progress(f"{lab.plan.name}: {probe.name} ({probe.count} x {probe.protocol})")
        started = time.time()
        results.append(observe(lab, probe))
        if after_probe:
            after_probe(probe.name, started)
        reached("probing")
    if lab.scenario is not None and lab.scenario.lab.steps:
        results += run(lab, lab.scenario.lab.steps, progress)
    return results
