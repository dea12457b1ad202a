"""Section 3: rendering and loading rules, full and incremental, in both modes."""

from __future__ import annotations

import time
from collections.abc import Callable

from testbed.bench.figures import (
    MODES,
    Figure,
    median,
)
from testbed.bench.sandbox import (
    Sandbox,
    repeat,
    timed,
)
from testbed.bench.worlds import (
    Config,
    bulk_services,
    one_change,
)

# -- 3. rule sync ------------------------------------------------------------------------


def _render_time(node, services, opts, least: float = 0.05) -> float:
    """Seconds per render; renders taking under `least` are repeated and averaged, so a
    busy machine's jitter does not swamp a one-millisecond figure."""
    from testbed.kubeproxy import sync

    once = timed(lambda: sync.render(node, services, opts))
    if once >= least:
        return once
    times = max(2, int(least / max(once, 1e-6)))
    return timed(lambda: [sync.render(node, services, opts) for _ in range(times)]) / times


def bench_rules(cfg: Config, sandbox: Sandbox, log: Callable[[str], None]) -> list[Figure]:
    from testbed.core.model import NodePlan, ProxyOptions
    from testbed.kernel import shell
    from testbed.kubeproxy import incremental, sync

    node = NodePlan("node-1", 1, "172.18.0.11", "10.244.1.0/24", "10.244.1.1")
    figures: list[Figure] = []
    biggest = max(cfg.rule_sizes)
    for mode in MODES:
        opts = ProxyOptions(mode=mode)
        argv = incremental.loader(mode, full=True)
        warm = bulk_services(min(cfg.rule_sizes))
        warm_text = sync.render(node, warm, opts)
        for _ in range(cfg.warmup):  # loader binaries and libraries into the page cache
            ns = sandbox.create(f"warm-{mode}")
            try:
                shell.run_in(ns, argv, warm_text)
            finally:
                sandbox.remove(ns)
        kept: str | None = None
        load_big: tuple[float, ...] = ()
        try:
            for size in cfg.rule_sizes:
                log(f"rules: {mode}, {size} services x 3 endpoints")
                services = bulk_services(size)
                text = sync.render(node, services, opts)
                renders = repeat(
                    lambda s=services, o=opts: _render_time(node, s, o), cfg.reps, cfg.warmup
                )
                loads = []
                for rep in range(cfg.reps):
                    ns = sandbox.create(f"{mode}-{size}")
                    try:
                        loads.append(timed(lambda ns=ns, a=argv, t=text: shell.run_in(ns, a, t)))
                    finally:
                        if size == biggest and rep == cfg.reps - 1:
                            kept = ns
                        else:
                            sandbox.remove(ns)
                if size == biggest:
                    load_big = tuple(loads)
                figures.append(
                    Figure(
                        f"rules {mode} {size} svc: render vs load",
                        "ms",
                        tuple(1000 * r for r in renders),
                        tuple(1000 * x for x in loads),
                        f"{' '.join(argv)} of the same text in a fresh namespace",
                        0.10,
                        "<",
                        on_ratio=True,
                        extra={"lines": text.count("\n")},
                    )
                )
            assert kept is not None
            log(f"rules: {mode}, incremental sync on {biggest} services")
            figures.append(_incremental(cfg, kept, mode, biggest, node, opts, load_big))
        finally:
            if kept:
                sandbox.remove(kept)
    return figures


def _incremental(cfg, ns, mode, size, node, opts, full_loads) -> Figure:
    """One service added + one endpoint removed, applied and (untimed) undone, repeatedly."""
    from testbed.kernel import rules

    old = bulk_services(size)
    new = one_change(old)
    forward: list[float] = []
    back: list[float] = []
    lines = 0
    for rep in range(cfg.warmup + cfg.reps):
        start = time.perf_counter()
        change = rules.apply_delta(ns, mode, old, new, node, opts)
        took = time.perf_counter() - start
        start = time.perf_counter()
        rules.apply_delta(ns, mode, new, old, node, opts)
        undo = time.perf_counter() - start
        if change.full or change.empty:
            raise RuntimeError(f"incremental sync in {mode} did not produce a delta")
        lines = change.text.count("\n")
        if rep >= cfg.warmup:
            forward.append(1000 * took)
            back.append(1000 * undo)
    return Figure(
        f"rules {mode} incremental, {size} svc",
        "ms",
        tuple(forward),
        tuple(1000 * x for x in full_loads),
        f"full load of {size} services",
        100.0,
        "<",
        note=f"delta + load of one added service and one removed endpoint ({lines} lines);"
        f" undo (the reverse delta) median {median(back):.0f} ms",
        extra={"undo_ms": back, "delta_lines": lines},
    )
