"""Section 7: the real kube-proxy against our renderer, on the default lab.

Three figures, each next to the same measure of a builtin lab made in this run: the
lab up to its first sync (upstream: etcd, kube-apiserver, Node objects, one kube-proxy
per node and every node's first sync; builtin: the rules loaded), a Service change to
synced-and-probed (a policy flip, then 10 connections judged), and the peak memory of
the lab's own processes. A machine without built binaries gets a failure line saying
how to build them, and the other sections still run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from testbed.bench.figures import DEFAULT_SCENARIO, MODES, Figure
from testbed.bench.sandbox import Sandbox
from testbed.bench.worlds import Config


def _vm_hwm_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@contextmanager
def _lab(plan: Any, scenario: Any) -> Iterator[Any]:
    from testbed.live.lab import Lab

    lab = Lab(plan, scenario=scenario)
    try:
        yield lab
    finally:
        lab.down()


def bench_upstream(cfg: Config, sandbox: Sandbox, log: Callable[[str], None]) -> list[Figure]:
    from testbed.core.load import load_both

    figures: list[Figure] = []
    for mode in MODES:
        scenario, builtin = load_both(str(DEFAULT_SCENARIO), mode)
        upstream = replace(builtin, proxy=replace(builtin.proxy, implementation="upstream"))
        up: dict[str, list[float]] = {"builtin": [], "upstream": []}
        change: dict[str, list[float]] = {"builtin": [], "upstream": []}
        memory: list[float] = []
        for i in range(cfg.warmup + cfg.reps):
            for name, plan in (("builtin", builtin), ("upstream", upstream)):
                log(f"upstream: {mode} {name} lab, round {i + 1}")
                with _lab(plan, scenario) as lab:
                    start = time.perf_counter()
                    lab.up()
                    took = time.perf_counter() - start
                    flips = []
                    for policy in ("Local", "Cluster"):
                        start = time.perf_counter()
                        lab.set_policy("web", external=policy)
                        lab.probe(source="client", service="web", via="nodePort", count=10)
                        flips.append(time.perf_counter() - start)
                    if name == "upstream":
                        memory.append(sum(_vm_hwm_mb(p["pid"]) for p in lab.processes))
                if i >= cfg.warmup:
                    up[name].append(took)
                    change[name] += flips
        figures += [
            Figure(
                f"{mode}: default lab up to first sync, upstream",
                "s",
                tuple(up["upstream"]),
                tuple(up["builtin"]),
                "the same lab with our renderer",
                note="etcd + kube-apiserver + Nodes + a kube-proxy per node, all synced",
            ),
            Figure(
                f"{mode}: Service change to synced and probed",
                "s",
                tuple(change["upstream"]),
                tuple(change["builtin"]),
                "the same change with our renderer",
                note="externalTrafficPolicy flipped, then 10 connections via a NodePort judged",
            ),
            Figure(
                f"{mode}: upstream lab's processes, peak RSS",
                "MB",
                tuple(memory[cfg.warmup :] or memory),
                note="etcd + kube-apiserver + 3 kube-proxies (VmHWM), without the lab's owner",
            ),
        ]
    return figures
