"""A node's conntrack table, read and pruned with the `conntrack` tool in its namespace.

The builtin proxy deletes stale UDP entries after each sync as kube-proxy does (which
ones: kubeproxy/conntrack.py); the report reads the entries a probe left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from testbed.core.errors import CommandFailed, LabError
from testbed.kernel.rules import Runner
from testbed.kernel.shell import run_in
from testbed.kubeproxy.conntrack import BE_LIBERAL_SYSCTL, Entry, Filter, parse


def entries(ns: str, protocol: str | None = None, run: Runner = run_in) -> list[Entry]:
    """The entries of one namespace's table (one protocol, or all)."""
    argv = ["conntrack", "-L"] + (["-p", protocol] if protocol else [])
    try:
        return parse(run(ns, argv))
    except CommandFailed:  # no conntrack in this namespace yet: no entries
        return []
    except FileNotFoundError:
        raise LabError(
            "the conntrack tool is missing: kube-proxy's UDP cleanup and the report need it"
            " (apt-get install conntrack; scripts/setup installs it)"
        ) from None


def delete(ns: str, filters: Sequence[Filter], run: Runner = run_in) -> None:
    """Delete what each filter matches; a filter that matches nothing any more is fine."""
    for f in filters:
        # "0 flow entries have been deleted" fails: the entry went by itself, fine
        with contextlib.suppress(CommandFailed):
            run(ns, f.argv())


def set_be_liberal(ns: str, on: bool, run: Runner = run_in) -> None:
    """nf_conntrack_tcp_be_liberal of one namespace (each network namespace has its own)."""
    run(ns, ["sysctl", "-q", "-w", f"{BE_LIBERAL_SYSCTL}={int(on)}"])
