"""Sections 1 and 2: the default lab, and labs at scale (each in a child process)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from testbed.bench.figures import (
    DEFAULT_SCENARIO,
    Figure,
    median,
)
from testbed.bench.sandbox import (
    ChildRun,
    LabRun,
    Sandbox,
    _netns_count,
    repeat,
    run_child,
    scale_plan,
    settle,
    time_ip_batch,
    time_lab,
)
from testbed.bench.worlds import (
    Config,
    ip_batch,
)

if TYPE_CHECKING:
    from testbed.core.topology import Wiring

# -- 1. the default lab ----------------------------------------------------------------


def bench_default(cfg: Config, sandbox: Sandbox, log: Callable[[str], None]) -> list[Figure]:
    from testbed.core import topology
    from testbed.core.load import load

    plan = load(str(DEFAULT_SCENARIO))
    floors: list[float] = []

    def floor() -> float:
        batch = ip_batch(topology.wire(plan, "floor"), sandbox.name("default") + "-")
        built, torn = time_ip_batch(batch)
        floors.append(built + torn)
        return built + torn

    runs: dict[bool, list[LabRun]] = {False: [], True: []}
    for serve in (False, True):
        log(f"default lab, serve={serve}")
        for i in range(cfg.warmup + cfg.reps):
            run = time_lab(plan, serve)
            if i >= cfg.warmup:
                runs[serve].append(run)
    log("default lab, ip -batch floor")
    floor_samples = repeat(floor, cfg.reps, cfg.warmup)
    quiet = runs[False]
    figures = [
        Figure(
            f"default lab up+down, serve={serve}",
            "s",
            tuple(r.total for r in runs[serve]),
            floor_samples,
            "ip -batch build+delete of the same wiring",
            0.5,
            "<",
            extra={
                "up": [r.up for r in runs[serve]],
                "down": [r.down for r in runs[serve]],
                "namespaces": runs[serve][0].namespaces,
            },
        )
        for serve in (False, True)
    ]
    if all(r.wiring is not None for r in quiet):
        figures.append(
            Figure(
                "default wiring build+teardown vs ip -batch",
                "s",
                tuple(r.wiring + r.down for r in quiet),  # type: ignore[operator]
                floor_samples,
                "ip -batch build+delete",
                1.5,
                "<=",
                on_ratio=True,
                note="lab side: namespaces..routes of Lab.up (sysctls excluded) + Lab.down",
            )
        )
    return figures


# -- 2. scale --------------------------------------------------------------------------


def child_scale(spec: str, lab_id: str) -> int:
    """In a child process: build and tear down one scale lab, print its timings as JSON."""
    from testbed.kernel import signals

    nodes, pods = (int(x) for x in spec.split("x"))
    plan = scale_plan(nodes, pods)
    with signals.handled():
        run = time_lab(plan, serve=False, lab_id=lab_id)
    print(
        json.dumps(
            {
                "up": run.up,
                "down": run.down,
                "wiring": run.wiring,
                "rules": run.rules,
                "namespaces": run.namespaces,
            }
        )
    )
    return 0


def _scale_note(labs: list[dict[str, Any]], has_target: bool) -> str:
    """Where the time goes: wiring, rule sync, the rest (sysctls, state, teardown)."""
    if not labs or labs[0].get("rules") is None or labs[0].get("wiring") is None:
        return "" if has_target else "no target at this size"
    wiring = median([r["wiring"] for r in labs])
    rules = median([r["rules"] for r in labs])
    rest = median([r["up"] + r["down"] - r["wiring"] - r["rules"] for r in labs])
    split = (
        f"medians: wiring {wiring:.1f} s, rule sync {rules:.1f} s,"
        f" rest (sysctls, state, teardown) {rest:.1f} s; serve=False"
    )
    return split if has_target else f"{split}; no target at this size"


def _scale_lab(sandbox: Sandbox, spec: str, rep: int, wiring: Wiring, log) -> ChildRun:
    """One scale lab built and torn down in a child; retried when something else broke it.

    Other labs' `testbed clean` removes every `tb-` namespace it finds, a lab under
    construction included; a repetition that fails that way is run again (twice at most).
    """
    from testbed.core.topology import ns_name
    from testbed.kernel import netbuild, state

    for attempt in range(3):
        lab_id = f"bench{os.getpid()}-{spec}-{rep}{'abc'[attempt]}"
        argv = [sys.executable, "-m", "testbed.bench", "--child-scale", spec, "--lab-id", lab_id]
        try:
            child = run_child(sandbox, argv)
        finally:  # a child killed half-way leaves namespaces its Lab could not remove
            netbuild.remove_all(ns_name(lab_id, s) for s in wiring.namespaces)
            state.forget(lab_id)
        if child.code == 0:
            return child
        log(f"scale {spec}: lab child failed ({child.why}); trying again")
    raise RuntimeError(f"scale child {spec} failed three times; last: {child.why}")


def bench_scale(cfg: Config, sandbox: Sandbox, log: Callable[[str], None]) -> list[Figure]:

    figures: list[Figure] = []
    first = True
    for nodes, pods in cfg.scale:
        spec = f"{nodes}x{pods}"
        try:
            figures += _bench_scale_size(cfg, sandbox, log, nodes, pods, warm=first)
        except Exception as exc:  # one size failing must not hide the others
            sandbox.failures.append(f"scale {spec}: {exc}")
            log(f"scale {spec}: failed: {exc}")
        first = False
    return figures


def _bench_scale_size(cfg, sandbox, log, nodes: int, pods: int, warm: bool) -> list[Figure]:
    from testbed.core import topology

    spec = f"{nodes}x{pods}"
    plan = scale_plan(nodes, pods)
    wiring = topology.wire(plan, "floor")
    count = len(wiring.namespaces)
    labs: list[dict[str, Any]] = []
    rss: list[float] = []
    floor_s: list[float] = []
    reps = cfg.reps + (cfg.warmup if warm else 0)
    for rep in range(reps):
        before = _netns_count()
        child = _scale_lab(sandbox, spec, rep, wiring, log)
        waited = settle(before)
        batch = ip_batch(wiring, sandbox.name(f"s{spec}") + "-")
        before = _netns_count()
        built, torn = time_ip_batch(batch)
        waited += settle(before)
        log(
            f"scale {spec} ({count} namespaces) {rep + 1}/{reps}: lab child {child.wall:.1f} s,"
            f" ip floor {built + torn:.1f} s, cleanup waits {waited:.1f} s"
        )
        if warm and rep < cfg.warmup:
            continue
        labs.append(json.loads(child.out.strip().splitlines()[-1]))
        rss.append(child.peak_mb)
        floor_s.append(built + torn)
    figures: list[Figure] = []
    per_ns = tuple(1000 * (r["wiring"] + r["down"]) / count for r in labs if r["wiring"])
    floor_per_ns = tuple(1000 * f / count for f in floor_s)
    if per_ns:
        figures.append(
            Figure(
                f"scale {spec}: wiring per namespace vs ip -batch",
                "ms/ns",
                per_ns,
                floor_per_ns,
                "ip -batch build+delete per namespace",
                1.5,
                "<=",
                on_ratio=True,
                extra={"namespaces": count},
            )
        )
    is_big = (nodes, pods) == (100, 10)
    figures.append(
        Figure(
            f"scale {spec}: lab up+down total",
            "s",
            tuple(r["up"] + r["down"] for r in labs),
            tuple(floor_s),
            "ip -batch build+delete (no rules)",
            12.0 if is_big else None,
            "<",
            note=_scale_note(labs, is_big),
            extra={
                "up": [r["up"] for r in labs],
                "down": [r["down"] for r in labs],
                "wiring": [r["wiring"] for r in labs],
                "rules": [r.get("rules") for r in labs],
                "namespaces": count,
                "serve": False,
            },
        )
    )
    if (nodes, pods) == cfg.scale[-1]:
        figures.append(
            Figure(
                f"peak RSS building {spec}",
                "MB",
                tuple(rss),
                target=300.0,
                note="ru_maxrss of the child process that built and tore down the lab",
            )
        )
    return figures
