"""A steady load on a running lab: started by a `load` step, judged when its `until` ends.

The engine (kernel/load.py) runs on its own thread in the source's namespace while
the steps change the lab from this one; here it is aimed, started and stopped, and
its attempts are judged against the steps that ran meanwhile (verdict/timeline.py).

From Python: `with lab.load(plan) as load: ...` (or `load.stop()`), then
`load.verdict(marks)`; `testbed run` does the same for every `load` step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from testbed.core.model import LoadPlan, ProbePlan
from testbed.core.records import Observation
from testbed.core.scenario import Step
from testbed.core.scenario.types import MAX_PROBE_COUNT
from testbed.core.targets import aim, source_address, source_kind
from testbed.core.topology import EDGE, link_name
from testbed.kernel.capture import Point
from testbed.kernel.load import LoadEngine
from testbed.verdict.judge import Verdict
from testbed.verdict.timeline import LoadSample, StepMark, judge_load

if TYPE_CHECKING:
    from testbed.live.lab import Lab


@dataclass(frozen=True)
class Mark:
    """A step's start and end on the monotonic clock (steps.run records them)."""

    name: str
    start: float
    end: float


def _entry(lab: Lab, plan: LoadPlan) -> tuple[list[Point], str | None]:
    """Where to learn each attempt's entry node: the edge's ports, or one node known ahead."""
    kind = source_kind(lab.plan, plan.source)
    via = plan.target.via
    if plan.target.address:
        return [], None
    if kind == "client" and via in ("loadBalancer", "externalIP"):
        edge = lab.wiring.ns(EDGE)
        return [Point(edge, link_name(n.name), n.name) for n in lab.plan.nodes], None
    if via == "nodePort":
        return [], plan.target.node or lab.plan.nodes[0].name
    if kind == "pod":
        return [], lab.plan.pod(plan.source).node
    if kind == "node":
        return [], plan.source
    return [], None


class RunningLoad:
    """One load under way: its engine, when it began, and the pods' nodes it may meet."""

    def __init__(self, lab: Lab, plan: LoadPlan, limit: int = MAX_PROBE_COUNT) -> None:
        self.plan = plan
        probe = ProbePlan(plan.name, plan.source, plan.target, plan.protocol)
        target = aim(lab.plan, probe)
        points, fixed = _entry(lab, plan)
        self.source = plan.source
        self.pod_nodes = {p.name: p.node for p in lab.plan.pods}
        self.engine = LoadEngine(
            lab.wiring.ns(plan.source),
            (target.ip, target.port),
            target.protocol,
            plan.rate,
            plan.timeout,
            limit,
            source_address(lab.plan, plan.source),
            [n.name for n in lab.plan.nodes],
            points,
            fixed,
        )
        self.began = 0.0
        self.sample: LoadSample | None = None

    def start(self) -> RunningLoad:
        self.engine.start()
        self.began = time.monotonic()
        return self

    def stop(self, lab: Lab | None = None) -> LoadSample:
        """End it (once); the pods of `lab`'s plan now join those it knew at the start."""
        if self.sample is None:
            self.sample = self.engine.stop()
        if lab is not None:
            self.pod_nodes.update({p.name: p.node for p in lab.plan.pods})
        return self.sample

    def close(self) -> None:
        self.engine.close()

    def verdict(self, marks: Sequence[Mark] = ()) -> Verdict:
        """Its verdict row; `marks` are the steps that ran meanwhile (its own step first)."""
        sample = self.stop()
        steps = [
            # its own step ends as it begins: it only started the load
            StepMark(m.name, 0.0, 0.0)
            if m.name == self.plan.name
            else StepMark(m.name, max(0.0, m.start - self.began), max(0.0, m.end - self.began))
            for m in marks
        ]
        if not steps:
            steps = [StepMark(self.plan.name, 0.0, sample.seconds)]
        return judge_load(self.plan, sample, steps, self.pod_nodes, self.source)

    def __enter__(self) -> RunningLoad:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.stop()
        else:
            self.close()


class Loads:
    """The loads of one run of steps: each keeps its place among the results, and sees
    every step that ran while it did (steps.run calls back around each step)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self._running: list[tuple[int, RunningLoad, list[Mark]]] = []  # result slot, load
        self._began = 0.0

    def step_began(self) -> None:
        self._began = time.monotonic()

    def start(self, step: Step, slot: int) -> None:
        """Start a load step's load; its verdict will go to results[slot]."""
        assert step.load is not None
        self._running.append((slot, RunningLoad(self.lab, step.load).start(), []))

    def step_ended(self, step: Step, last: bool, out: list) -> None:
        """Note the step; end (and judge into their places) the loads it was the end of."""
        mark = Mark(step.name, self._began, time.monotonic())
        for _slot, _load, marks in self._running:
            marks.append(mark)
        for entry in list(self._running):
            slot, load, marks = entry
            if load.plan.until == step.name or (load.plan.until is None and last):
                self._running.remove(entry)
                load.stop(self.lab)
                out[slot] = (Observation(load.plan.name, (), load.source), load.verdict(marks))

    def close(self) -> None:
        for _slot, load, _marks in self._running:
            load.close()
        self._running.clear()
