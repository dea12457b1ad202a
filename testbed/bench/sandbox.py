"""The benchmark's shell: namespaces it owns, child processes, timing of lab builds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from testbed.bench.figures import (
    NS_PREFIX,
    ROOT,
)
from testbed.bench.worlds import (
    IpBatch,
    scale_docs,
)

if TYPE_CHECKING:
    from testbed.core.model import Plan

# -- the shell: namespaces, children, timing ------------------------------------------


class Sandbox:
    """The benchmark's own namespaces and child processes, all removed on exit, and the
    failures met on the way (a failed part is reported, the rest still runs)."""

    def __init__(self) -> None:
        self.prefix = f"{NS_PREFIX}{os.getpid()}-"
        self._count = 0
        self._made: list[str] = []  # every name handed out: sweep removes these and only these
        self.children: set[subprocess.Popen[str]] = set()
        self.failures: list[str] = []

    def name(self, what: str) -> str:
        self._count += 1
        name = f"{self.prefix}{self._count}-{what}"
        self._made.append(name)
        return name

    def create(self, what: str) -> str:
        from testbed.kernel import netns

        name = self.name(what)
        netns.create(name)
        return name

    def remove(self, name: str) -> None:
        from testbed.kernel import netns

        netns.remove(name)

    def sweep(self) -> list[str]:
        """Stop children still running, then remove the namespaces made under names this
        sandbox handed out (a name itself, or a lab built under it: `NAME-...`)."""
        from testbed.kernel import netns

        for child in list(self.children):
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=60)
            self.children.discard(child)
        made = tuple(self._made)
        labs = tuple(f"{m}-" for m in made)
        left = [n for n in netns.listed() if n in made or n.startswith(labs)]
        for name in left:
            netns.remove(name)
        return left


def _netns_count() -> int | None:
    """Live network namespaces in the kernel, dying ones included (slab objects)."""
    try:
        with open("/proc/slabinfo") as handle:
            for line in handle:
                if line.startswith("net_namespace "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def settle(before: int | None, timeout: float = 20.0) -> float:
    """Wait for the kernel to finish freeing deleted namespaces (it does so after
    `unlink` returns), so the cleanup of one repetition does not slow the next.

    Done when the count is back near `before`, or has stopped falling for half a
    second (other processes may hold namespaces of their own). Returns the wait.
    """
    start = time.monotonic()
    if before is None:
        time.sleep(0.5)
        return 0.5
    lowest, since = _netns_count(), start
    while time.monotonic() - start < timeout:
        now = _netns_count()
        if now is None or now <= before + 32:
            break
        if lowest is None or now < lowest:
            lowest, since = now, time.monotonic()
        elif time.monotonic() - since > 0.5:
            break
        time.sleep(0.1)
    return time.monotonic() - start


def _run_ip(argv: list[str], script: str) -> None:
    done = subprocess.run(argv, input=script, text=True, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()[:200]}")


def time_ip_batch(batch: IpBatch) -> tuple[float, float]:
    """(build, teardown) seconds of the ip floor; always deletes what it made."""
    start = time.perf_counter()
    built = torn = 0.0
    try:
        _run_ip(["ip", "-batch", "-"], batch.build)
        for ns, script in batch.per_namespace:
            _run_ip(["ip", "-n", ns, "-batch", "-"], script)
        built = time.perf_counter() - start
    finally:
        start = time.perf_counter()
        subprocess.run(
            ["ip", "-force", "-batch", "-"], input=batch.teardown, text=True, capture_output=True
        )
        torn = time.perf_counter() - start
    return built, torn


@contextlib.contextmanager
def phases() -> Iterator[dict[str, float]]:
    """Time stamps of the lab's build checkpoints (namespaces, veths, routes, rules...)."""
    from testbed.kernel import checkpoint, netbuild
    from testbed.live import lab as lab_module

    marks: dict[str, float] = {}

    def mark(point: str) -> None:
        marks[point] = time.perf_counter()
        checkpoint.reached(point)

    patched = [m for m in (lab_module, netbuild) if hasattr(m, "reached")]
    for module in patched:
        module.reached = mark  # type: ignore[attr-defined]
    try:
        yield marks
    finally:
        for module in patched:
            module.reached = checkpoint.reached  # type: ignore[attr-defined]


def wiring_seconds(marks: dict[str, float]) -> float | None:
    """Build time of the wiring alone: namespaces to routes, without the sysctls."""
    need = ("state-saved", "addresses", "sysctls", "routes")
    if not all(k in marks for k in need):
        return None
    sysctls = marks["sysctls"] - marks["addresses"]
    return marks["routes"] - marks["state-saved"] - sysctls


@dataclass(frozen=True)
class LabRun:
    up: float
    down: float
    wiring: float | None  # namespaces..routes, sysctls excluded
    namespaces: int
    rules: float | None = None  # rendering and loading every node's rules

    @property
    def total(self) -> float:
        return self.up + self.down


def time_lab(plan: Plan, serve: bool, lab_id: str | None = None) -> LabRun:
    """Lab.up() then Lab.down(), timed; whatever happens, its namespaces are gone after."""
    from testbed.kernel import netbuild, state
    from testbed.live.lab import Lab

    lab = Lab(plan, lab_id=lab_id, serve=serve)
    names = [lab.wiring.ns(s) for s in lab.wiring.namespaces]
    try:
        with phases() as marks:
            start = time.perf_counter()
            lab.up()
            up = time.perf_counter() - start
        start = time.perf_counter()
        lab.down()
        down = time.perf_counter() - start
    finally:
        netbuild.remove_all(names)
        state.forget(lab.id)
    rules = marks["rules"] - marks["servers"] if {"rules", "servers"} <= marks.keys() else None
    return LabRun(up, down, wiring_seconds(marks), len(names), rules)


@contextlib.contextmanager
def running_lab(plan: Plan, serve: bool, scenario: Any = None) -> Iterator[Any]:
    """A lab that is torn down even when its own teardown fails half-way (with its
    `scenario`, it can also re-plan: scale, set a policy)."""
    from testbed.kernel import netbuild, state
    from testbed.live.lab import Lab

    lab = Lab(plan, serve=serve, scenario=scenario)
    try:
        lab.up()
        yield lab
    finally:
        try:
            lab.down()
        finally:
            netbuild.remove_all(lab.wiring.ns(s) for s in lab.wiring.namespaces)
            state.forget(lab.id)


def repeat(fn: Callable[[], float], reps: int, warmup: int) -> tuple[float, ...]:
    for _ in range(warmup):
        fn()
    return tuple(fn() for _ in range(reps))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# The measured program runs as the child of this small launcher, not of the benchmark: a
# child's ru_maxrss keeps the high-water mark of the memory it was forked from, and the
# benchmark itself grows to over 100 MB.
_LAUNCHER = """
import os, signal, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(pid, signum))
_, status, usage = os.wait4(pid, 0)
sys.stdout.write(f"\\nmaxrss_kib {usage.ru_maxrss}\\n")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


@dataclass(frozen=True)
class ChildRun:
    code: int
    out: str
    err: str
    wall: float  # seconds
    peak_mb: float  # ru_maxrss

    @property
    def why(self) -> str:
        """The last line the child wrote to stderr: usually the exception."""
        lines = self.err.strip().splitlines()
        return f"exit {self.code}: {lines[-1] if lines else 'no message'}"


def run_child(sandbox: Sandbox, argv: list[str]) -> ChildRun:
    """Run a program in a child (through the launcher) and read its peak memory."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    sandbox.children.add(child)
    try:
        out, err = child.communicate()
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()
        sandbox.children.discard(child)
    wall = time.perf_counter() - start
    body, _, last = out.rstrip("\n").rpartition("\n")
    if not last.startswith("maxrss_kib "):
        raise RuntimeError(f"{argv[0]}: no memory report (exit {child.returncode})")
    return ChildRun(child.returncode, body, err, wall, int(last.split()[1]) / 1024)


def scale_plan(nodes: int, pods_per_node: int) -> Plan:
    from testbed.core import plan as planner
    from testbed.core import scenario

    return planner.plan(scenario.load_dict(scale_docs(nodes, pods_per_node)))
