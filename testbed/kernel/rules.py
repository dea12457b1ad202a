"""Load rendered rules into a node: one restore per node per sync, never a call per rule.

`run` is the one way a tool reaches a namespace (kernel/shell.py); a caller may pass
another with the same signature (the Lab's root-free tests record what would be loaded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from testbed.core.model import NodePlan, ProxyOptions, ServicePlan
from testbed.kernel.shell import run_in
from testbed.kubeproxy import incremental
from testbed.kubeproxy.incremental import Delta
from testbed.kubeproxy.sync import loader

Runner = Callable[..., str]  # run_in's signature: (ns, argv, text=None) -> stdout


def load(ns: str, mode: str, text: str, check: bool = False, run: Runner = run_in) -> None:
    """Feed the whole ruleset to the node's loader in one transaction."""
    run(ns, loader(mode, check), text)


def dump(ns: str, mode: str, run: Runner = run_in) -> str:
    """What the node holds now, as the kernel reports it."""
    argv = ["nft", "list", "table", "ip", "kube-proxy"] if mode == "nftables" else ["iptables-save"]
    return run(ns, argv)


def apply_delta(
    ns: str,
    mode: str,
    old_services: Sequence[ServicePlan],
    new_services: Sequence[ServicePlan],
    node: NodePlan,
    opts: ProxyOptions,
    run: Runner = run_in,
) -> Delta:
    """Load the delta into namespace `ns`, which must hold exactly the rules of `old_services`."""
    change = incremental.delta(mode, old_services, new_services, node, opts)
    if change.empty:
        return change
    run(ns, incremental.loader(mode, change.full), change.text)
    return change
