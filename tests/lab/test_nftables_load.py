"""Every nftables golden loads into a real kernel, twice in a row, in a fresh namespace.

A golden that only matches text could still be rejected by nft (a chain used
before it exists, a verdict in the wrong hook, a bad element comment); loading
it for real is what proves the lab can apply it. Loading it a second time
proves the delete-and-recreate transaction works over a live table.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.core.model import Endpoint, NodePlan, PortPlan, ProxyOptions, ServicePlan
from testbed.core.topology import NS_PREFIX
from testbed.kernel import netns
from testbed.kubeproxy import nftables
from tests.support.waiting import wait_until

pytestmark = pytest.mark.lab

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "nftables"
CASES = sorted(GOLDEN.glob("*.nft"))
PREFIX = f"{NS_PREFIX}nft-"  # the suite's own prefix: a concurrent suite never sees these


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"{PREFIX}{os.getpid()}-{time.monotonic_ns() % 10**9}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


def nft(ns: str, *args: str, text: str | None = None) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args], input=text, text=True, capture_output=True
    )
    assert done.returncode == 0, f"nft {' '.join(args)} failed: {done.stderr.strip()}"
    return done.stdout


def declared_chains(text: str) -> set[str]:
    return set(re.findall(r"^add chain ip kube-proxy (\S+)", text, re.MULTILINE))


def listed_chains(listing: str) -> set[str]:
    return set(re.findall(r"^\tchain (\S+) \{", listing, re.MULTILINE))


def test_goldens_exist() -> None:
    assert len(CASES) >= 12


@pytest.mark.parametrize("golden", CASES, ids=[p.stem for p in CASES])
def test_golden_loads_twice(namespace: str, golden: Path) -> None:
    text = golden.read_text()
    nft(namespace, "-c", "-f", "-", text=text)
    nft(namespace, "-f", "-", text=text)
    first = nft(namespace, "list", "table", "ip", "kube-proxy")
    nft(namespace, "-f", "-", text=text)
    second = nft(namespace, "list", "table", "ip", "kube-proxy")

    assert first == second, "reloading the same ruleset changed the table"
    assert listed_chains(second) == declared_chains(text)
    # Per-service chain names hold a "/" (kube-proxy's isServiceChainName); base chains do not.
    services = {
        c for c in listed_chains(second) if c.startswith(("service-", "local-")) and "/" in c
    }
    if golden.stem == "no-endpoints":
        assert not services
        assert "goto reject-chain" in second
    else:
        assert services, "no service chain in the golden"


def test_large_ruleset_loads_and_reloads(namespace: str) -> None:
    """1,000 services x 3 endpoints: the size DESIGN.md measures iptables-restore at."""
    node = NodePlan(name="node-1", index=1, ip="172.18.0.11", pod_cidr="10.244.1.0/24", gateway="")
    services = [
        ServicePlan(
            namespace="default",
            name=f"svc{i}",
            type="NodePort",
            cluster_ip=f"10.96.{i // 250}.{i % 250 + 1}",
            ports=(
                PortPlan(
                    name="http",
                    port=80,
                    node_port=30000 + i,
                    endpoints=tuple(
                        Endpoint(
                            ip=f"10.244.{k + 1}.{i % 250 + 2}", port=8080, node=f"node-{k + 1}"
                        )
                        for k in range(3)
                    ),
                ),
            ),
        )
        for i in range(1000)
    ]
    text = nftables.render(node, services, ProxyOptions(mode="nftables"))
    nft(namespace, "-f", "-", text=text)
    start = time.perf_counter()
    nft(namespace, "-f", "-", text=text)
    reload_s = time.perf_counter() - start
    listing = nft(namespace, "list", "table", "ip", "kube-proxy")
    assert listed_chains(listing) == declared_chains(text)
    assert len([c for c in listed_chains(listing) if c.startswith("endpoint-")]) == 3000
    print(f"nft -f reload of 1,000 services x 3 endpoints: {reload_s:.3f} s")


def test_no_namespace_left_behind() -> None:
    wait_until(lambda: not any(n.startswith(PREFIX) for n in netns.listed()), 2)
    mine = [n for n in netns.listed() if n.startswith(f"{PREFIX}{os.getpid()}-")]
    assert mine == []
