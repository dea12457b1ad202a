"""Run scenarios end to end: build, probe with captures, judge, tear down.

The only place where the lab, the probes, the oracle and the judge meet. Each
scenario gets its own lab; a failure to build is reported as that scenario's
error and the next scenario still runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace

from testbed import judge as judging
from testbed import oracle
from testbed.capture import Capture, Frame, write_pcap
from testbed.lab import Lab
from testbed.model import Plan, ProbePlan
from testbed.probe import capture_points
from testbed.probe import run as run_probe
from testbed.records import Observation
from testbed.report import ScenarioResult

Progress = Callable[[str], None]


def load(path: str, proxy_mode: str | None = None) -> Plan:
    from testbed import plan as planner
    from testbed import scenario

    planned = planner.plan(scenario.load(path))
    if proxy_mode:
        planned = replace(planned, proxy=replace(planned.proxy, mode=proxy_mode))
    return planned


def probe_and_judge(
    lab: Lab, capture: Capture, probe: ProbePlan
) -> tuple[Observation, judging.Verdict]:
    observed = run_probe(lab.plan, lab.wiring, capture, probe)
    predicted = oracle.predict(lab.plan, probe, lb_nodes=lab.lb_nodes())
    return observed, judging.judge(probe, observed, predicted, lab.plan)


def _write_pcaps(directory: str, scenario: str, probe: str, frames: list[Frame]) -> None:
    by_point: dict[str, list[Frame]] = {}
    for frame in frames:
        by_point.setdefault(frame.point, []).append(frame)
    folder = os.path.join(directory, scenario, probe)
    os.makedirs(folder, exist_ok=True)
    for point, group in by_point.items():
        write_pcap(os.path.join(folder, point.replace("/", "_") + ".pcap"), group)


def run_plan(
    plan: Plan, pcap_dir: str | None = None, progress: Progress | None = None
) -> tuple[ScenarioResult, list[Observation]]:
    started = time.monotonic()
    verdicts = []
    observations = []
    with Lab(plan) as lab:
        with Capture(capture_points(plan, lab.wiring), keep_raw=bool(pcap_dir)) as capture:
            lab.wait_for_edge()
            for probe in plan.probes:
                if progress:
                    progress(f"{plan.name}: {probe.name} ({probe.count} x {probe.protocol})")
                mark = time.monotonic()
                observed, verdict = probe_and_judge(lab, capture, probe)
                if pcap_dir:
                    _write_pcaps(pcap_dir, plan.name, probe.name, capture.frames(since=mark))
                capture.clear()
                observations.append(observed)
                verdicts.append(verdict)
    result = ScenarioResult(
        name=plan.name,
        file=plan.file,
        proxy_mode=plan.proxy.mode,
        seconds=round(time.monotonic() - started, 3),
        verdicts=tuple(verdicts),
    )
    return result, observations


def run_file(
    path: str,
    proxy_mode: str | None = None,
    pcap_dir: str | None = None,
    progress: Progress | None = None,
) -> ScenarioResult:
    from testbed.scenario import ScenarioError

    started = time.monotonic()
    try:
        plan = load(path, proxy_mode)
    except ScenarioError as exc:
        return ScenarioResult(os.path.basename(path), path, proxy_mode or "iptables", 0.0, (),
                              error=str(exc))
    try:
        return run_plan(plan, pcap_dir, progress)[0]
    except Exception as exc:  # one broken scenario must not stop the library run
        return ScenarioResult(plan.name, path, plan.proxy.mode,
                              round(time.monotonic() - started, 3), (), error=f"{exc}")
