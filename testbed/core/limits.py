"""Refuse a lab the machine cannot hold, before anything is built.

A lab too big fails late and messily: EMFILE half-way through the build, the
kernel out of memory, or minutes of building. `check(plan)` says so up front,
with the limit and the reason, so `testbed up`/`run` can exit 2 with nothing
created and `testbed plan` can warn. `needs` and `problems` are pure; only
`host()` reads the machine.

The numbers were measured on a 2-core machine: 2,012 namespaces (10 nodes,
2,000 pods) built in 23 s with 10,067 open files (about 5 per namespace before
any capture) and cost the kernel 300-730 KB each.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from testbed.core.errors import TestbedError
from testbed.core.model import Plan

# One process builds the lab, serves every pod and drains every capture; it was measured
# up to 2,000 namespaces (about 25 s to build). Beyond this, building takes minutes and
# the probes' one-second timing no longer holds.
MAX_NAMESPACES = 2048
# A netlink socket per namespace (pyroute2 holds 4 descriptors), a capture socket per
# client, node and pod, and at least one server socket per pod or node.
FDS_PER_NAMESPACE = 6
# stdio, pipes, the edge's own sockets and the smallest batch of probe sockets
# (probe.py sizes its batches to what is left under the limit).
FDS_RESERVE = 64
# Kernel memory of one namespace with its veth, conntrack and rules (measured 300-730 KB).
KB_PER_NAMESPACE = 1024
# Leave the rest of the machine this share of what is available.
MEMORY_SHARE = 0.5


class LimitError(TestbedError, ValueError):
    """The lab is larger than this machine can hold; the text names limit and reason."""


@dataclass(frozen=True)
class Needs:
    namespaces: int
    open_files: int
    memory_kb: int


@dataclass(frozen=True)
class Host:
    open_files: int | None  # soft RLIMIT_NOFILE; None = unlimited
    memory_available_kb: int | None  # MemAvailable; None = unknown


def needs(plan: Plan) -> Needs:
    """What the lab will take: the edge, every node, pod and client is a namespace."""
    namespaces = 1 + len(plan.nodes) + len(plan.pods) + len(plan.clients)
    return Needs(
        namespaces=namespaces,
        open_files=namespaces * FDS_PER_NAMESPACE + FDS_RESERVE,
        memory_kb=namespaces * KB_PER_NAMESPACE,
    )


def problems(need: Needs, host: Host) -> list[str]:
    """Each limit the lab would break, as one clause with the limit and the reason."""
    found = []
    if need.namespaces > MAX_NAMESPACES:
        found.append(
            f"{need.namespaces:,} namespaces exceed the cap of {MAX_NAMESPACES:,} "
            "(one process serves every pod and drains every capture; "
            "it was measured up to 2,000 namespaces, about 25 s to build)"
        )
    if host.open_files is not None and need.open_files > host.open_files:
        found.append(
            f"about {need.open_files:,} open files are needed "
            f"({FDS_PER_NAMESPACE} per namespace) but RLIMIT_NOFILE is {host.open_files:,} "
            f"(raise it: ulimit -n {_round_up(need.open_files)})"
        )
    if host.memory_available_kb is not None:
        allowed = int(host.memory_available_kb * MEMORY_SHARE)
        if need.memory_kb > allowed:
            found.append(
                f"about {need.memory_kb // 1024:,} MiB of kernel memory is needed "
                f"({KB_PER_NAMESPACE // 1024} MiB per namespace) but only "
                f"{allowed // 1024:,} MiB may be used "
                f"(half of MemAvailable, {host.memory_available_kb // 1024:,} MiB)"
            )
    return found


def host() -> Host:
    """The limits of this process and machine right now."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    available = None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1])
                    break
    except (OSError, ValueError, IndexError):
        available = None
    return Host(None if soft == resource.RLIM_INFINITY else soft, available)


def message(plan: Plan, machine: Host | None = None) -> str | None:
    """Why this machine cannot hold the lab, in one line; None when it can."""
    found = problems(needs(plan), machine or host())
    if not found:
        return None
    return f"lab {plan.name} is too large for this machine: " + "; ".join(found)


def check(plan: Plan, machine: Host | None = None) -> None:
    """Raise LimitError (one line: limit and reason) if the lab cannot be built here."""
    text = message(plan, machine)
    if text is not None:
        raise LimitError(text)


def _round_up(count: int) -> int:
    """A tidy limit to suggest: the next power of two at or above `count`."""
    return 1 << max(0, count - 1).bit_length()
