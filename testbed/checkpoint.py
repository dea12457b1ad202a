"""Named points in the build where a test can freeze the lab to kill it there.

`TESTBED_STALL_AT=<point>` makes the process print `stalled at <point>` to
stderr and sleep, so a crash-safety test can SIGKILL it at exactly that point
and prove `testbed clean` still finds everything. Unset, it costs one lookup.
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
)


def reached(point: str) -> None:
    if os.environ.get("TESTBED_STALL_AT") != point:
        return
    print(f"stalled at {point}", file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)
