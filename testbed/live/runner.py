"""Run scenarios end to end: build, probe with captures, judge, tear down.

Straight down: runner (a lab per scenario) -> steps.run_scenario (its probes, then its
steps) -> Lab.observe (one probe: send, capture, predict, judge). A failure to build is
reported as that scenario's error and the next scenario still runs. The steps run after
the probes, on the same lab; their probes' verdicts follow the probes' ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from testbed.core import outfiles
from testbed.core.load import load_both
from testbed.core.model import Plan
from testbed.core.records import Observation
from testbed.core.scenario import Scenario, ScenarioError
from testbed.kernel.capture import write_pcap
from testbed.kernel.frames import Frame
from testbed.live import steps
from testbed.live.lab import Lab
from testbed.verdict import layout
from testbed.verdict.report import ScenarioResult

Progress = Callable[[str], None]


def _write_pcaps(directory: str, scenario: str, probe: str, frames: list[Frame]) -> None:
    by_point: dict[str, list[Frame]] = {}
    for frame in frames:
        by_point.setdefault(frame.point, []).append(frame)

    folder = outfiles.directory(directory, scenario, probe)  # no link below `directory`
    try:
        for point, group in by_point.items():
            name = point.replace("/", "_") + ".pcap"
            shown = os.path.join(directory, scenario, probe, name)
            with outfiles.create(folder, name, shown) as handle:
                write_pcap(handle, group)
    finally:
        os.close(folder)


def run_plan(
    plan: Plan,
    pcap_dir: str | None = None,
    progress: Progress | None = None,
    scenario: Scenario | None = None,
) -> tuple[ScenarioResult, list[Observation]]:
    started = time.monotonic()
    lab = Lab(plan, scenario=scenario)
    lab.keep_raw_frames = bool(pcap_dir)

    def after_probe(name: str, mark: float) -> None:
        if pcap_dir:  # the lab kept the raw frames for this
            _write_pcaps(pcap_dir, plan.name, name, lab.captures.frames(since=mark))
            lab.captures.clear()

    with lab:
        results = steps.run_scenario(lab, progress, after_probe)
    observations = [observed for observed, _ in results]
    verdicts = [verdict for _, verdict in results]
    result = ScenarioResult(
        name=plan.name,
        file=plan.file,
        proxy_mode=plan.proxy.mode,
        seconds=round(time.monotonic() - started, 3),
        verdicts=tuple(verdicts),
        description=plan.description,
        topology=layout.topology(plan, scenario.lab.steps if scenario else ()),
    )
    return result, observations


def run_path(
    path: str,
    proxy_mode: str | None = None,
    pcap_dir: str | None = None,
    progress: Progress | None = None,
    loaded: tuple[Scenario, Plan] | None = None,
) -> tuple[ScenarioResult, list[Observation]]:
    """One scenario file end to end: its result and observations (pictures need every attempt).

    `loaded` is the (scenario, plan) when the caller has loaded the file already.
    """
    started = time.monotonic()
    try:
        scenario, plan = loaded or load_both(path, proxy_mode)
    except ScenarioError as exc:
        failed = ScenarioResult(
            os.path.basename(path), path, proxy_mode or "iptables", 0.0, (), error=str(exc)
        )
        return failed, []
    try:
        return run_plan(plan, pcap_dir, progress, scenario)
    except Exception as exc:  # one broken scenario must not stop the library run
        failed = ScenarioResult(
            plan.name,
            path,
            plan.proxy.mode,
            round(time.monotonic() - started, 3),
            (),
            error=f"{exc}",
            description=plan.description,
        )
        return failed, []
