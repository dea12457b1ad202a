"""A node's whole ruleset as text, and the tool that loads it (loading is kernel/rules.py)."""

from __future__ import annotations

from collections.abc import Sequence

from testbed.core.model import NodePlan, ProxyOptions, ServicePlan
from testbed.kubeproxy import iptables, nftables


def render(node: NodePlan, services: Sequence[ServicePlan], opts: ProxyOptions) -> str:
    if opts.mode == "nftables":
        return nftables.render(node, services, opts)

    return iptables.render(node, services, opts)


def loader(mode: str, check: bool = False) -> list[str]:
    if mode == "nftables":
        return ["nft", "-c", "-f", "-"] if check else ["nft", "-f", "-"]
    return ["iptables-restore", "--test"] if check else ["iptables-restore"]
