"""Named points in the build where a test can freeze the lab to kill it there.

`TESTBED_STALL_AT=<point>` makes the process print `stalled at <point>` to
stderr and sleep, so a crash-safety test can SIGKILL it at exactly that point
and prove `testbed clean` still finds everything. Unset, it costs one lookup.
`testbed up` runs the build in a child whose stderr is /dev/null, so the stall
is also written, as `PID POINT`, to the file TESTBED_STALL_FILE names, if any.
"""

from __future__ import annotations

import os
import sys
import time

POINTS = (
    "state-saved",
    "namespace-1",
    "namespaces",
    "bridges",
    "veth-1",
    "veths",
    "addresses",
    "sysctls",
    "routes",
    "servers",
    "rules",
    "up",
    "probing",  # `testbed run`: the lab is up and a probe has just been judged
)
# Upstream mode's own points (spec.kubeProxy.implementation: upstream), in build order;
# kube-proxy-K is node K's first sync.
UPSTREAM_POINTS = (
    "management",
    "etcd-started",
    "etcd-ready",
    "apiserver-started",
    "apiserver-ready",
    "nodes",
    "kube-proxy-1",
)


def reached(point: str) -> None:
    if os.environ.get("TESTBED_STALL_AT") != point:
        return
    print(f"stalled at {point}", file=sys.stderr, flush=True)
    note = os.environ.get("TESTBED_STALL_FILE")
    if note:
        with open(note, "a") as handle:
            handle.write(f"{os.getpid()} {point}\n")
    while True:
        time.sleep(3600)
