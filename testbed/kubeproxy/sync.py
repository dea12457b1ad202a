"""Load rendered rules into a node: one restore per node per sync, never a call per rule."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from testbed import netns
from testbed.model import NodePlan, ProxyOptions, ServicePlan


def render(node: NodePlan, services: Sequence[ServicePlan], opts: ProxyOptions) -> str:
    if opts.mode == "nftables":
        from testbed.kubeproxy import nftables

        return nftables.render(node, services, opts)
    from testbed.kubeproxy import iptables

    return iptables.render(node, services, opts)


def loader(mode: str, check: bool = False) -> list[str]:
    if mode == "nftables":
        return ["nft", "-c", "-f", "-"] if check else ["nft", "-f", "-"]
    return ["iptables-restore", "--test"] if check else ["iptables-restore"]


def run_in(ns: str, argv: Sequence[str], text: str | None = None) -> str:
    """Run a tool inside a node's namespace; its stdout, or RuntimeError with its first error.

    The child is forked from this thread while it is switched into the namespace, so it
    starts there: no `ip netns exec` hop (a mount namespace and a /sys remount per call).
    """

    with netns.entered(ns):
        done = subprocess.run(list(argv), input=text, text=True, capture_output=True)
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise RuntimeError(f"{' '.join(argv)} failed in {ns}: {first}")
    return done.stdout


def load(ns: str, mode: str, text: str, check: bool = False) -> None:
    """Feed the whole ruleset to the node's loader in one transaction."""
    run_in(ns, loader(mode, check), text)


def dump(ns: str, mode: str) -> str:
    """What the node holds now, as the kernel reports it."""
    argv = ["nft", "list", "table", "ip", "kube-proxy"] if mode == "nftables" else ["iptables-save"]
    return run_in(ns, argv)
