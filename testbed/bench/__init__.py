"""`testbed bench`: how fast the lab builds, syncs rules and probes, each next to its floor.

Every figure is the median of several repetitions after a warm-up, printed with
its spread, a baseline (the fastest known way to do the same work on this
machine: `ip -batch`, the rule loader itself, a bare interpreter) and a target,
and written to JSON with every sample. A missed target is a finding, not a
failure: the exit status is 0 whenever every measurement ran.

Namespaces the benchmark makes itself are named `tbb-<pid>-...`; labs use
their own ids and `Lab.down()`. Both are removed on every exit path, Ctrl-C
included. Heavy modules are imported inside the measurements, so that adding
this command to the CLI costs nothing at start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.core.model import Plan, ServicePlan
    from testbed.core.topology import Route, Wiring

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCENARIO = ROOT / "scenarios" / "default.yaml"
SECTIONS = ("default", "scale", "rules", "probes", "startup", "memory")
NS_PREFIX = "tbb-"
MODES = ("iptables", "nftables")


# -- statistics and figures (pure) --------------------------------------------------


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def spread(samples: Sequence[float]) -> tuple[float, float]:
    """(min, max): with five samples the whole range says more than quartiles."""
    return float(min(samples)), float(max(samples))


def iqr(samples: Sequence[float]) -> tuple[float, float]:
    """(first, third) quartile, inclusive method; both equal the value for one sample."""
    if len(samples) < 2:
        return float(samples[0]), float(samples[0])
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return float(q[0]), float(q[2])


@dataclass(frozen=True)
class Figure:
    """One measured figure, its floor and its target."""

    name: str
    unit: str  # s | ms | ms/ns | /s | MB
    samples: tuple[float, ...]
    baseline: tuple[float, ...] = ()  # samples of the floor it is compared with
    baseline_name: str = ""
    target: float | None = None
    op: str = "<"  # how the value must compare with the target: < | <= | >=
    on_ratio: bool = False  # the target bounds median / baseline, not the median
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return median(self.samples)

    @property
    def base(self) -> float | None:
        return median(self.baseline) if self.baseline else None

    @property
    def ratio(self) -> float | None:
        base = self.base
        return self.median / base if base else None

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        value = self.ratio if self.on_ratio else self.median
        if value is None:
            return None
        return {"<": value < self.target, "<=": value <= self.target}.get(
            self.op, value >= self.target
        )

    def to_json(self) -> dict[str, Any]:
        lo, hi = spread(self.samples)
        q1, q3 = iqr(self.samples)
        return {
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": lo,
            "max": hi,
            "q1": q1,
            "q3": q3,
            "samples": list(self.samples),
            "baseline": self.base,
            "baseline_name": self.baseline_name,
            "baseline_samples": list(self.baseline),
            "ratio": self.ratio,
            "target": self.target,
            "target_op": self.op,
            "target_on": "ratio" if self.on_ratio else "median",
            "met": self.met,
            "note": self.note,
            **({"extra": self.extra} if self.extra else {}),
        }


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.1f} s" if value >= 100 else f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "ms/ns":
        return f"{value:.2f} ms/ns"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:g} {unit}"


def _target_text(fig: Figure) -> str:
    if fig.target is None:
        return "-"
    if fig.on_ratio:
        return f"{fig.op} {fig.target:g}x"
    return f"{fig.op} {fmt(fig.target, fig.unit)}"


def table(figures: Sequence[Figure]) -> str:
    """The figures as an aligned text table, notes below it."""
    head = ("figure", "median", "spread (min-max)", "baseline", "ratio", "target", "met?")
    rows = [head]
    notes = []
    for fig in figures:
        lo, hi = spread(fig.samples)
        same = fmt(lo, fig.unit) == fmt(hi, fig.unit)
        rng = fmt(lo, fig.unit) if same else f"{fmt(lo, fig.unit)} - {fmt(hi, fig.unit)}"
        ratio = f"{fig.ratio:.2f}x" if fig.ratio is not None else "-"
        met = {True: "yes", False: "NO", None: "-"}[fig.met]
        rows.append(
            (
                fig.name,
                fmt(fig.median, fig.unit),
                rng,
                fmt(fig.base, fig.unit),
                ratio,
                _target_text(fig),
                met,
            )
        )
        if fig.note:
            notes.append(f"  {fig.name}: {fig.note}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


# -- the ip -batch floor (pure) -----------------------------------------------------


@dataclass(frozen=True)
class IpBatch:
    """The same namespaces, links, addresses and routes as a Wiring, as `ip -batch` input.

    `build` runs in the caller's namespace (namespaces, and veth pairs created
    straight into their two namespaces); `ip -batch` cannot switch namespace per
    line, so each namespace gets its own `ip -n NS -batch -` script. Sysctls are
    not part of it: `ip` cannot write them.
    """

    build: str
    per_namespace: tuple[tuple[str, str], ...]  # (namespace, script)
    teardown: str

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(ns for ns, _ in self.per_namespace)


def _ip_route(route: Route) -> str:
    """`proto static`, as pyroute2 marks the routes it adds, so both builds list the same."""
    if route.dev:
        return f"route add {route.dst} dev {route.dev} scope link proto static"
    if len(route.via) == 1:
        return f"route add {route.dst} via {route.via[0]} proto static"
    hops = " ".join(f"nexthop via {gw}" for gw in route.via)
    return f"route add {route.dst} proto static {hops}"


def ip_batch(wiring: Wiring, prefix: str) -> IpBatch:
    """Scripts that build `wiring` with namespace names `prefix + short name`."""

    def name(short: str) -> str:
        return prefix + short

    build = [f"netns add {name(s)}" for s in wiring.namespaces]
    build += [
        f"link add {v.name} netns {name(v.ns)} type veth peer name {v.peer_name}"
        f" netns {name(v.peer_ns)}"
        for v in wiring.veths
    ]
    per: dict[str, list[str]] = {s: ["link set lo up"] for s in wiring.namespaces}
    for ns, bridge, cidr in wiring.bridges:
        per[ns] += [
            f"link add {bridge} type bridge",
            f"addr add {cidr} dev {bridge}",
            f"link set {bridge} up",
        ]
    for v in wiring.veths:
        if v.master:
            per[v.ns].append(f"link set {v.name} master {v.master}")
        per[v.ns].append(f"link set {v.name} up")
        per[v.peer_ns].append(f"link set {v.peer_name} up")
    for a in wiring.addrs:
        per[a.ns].append(f"addr add {a.cidr} dev {a.dev}")
    for r in wiring.routes:
        per[r.ns].append(_ip_route(r))
    return IpBatch(
        build="\n".join(build) + "\n",
        per_namespace=tuple((name(s), "\n".join(per[s]) + "\n") for s in wiring.namespaces),
        teardown="".join(f"netns del {name(s)}\n" for s in wiring.namespaces),
    )


# -- generated worlds (pure) ---------------------------------------------------------


def scale_docs(nodes: int, pods_per_node: int, mode: str = "iptables") -> list[dict[str, Any]]:
    """An inline scenario: `nodes` nodes, one Deployment spread `pods_per_node` per node,
    one NodePort Service over all of it (so every node holds every endpoint, as in a
    real cluster) and one client."""
    labels = {"app": "web"}
    return [
        {
            "apiVersion": "testbed/v1alpha1",
            "kind": "Lab",
            "metadata": {"name": f"scale-{nodes}x{pods_per_node}"},
            "spec": {
                "proxyMode": mode,
                "nodes": nodes,
                "clients": [{"name": "client", "ip": "203.0.113.10"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "NodePort",
                "selector": labels,
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": nodes * pods_per_node,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "web", "ports": [{"containerPort": 8080}]}]},
                },
            },
        },
    ]


def bulk_services(count: int, endpoints: int = 3) -> tuple[ServicePlan, ...]:
    """`count` services with `endpoints` endpoints each, spread over three nodes.

    Every tenth is a NodePort (externalTrafficPolicy Cluster), so the NodePort and
    external chains are exercised too; the rest are ClusterIP.
    """
    from testbed.core.model import Endpoint, PortPlan, ServicePlan

    first_ip = ipaddress.IPv4Address("10.96.0.10")
    first_ep = ipaddress.IPv4Address("10.244.1.2")
    out = []
    for i in range(count):
        eps = tuple(
            Endpoint(
                str(first_ep + endpoints * i + j), 8080, f"node-{j % 3 + 1}", pod=f"svc-{i:05d}-{j}"
            )
            for j in range(endpoints)
        )
        node_port = 30000 + i // 10 if i % 10 == 0 else None
        kind = "NodePort" if node_port else "ClusterIP"
        port = PortPlan("http", 80, "TCP", node_port, 8080, eps)
        out.append(ServicePlan("bench", f"svc-{i:05d}", kind, str(first_ip + i), (port,)))
    return tuple(out)


def one_change(services: Sequence[ServicePlan]) -> tuple[ServicePlan, ...]:
    """The incremental figure's change: one service added, one endpoint removed."""
    from testbed.core.model import Endpoint, PortPlan, ServicePlan

    victim = services[len(services) // 2]
    port = victim.ports[0]
    shrunk = replace(victim, ports=(replace(port, endpoints=port.endpoints[:-1]),))
    eps = tuple(Endpoint(f"10.245.0.{2 + j}", 8080, f"node-{j + 1}") for j in range(3))
    added = ServicePlan(
        "bench",
        "added",
        "ClusterIP",
        "10.96.255.250",
        (PortPlan("http", 80, "TCP", None, 8080, eps),),
    )
    return (*(shrunk if s is victim else s for s in services), added)


# -- configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    reps: int = 5
    warmup: int = 1
    scale: tuple[tuple[int, int], ...] = ((10, 10), (50, 10), (100, 10))
    rule_sizes: tuple[int, ...] = (100, 1000, 5000)
    probe_count: int = 10_000
    connect_count: int = 5_000
    library: bool = True  # memory: the whole library, or only the default scenario

    @classmethod
    def quick(cls) -> Config:
        return cls(
            reps=3,
            scale=((10, 10), (50, 10)),
            rule_sizes=(100, 1000),
            probe_count=2_000,
            connect_count=2_000,
            library=False,
        )


# -- the shell: namespaces, children, timing ------------------------------------------


class Sandbox:
    """The benchmark's own namespaces and child processes, all removed on exit, and the
    failures met on the way (a failed part is reported, the rest still runs)."""

    def __init__(self) -> None:
        self.prefix = f"{NS_PREFIX}{os.getpid()}-"
        self._count = 0
        self.children: set[subprocess.Popen[str]] = set()
        self.failures: list[str] = []

    def name(self, what: str) -> str:
        self._count += 1
        return f"{self.prefix}{self._count}-{what}"

    def create(self, what: str) -> str:
        from testbed.kernel import netns

        name = self.name(what)
        netns.create(name)
        return name

    def remove(self, name: str) -> None:
        from testbed.kernel import netns

        netns.remove(name)

    def sweep(self) -> list[str]:
        """Stop children still running, then remove every namespace with our prefix."""
        from testbed.kernel import netns

        for child in list(self.children):
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=60)
            self.children.discard(child)
        left = [n for n in netns.listed() if n.startswith(self.prefix)]
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
def running_lab(plan: Plan, serve: bool) -> Iterator[Any]:
    """A lab that is torn down even when its own teardown fails half-way."""
    from testbed.kernel import netbuild, state
    from testbed.live.lab import Lab

    lab = Lab(plan, serve=serve)
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


def load_plan(path: Path | str, mode: str | None = None) -> Plan:
    from testbed.core import load

    return load.load(str(path), mode)


def scale_plan(nodes: int, pods_per_node: int) -> Plan:
    from testbed.core import plan as planner
    from testbed.core import scenario

    return planner.plan(scenario.load_dict(scale_docs(nodes, pods_per_node)))


# -- 1. the default lab ----------------------------------------------------------------


def bench_default(cfg: Config, sandbox: Sandbox, log: Callable[[str], None]) -> list[Figure]:
    from testbed.core import topology

    plan = load_plan(DEFAULT_SCENARIO)
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


# -- 3. rule sync ------------------------------------------------------------------------


def _load_in(ns: str, argv: list[str], text: str) -> None:
    """Run a loader from this thread switched into `ns` (no `ip netns exec` in the timing)."""
    from testbed.kernel import netns

    with netns.entered(ns):
        done = subprocess.run(argv, input=text, text=True, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed in {ns}: {done.stderr.strip()[:200]}")


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
                _load_in(ns, argv, warm_text)
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
                        loads.append(timed(lambda ns=ns, a=argv, t=text: _load_in(ns, a, t)))
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

    from testbed.kernel import netns

    plan = load_plan(DEFAULT_SCENARIO)
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


BENCHES: dict[str, Callable[[Config, Sandbox, Callable[[str], None]], list[Figure]]] = {
    "default": bench_default,
    "scale": bench_scale,
    "rules": bench_rules,
    "probes": bench_probes,
    "startup": bench_startup,
    "memory": bench_memory,
}


# -- command line ------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"

    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "iptables": version(["iptables", "-V"]),
        "nft": version(["nft", "--version"]),
        "ip": version(["ip", "-V"]),
    }


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(SECTIONS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    return [n for n in SECTIONS if n in names]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", help="write every figure and sample here")
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions and smaller sizes: a smoke run"
    )
    parser.add_argument(
        "--only", metavar="NAME,...", help=f"run only these sections ({', '.join(SECTIONS)})"
    )
    parser.add_argument("--child-scale", help=argparse.SUPPRESS)
    parser.add_argument("--lab-id", help=argparse.SUPPRESS)


def add_command(sub: Any) -> None:
    """Add `bench` to the `testbed` command's sub-parsers."""
    parser = sub.add_parser("bench", help="measure build, rule sync and probe speed (root)")
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.child_scale:
        return child_scale(args.child_scale, args.lab_id or f"bench{os.getpid()}")
    if os.geteuid() != 0:
        print("testbed bench: needs root (CAP_NET_ADMIN): run with sudo", file=sys.stderr)
        return 2
    try:
        sections = parse_only(args.only)
    except ValueError as exc:
        print(f"testbed bench: {exc}", file=sys.stderr)
        return 2
    from testbed.kernel import signals

    cfg = Config.quick() if args.quick else Config()
    sandbox = Sandbox()
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    started = time.time()
    clock = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - clock:6.1f}s] {text}", file=sys.stderr, flush=True)

    code = 0
    try:
        with signals.handled():
            try:
                for name in sections:
                    try:
                        figures += BENCHES[name](cfg, sandbox, log)
                    except Exception as exc:  # one broken section must not hide the others
                        errors[name] = f"{type(exc).__name__}: {exc}"
                        log(f"{name}: failed: {errors[name]}")
                        code = 1
            finally:
                left = sandbox.sweep()
                if left:
                    log(f"removed {len(left)} leftover namespaces")
    except signals.Interrupted as exc:
        print(
            f"testbed bench: interrupted by {exc}; everything it made was removed", file=sys.stderr
        )
        return exc.exit_code
    elapsed = time.monotonic() - clock
    print(table(figures))
    for name, error in errors.items():
        print(f"section {name} failed: {error}")
    for failure in sandbox.failures:
        print(f"failed: {failure}")
        code = 1
    print(f"\n{len(figures)} figures in {elapsed:.0f} s ({'quick' if args.quick else 'full'} run)")
    if args.json:
        report = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(elapsed, 1),
            "quick": bool(args.quick),
            "sections": sections,
            "machine": _machine(),
            "config": {k: v for k, v in vars(cfg).items()},
            "figures": [f.to_json() for f in figures],
            "errors": errors,
            "failures": sandbox.failures,
        }
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="testbed bench",
        description="Measure how fast the lab builds, syncs rules and probes, against floors.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
