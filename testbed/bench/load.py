"""Section 8: the steady load's own overhead: the start rate it keeps while steps run.

A load asks for many attempts a second and must start them on schedule while the main
thread changes the lab (rules reloaded on every node, health checks following). The
figure is the start rate it achieved with a policy flip every STEP_EVERY seconds; the
baseline is the same load in the same lab with nothing else running.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from testbed.bench.figures import DEFAULT_SCENARIO, Figure
from testbed.bench.sandbox import Sandbox, running_lab
from testbed.bench.worlds import Config

RATE = 500.0  # attempts asked for per second
SECONDS = 3.0  # per repetition
STEP_EVERY = 0.25  # seconds between two changes while the load runs


def bench_load(cfg: Config, sandbox: Sandbox, log: Callable[[str], None]) -> list[Figure]:
    from testbed.core.load import load_both
    from testbed.core.model import LoadPlan, Target
    from testbed.live.load import RunningLoad

    scenario, plan = load_both(str(DEFAULT_SCENARIO))
    target = Target(service="default/web", port=80, via="nodePort", node="node-2")
    load = LoadPlan("bench", "client", target, rate=RATE, timeout=1.0, success_rate=0.0)
    idle: list[tuple[float, float, float]] = []  # (start rate, mean late ms, max late ms)
    busy: list[tuple[float, float, float]] = []
    changes = 0
    with running_lab(plan, serve=True, scenario=scenario) as lab:
        lab.wait_for_edge()
        for rep in range(cfg.warmup + cfg.reps):
            for steps, into in ((False, idle), (True, busy)):
                log(f"load: {RATE:g}/s for {SECONDS:g} s, {'with' if steps else 'without'} steps")
                running = RunningLoad(lab, load).start()
                try:
                    until = time.monotonic() + SECONDS
                    flip = False
                    while time.monotonic() < until:
                        if steps:
                            lab.set_policy("default/web", "Local" if flip else "Cluster")
                            flip = not flip
                            changes += rep >= cfg.warmup
                        time.sleep(STEP_EVERY)
                finally:
                    sample = running.stop(lab)
                if rep >= cfg.warmup:
                    # started over the time the starts really took (late ones included)
                    last = sample.attempts[-1][0] if sample.attempts else 0.0
                    rate = (len(sample.attempts) - 1) / max(last, 1e-9)
                    into.append((rate, sample.late_mean_ms, sample.late_max_ms))
    return [
        Figure(
            "steady load: start rate while steps run",
            "/s",
            tuple(r for r, _, _ in busy),
            tuple(r for r, _, _ in idle),
            "the same load, no steps",
            0.95 * RATE,
            ">=",
            note=f"{RATE:g}/s asked for, client -> node-2 NodePort, {SECONDS:g} s a run; "
            f"{changes} externalTrafficPolicy flips (every {STEP_EVERY:g} s) meanwhile",
        ),
        Figure(
            "steady load: mean start lateness while steps run",
            "ms",
            tuple(m for _, m, _ in busy),
            tuple(m for _, m, _ in idle),
            "the same load, no steps",
            10.0,
            "<",
            note="how late attempts started against the absolute schedule; the worst: "
            f"{max(x for _, _, x in busy):.1f} ms with steps, "
            f"{max(x for _, _, x in idle):.1f} ms without",
        ),
    ]
