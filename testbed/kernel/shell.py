"""The one way to run a tool inside a namespace."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from testbed.core.errors import CommandFailed
from testbed.kernel import netns


def run_in(ns: str, argv: Sequence[str], text: str | None = None) -> str:
    """Run a tool inside a namespace; its stdout, or CommandFailed with its first error line.

    The child is forked from this thread while it is switched into the namespace, so it
    starts there: no `ip netns exec` hop (a mount namespace and a /sys remount per call).
    """

    with netns.entered(ns):
        done = subprocess.run(list(argv), input=text, text=True, capture_output=True)
    if done.returncode != 0:
        raise CommandFailed(ns, argv, done.stderr)
    return done.stdout
