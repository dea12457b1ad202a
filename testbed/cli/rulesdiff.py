"""`testbed rules [LAB] NODE --diff`: our rendering of a node next to what its kernel holds.

In upstream mode the kernel holds the real kube-proxy's rules, so the diff shows every
difference between it and our renderer (normalised: kubeproxy/rulediff.py). In a
built-in lab the kernel holds what we rendered and loaded, so the same diff is a
self-check: it must be empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from testbed.cli.common import CliError


def node_diff(
    found: Any, node_name: str, ns: str, listing: Mapping[str, Any] | None = None
) -> tuple[str, bool]:
    """(the report, identical) for one node of a running lab.

    `listing` (upstream mode): `kubectl get services,endpointslices -A -o json` of the
    lab's API server; ours is then rendered from what it holds, so a change made with
    kubectl is not reported as a difference.
    """
    from testbed.kernel import rules as sync
    from testbed.kernel import state
    from testbed.kubeproxy import rulediff
    from testbed.kubeproxy.sync import render

    try:
        _, plan, _ = state.load_copy(found.id)
    except (OSError, ValueError) as exc:
        raise CliError(f"lab {found.id}: cannot read its plan ({exc})", 2) from None
    mode = plan.proxy.mode
    node = plan.node(node_name)
    implementation = getattr(plan.proxy, "implementation", "builtin")
    if implementation == "upstream":
        version = getattr(plan.proxy, "version", "") or ""
        theirs, note = f"kube-proxy {version}".strip(), ""
    else:
        theirs = "kernel"
        note = f"lab {found.id} is not upstream: a self-check of the built-in renderer's load\n"
    services = plan.services
    if listing is not None:
        from testbed.kubeproxy import fromapi

        try:
            services = fromapi.services(plan, listing)
        except fromapi.FromApiError as exc:
            raise CliError(f"lab {found.id}: {exc}", 2) from None
    ours = sync.kernel_form(mode, render(node, services, plan.proxy))
    held = sync.dump(ns, mode)
    result = rulediff.diff(node_name, mode, ours, held, "rendered", theirs)
    return note + result.text(), result.identical
