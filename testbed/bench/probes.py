"""Sections 4 to 6: probes (connect() floor and captured probes), start-up and memory."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.bench.figures import (
    DEFAULT_SCENARIO,
    ROOT,
    Figure,
)
from testbed.bench.sandbox import (
    Sandbox,
    repeat,
    run_child,
    running_lab,
    timed,
)
from testbed.bench.worlds import (
    Config,
)

if TYPE_CHECKING:
    from testbed.core.model import Plan

# -- 4. probes ---------------------------------------------------------------------------


class Acceptor:
    """Accept and close connections on listening sockets, in one thread, as fast as it can."""

    def __init__(self, listeners: list[Any]) -> None:
        import selectors
        import threading

        self.listeners = listeners
        self.accepted = 0
        self._sel = selectors.DefaultSelector()
        for sock in listeners:
            sock.setblocking(False)
            self._sel.register(sock, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-acceptor", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.2):
                while True:
                    try:
                        conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    except OSError:
                        break
                    conn.close()
                    self.accepted += 1

    def __enter__(self) -> Acceptor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sel.close()
        for sock in self.listeners:
            sock.close()


def connect_loop(ns: str, ip: str, port: int, count: int) -> tuple[int, float]:
    """`count` blocking connect()+close (RST) from namespace `ns`: (connected, seconds)."""
    import socket
    import struct

    from testbed.kernel import netns

    linger = struct.pack("ii", 1, 0)
    ok = 0
    with netns.entered(ns):
        start = time.perf_counter()
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            sock.settimeout(2.0)
            try:
                sock.connect((ip, port))
                ok += 1
            except OSError:
                pass
            finally:
                sock.close()
        return ok, time.perf_counter() - start


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def probe_batches(count: int, fd_limit: int, reserve: int = 1000) -> list[int]:
    """Split `count` probes so that each batch's client and server sockets fit the fd limit."""
    most = max(1, (fd_limit - reserve) // 2)  # a client socket + an accepted one per probe
    batches = -(-count // most)
    size, rest = divmod(count, batches)
    return [size + (1 if i < rest else 0) for i in range(batches)]


def bench_probes(cfg: Config, sandbox: Sandbox, log: Callable[[str], None]) -> list[Figure]:
    import socket

    from testbed.core.load import load
    from testbed.kernel import netns

    plan = load(str(DEFAULT_SCENARIO))
    web = plan.service("default/web")
    port = web.ports[0]
    node2 = plan.node("node-2")

    log("probes: connect() loops through the NodePort and straight to a pod")
    via_nodeport: list[float] = []
    direct: list[float] = []
    failed = 0
    with running_lab(plan, serve=False) as lab:
        listeners = []
        for pod in plan.pods:
            sock = netns.socket_in(lab.wiring.ns(pod.name))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((pod.ip, int(port.target_port)))
            sock.listen(4096)
            listeners.append(sock)
        first_pod = plan.pods[0]
        with Acceptor(listeners):
            for rep in range(cfg.warmup + cfg.reps):
                ok, took = connect_loop(
                    lab.wiring.ns("client"), node2.ip, port.node_port or 0, cfg.connect_count
                )
                ok2, took2 = connect_loop(
                    lab.wiring.ns(first_pod.node),
                    first_pod.ip,
                    int(port.target_port),
                    cfg.connect_count,
                )
                if rep >= cfg.warmup:
                    via_nodeport.append(ok / took)
                    direct.append(ok2 / took2)
                    failed += 2 * cfg.connect_count - ok - ok2
    figures = [
        Figure(
            "connect() loop via NodePort",
            "/s",
            tuple(via_nodeport),
            tuple(direct),
            "same loop from the node straight to a pod IP",
            10_000.0,
            ">=",
            note=f"client -> node-2:{port.node_port} (DNAT, masquerade), {cfg.connect_count}"
            f" connections per repetition; {failed} failed",
        )
    ]
    figures.append(_captured_probes(cfg, plan, via_nodeport, log))
    return figures


def _captured_probes(cfg: Config, plan: Plan, baseline: list[float], log) -> Figure:
    import collections

    from testbed.core.model import ProbePlan, Target
    from testbed.kernel.capture import Capture
    from testbed.kernel.probe import capture_points
    from testbed.kernel.probe import run as run_probe

    limit = raise_fd_limit()
    batches = probe_batches(cfg.probe_count, limit)
    target = Target(service="default/web", port=80, via="nodePort", node="node-2")
    rates: list[float] = []
    outcomes: list[dict[str, int]] = []
    answered: list[int] = []
    with (
        running_lab(plan, serve=True) as lab,
        Capture(capture_points(plan, lab.wiring)) as capture,
    ):
        lab.wait_for_edge()
        for rep in range(cfg.warmup + cfg.reps):
            warm = rep < cfg.warmup  # a short warm-up: 1,000 probes
            run_sizes = [min(1000, cfg.probe_count)] if warm else batches
            log(f"probes: {sum(run_sizes)} captured TCP probes, run {rep + 1}")
            counts: collections.Counter[str] = collections.Counter()
            replies = 0
            took = 0.0
            for size in run_sizes:
                probe = ProbePlan("bench", "client", target, count=size)
                start = time.perf_counter()
                seen = run_probe(plan, lab.wiring, capture, probe, timeout=5.0)
                took += time.perf_counter() - start
                capture.clear()
                counts.update(a.outcome for a in seen.attempts)
                replies += sum(1 for a in seen.attempts if a.server_view)
            if warm:
                continue
            rates.append(cfg.probe_count / took)
            outcomes.append(dict(counts))
            answered.append(replies)
    total = [sum(o.values()) for o in outcomes]
    accounted = all(t == cfg.probe_count for t in total)
    split = f"in {len(batches)} batches of {batches[0]}" if len(batches) > 1 else "in one batch"
    return Figure(
        "captured TCP probes (probe.run)",
        "/s",
        tuple(rates),
        tuple(baseline),
        "connect() loop via the NodePort, no capture",
        2_000.0,
        ">=",
        note=f"{cfg.probe_count} probes client -> node-2 NodePort {split} (fd limit {limit});"
        f" every probe accounted for: {'yes' if accounted else 'NO'}"
        f" (outcomes {outcomes[-1]}, socket answers {answered[-1]})",
        extra={"outcomes": outcomes, "answered": answered, "batches": batches},
    )


# -- 5. start-up and 6. memory -------------------------------------------------------------


def _testbed_argv() -> list[str]:
    script = Path(sys.executable).parent / "testbed"
    return [str(script)] if script.exists() else [sys.executable, "-m", "testbed.cli"]


def bench_startup(cfg: Config, sandbox: Sandbox, log: Callable[[str], None]) -> list[Figure]:
    log("start-up")

    def wall(argv: list[str]) -> float:
        return timed(lambda: subprocess.run(argv, capture_output=True, check=True, cwd=ROOT))

    bare = repeat(lambda: wall([sys.executable, "-c", "pass"]), cfg.reps, cfg.warmup)
    testbed = _testbed_argv()
    figures = []
    for label, args in (("--help", ["--help"]), ("plan default", ["plan", str(DEFAULT_SCENARIO)])):
        samples = repeat(lambda a=args: wall([*testbed, *a]), cfg.reps, cfg.warmup)
        figures.append(
            Figure(f"start-up: testbed {label}", "s", samples, bare, "python -c pass", 0.3, "<")
        )
    return figures


def bench_memory(cfg: Config, sandbox: Sandbox, log: Callable[[str], None]) -> list[Figure]:
    argv = [*_testbed_argv(), "run", "-q"]
    what = "the scenario library"
    if not cfg.library:
        argv.append(str(DEFAULT_SCENARIO))
        what = "the default scenario (--quick)"
    log(f"memory: testbed run over {what}")
    base = run_child(sandbox, [sys.executable, "-c", "import testbed.live.lab"])
    run = run_child(sandbox, argv)
    return [
        Figure(
            "peak RSS of testbed run",
            "MB",
            (run.peak_mb,),
            (base.peak_mb,),
            "python -c 'import testbed.live.lab'",
            300.0,
            "<",
            note=f"one run over {what} ({run.wall:.1f} s, exit {run.code}); ru_maxrss of the child",
        )
    ]
