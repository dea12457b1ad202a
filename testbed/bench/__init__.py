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
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

# the sections and what the command, scripts and tests use of them
from testbed.bench.figures import SECTIONS, Figure, iqr, median, spread, table
from testbed.bench.labs import bench_default, bench_scale, child_scale
from testbed.bench.load import bench_load
from testbed.bench.probes import bench_memory, bench_probes, bench_startup, probe_batches
from testbed.bench.rules import bench_rules
from testbed.bench.sandbox import Sandbox, scale_plan, wiring_seconds
from testbed.bench.upstream import bench_upstream
from testbed.bench.worlds import Config, bulk_services, ip_batch, one_change
from testbed.core.errors import NeedsRoot, UsageError

__all__ = [  # what the command line, scripts and tests use of the sections
    "BENCHES",
    "SECTIONS",
    "Config",
    "Figure",
    "add_command",
    "bulk_services",
    "ip_batch",
    "iqr",
    "median",
    "one_change",
    "parse_only",
    "probe_batches",
    "run",
    "scale_plan",
    "spread",
    "table",
    "wiring_seconds",
]

BENCHES: dict[str, Callable[[Config, Sandbox, Callable[[str], None]], list[Figure]]] = {
    "default": bench_default,
    "scale": bench_scale,
    "rules": bench_rules,
    "probes": bench_probes,
    "startup": bench_startup,
    "memory": bench_memory,
    "upstream": bench_upstream,
    "load": bench_load,
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
        raise NeedsRoot()
    try:
        sections = parse_only(args.only)
    except ValueError as exc:
        raise UsageError(f"bench: {exc}") from None
    from testbed.core import outfiles
    from testbed.kernel import signals

    # a path that cannot be written fails now, not after the whole benchmark
    out = outfiles.open_file(args.json) if args.json else None
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
    except signals.Interrupted as exc:  # the front end's exit code says which signal
        if out is not None:  # no half-written report: the file we created goes
            out.close()
            os.unlink(args.json)
        print(
            f"testbed bench: interrupted by {exc}; everything it made was removed", file=sys.stderr
        )
        raise
    elapsed = time.monotonic() - clock
    print(table(figures))
    for name, error in errors.items():
        print(f"section {name} failed: {error}")
    for failure in sandbox.failures:
        print(f"failed: {failure}")
        code = 1
    print(f"\n{len(figures)} figures in {elapsed:.0f} s ({'quick' if args.quick else 'full'} run)")
    if out is not None:
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
        with out:  # opened at start, never through a planted link
            out.write(json.dumps(report, indent=1).encode())
    return code
