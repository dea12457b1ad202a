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


def ns_command(ns: str, argv: Sequence[str]) -> list[str]:
    """`argv` run inside the namespace. Not `ip netns exec`: that opens a netlink socket
    in the host namespace before it switches; nsenter only opens the namespace file."""
    return ["nsenter", f"--net={netns.path(ns)}", *argv]


def loader(mode: str, check: bool = False) -> list[str]:
    if mode == "nftables":
        return ["nft", "-c", "-f", "-"] if check else ["nft", "-f", "-"]
    return ["iptables-restore", "--test"] if check else ["iptables-restore"]


def load(ns: str, mode: str, text: str, check: bool = False) -> None:
    """Feed the whole ruleset to the node's loader in one transaction."""
    done = subprocess.run(
        ns_command(ns, loader(mode, check)), input=text, text=True, capture_output=True
    )
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise RuntimeError(f"{' '.join(loader(mode, check))} failed in {ns}: {first}")


def dump(ns: str, mode: str) -> str:
    """What the node holds now, as the kernel reports it."""
    argv = ["nft", "list", "table", "ip", "kube-proxy"] if mode == "nftables" else ["iptables-save"]
    done = subprocess.run(ns_command(ns, argv), text=True, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed in {ns}: {done.stderr.strip()}")
    return done.stdout
