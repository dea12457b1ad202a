"""An incremental sync leaves the kernel holding exactly what a full load of the new rules would.

Each case loads the old full ruleset into one fresh namespace and applies the
delta on top, loads the new full ruleset into another, and compares what the
kernel lists (`iptables-save` / `nft list table`), ignoring only counters and
the orders that carry no meaning (see `incremental.canonical_*`). The reverse
delta is checked the same way, so removals and additions are both covered.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import replace

import pytest

from testbed.core.model import Endpoint, NodePlan, PortPlan, ProxyOptions, ServicePlan
from testbed.core.topology import NS_PREFIX
from testbed.kernel import netns
from testbed.kernel import rules as sync
from testbed.kubeproxy import incremental
from testbed.kubeproxy.sync import render

PREFIX = f"{NS_PREFIX}inc-"  # the suite's own prefix: a concurrent suite never sees these
NODE = NodePlan("node-1", 1, "172.18.0.11", "10.244.1.0/24", "10.244.1.1")
MODES = ("iptables", "nftables")
_names = itertools.count()


def eps(*specs: tuple[str, str], port: int = 8080, **kw) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(ip, port, node, pod=f"p-{ip}", **kw) for ip, node in specs)


def svc(name: str, cip: str, *ports: PortPlan, kind: str = "ClusterIP", **kw) -> ServicePlan:
    return ServicePlan("default", name, kind, cip, ports, **kw)


THREE = eps(("10.244.1.2", "node-1"), ("10.244.2.2", "node-2"), ("10.244.3.2", "node-3"))


def old_world() -> tuple[ServicePlan, ...]:
    return (
        svc("plain", "10.96.0.10", PortPlan("http", 80, endpoints=THREE)),
        svc(
            "np-cluster",
            "10.96.0.11",
            PortPlan("http", 80, node_port=30080, endpoints=THREE),
            kind="NodePort",
        ),
        svc(
            "np-local",
            "10.96.0.12",
            PortPlan("http", 80, node_port=30081, endpoints=THREE),
            kind="NodePort",
            external_policy="Local",
        ),
        svc(
            "lb-local",
            "10.96.0.13",
            PortPlan("http", 80, node_port=30082, endpoints=THREE),
            kind="LoadBalancer",
            lb_ips=("198.51.100.10",),
            external_policy="Local",
            health_check_node_port=32000,
            source_ranges=("203.0.113.0/24",),
        ),
        svc(
            "lb-cluster",
            "10.96.0.14",
            PortPlan("http", 80, node_port=30083, endpoints=THREE),
            kind="LoadBalancer",
            lb_ips=("198.51.100.11",),
            source_ranges=("172.18.0.0/24", "203.0.113.0/24"),
        ),
        svc("sticky", "10.96.0.15", PortPlan("http", 80, endpoints=THREE), affinity_timeout=10800),
        svc("empty", "10.96.0.16", PortPlan("http", 80)),
        svc(
            "ext-ips",
            "10.96.0.17",
            PortPlan("http", 80, endpoints=THREE),
            external_ips=("203.0.113.200",),
        ),
        svc(
            "itp-local",
            "10.96.0.18",
            PortPlan("http", 80, endpoints=eps(("10.244.2.9", "node-2"))),
            internal_policy="Local",
        ),
        svc(
            "multi",
            "10.96.0.19",
            PortPlan("http", 80, endpoints=THREE),
            PortPlan("dns", 53, "UDP", endpoints=eps(("10.244.2.3", "node-2"), port=5353)),
        ),
        svc("headless", None, PortPlan("http", 80, endpoints=THREE)),
    )


def new_world(old: tuple[ServicePlan, ...]) -> tuple[ServicePlan, ...]:
    """One of every kind of change kube-proxy syncs."""
    by = {s.name: s for s in old}
    plain = by["plain"]
    changed = {
        # one endpoint removed
        "plain": replace(plain, ports=(replace(plain.ports[0], endpoints=THREE[:2]),)),
        # every endpoint gone: REJECT rules replace the chains
        "np-cluster": replace(
            by["np-cluster"], ports=(replace(by["np-cluster"].ports[0], endpoints=()),)
        ),
        # endpoints appear
        "empty": replace(by["empty"], ports=(replace(by["empty"].ports[0], endpoints=THREE),)),
        # policy flip: Cluster -> Local
        "lb-cluster": replace(
            by["lb-cluster"], external_policy="Local", health_check_node_port=32001
        ),
        # affinity timeout: the affinity sets are declared again
        "sticky": replace(by["sticky"], affinity_timeout=600),
        # one port dropped
        "multi": replace(by["multi"], ports=by["multi"].ports[:1]),
        # a node-local endpoint arrives for an internalTrafficPolicy Local service
        "itp-local": replace(
            by["itp-local"],
            ports=(
                replace(
                    by["itp-local"].ports[0],
                    endpoints=eps(("10.244.2.9", "node-2"), ("10.244.1.9", "node-1")),
                ),
            ),
        ),
    }
    kept = [changed.get(s.name, s) for s in old if s.name != "ext-ips"]  # one service removed
    added = svc(
        "added",
        "10.96.0.30",
        PortPlan("http", 80, node_port=30090, endpoints=THREE),
        kind="NodePort",
    )
    return (*kept, added)


def bulk(count: int, start: int = 0) -> tuple[ServicePlan, ...]:
    """`count` ClusterIP services with three endpoints each."""
    out = []
    for i in range(start, start + count):
        base = 256 + 3 * i
        endpoints = eps(
            *((f"10.245.{(base + j) // 256}.{(base + j) % 256}", f"node-{j + 1}") for j in range(3))
        )
        out.append(
            svc(
                f"bulk-{i:04d}",
                f"10.96.{1 + i // 200}.{10 + i % 200}",
                PortPlan("http", 80, endpoints=endpoints),
            )
        )
    return tuple(out)


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    names = [f"{PREFIX}{os.getpid()}-{next(_names)}" for _ in range(2)]
    try:
        for name in names:
            netns.create(name)
        yield names[0], names[1]
    finally:
        for name in names:
            netns.remove(name)


def canonical(ns: str, mode: str):
    text = sync.dump(ns, mode)
    if mode == "nftables":
        return incremental.canonical_nft(text)
    return incremental.canonical_iptables(text)


def check_delta(pair, mode, old, new, opts) -> incremental.Delta:
    """Delta over old == full load of new, in both directions."""
    inc, full = pair
    sync.load(inc, mode, render(NODE, old, opts))
    forward = sync.apply_delta(inc, mode, old, new, NODE, opts)
    sync.load(full, mode, render(NODE, new, opts))
    assert canonical(inc, mode) == canonical(full, mode)
    sync.apply_delta(inc, mode, new, old, NODE, opts)
    sync.load(full, mode, render(NODE, old, opts))
    assert canonical(inc, mode) == canonical(full, mode)
    return forward


@pytest.mark.lab
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("what_if", [(), ("no-snat",)], ids=["plain", "no-snat"])
def test_delta_equals_full_load(pair, mode, what_if) -> None:
    opts = ProxyOptions(mode=mode, what_if=what_if)
    old = old_world()
    new = new_world(old)
    change = check_delta(pair, mode, old, new, opts)
    assert not change.full
    assert set(change.added) == {"default/added"}
    assert set(change.removed) == {"default/ext-ips"}
    assert len(change.changed) == 7
    # a delta, not a reload: far smaller than the full ruleset
    assert len(change.text) < len(render(NODE, new, opts)) / 2


@pytest.mark.lab
@pytest.mark.parametrize("mode", MODES)
def test_delta_on_a_large_node(pair, mode) -> None:
    """Above 1,000 endpoints the iptables rules lose their comments; a delta must match."""
    opts = ProxyOptions(mode=mode)
    old = (*old_world(), *bulk(400))
    new = new_world(old)
    change = check_delta(pair, mode, old, new, opts)
    assert not change.full
    assert change.text.count("\n") < 200


@pytest.mark.lab
def test_crossing_the_large_cluster_threshold_reloads_in_full(pair) -> None:
    opts = ProxyOptions(mode="iptables")
    old = bulk(333)  # 999 endpoints
    new = (*old, *bulk(1, start=333))  # 1,002
    change = check_delta(pair, "iptables", old, new, opts)
    assert change.full
    seps = [line for line in change.text.splitlines() if line.startswith("-A KUBE-SEP-")]
    assert len(seps) == 2 * 1002 and not any("--comment" in line for line in seps)


@pytest.mark.lab
@pytest.mark.parametrize("mode", MODES)
def test_a_delta_over_rules_that_differ_fails_loudly(pair, mode) -> None:
    """The delta assumes the old rules are loaded; when they are not the loader says so."""
    opts = ProxyOptions(mode=mode)
    inc, _ = pair
    old = old_world()
    sync.load(inc, mode, render(NODE, old[:1], opts))
    with pytest.raises(RuntimeError, match="failed in"):
        sync.apply_delta(inc, mode, old, new_world(old), NODE, opts)


# -- pure checks (no root) ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_no_change_is_an_empty_delta(mode) -> None:
    old = old_world()
    same = tuple(replace(s) for s in old)  # equal, not identical
    change = incremental.delta(mode, old, same, NODE, ProxyOptions(mode=mode))
    assert change.empty and not change.full


def test_changed_services_by_key() -> None:
    old = old_world()
    new = new_world(old)
    added, removed, changed = incremental.changed_services(old, new)
    assert added == ("default/added",)
    assert removed == ("default/ext-ips",)
    assert "default/plain" in changed and "default/np-local" not in changed


def test_iptables_delta_touches_only_the_changed_chains() -> None:
    opts = ProxyOptions(mode="iptables")
    old = old_world()
    by = {s.name: s for s in old}
    plain = by["plain"]
    new = tuple(
        replace(s, ports=(replace(s.ports[0], endpoints=THREE[:2]),)) if s is plain else s
        for s in old
    )
    text = incremental.delta("iptables", old, new, NODE, opts).text
    lines = text.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    declared = [line for line in lines if line.startswith(":")]
    deleted = [line for line in lines if line.startswith("-X ")]
    # the service chain is rewritten, the removed endpoint's chain flushed and deleted
    assert len(declared) == 2 and len(deleted) == 1
    assert declared[0].startswith(":KUBE-SVC-")
    assert deleted[0].startswith("-X KUBE-SEP-")
    assert "KUBE-SERVICES" not in text


def test_nft_delta_updates_map_elements() -> None:
    opts = ProxyOptions(mode="nftables")
    old = old_world()
    new = tuple(s for s in old if s.name != "ext-ips")
    text = incremental.delta("nftables", old, new, NODE, opts).text
    assert "delete element ip kube-proxy service-ips { 203.0.113.200 . tcp . 80 }" in text
    assert "delete element ip kube-proxy cluster-ips { 10.96.0.17 }" in text
    assert "add " not in text


def test_element_key() -> None:
    line = (
        "add element ip kube-proxy no-endpoint-services { 10.96.0.16 . tcp . 80 comment"
        ' "default/empty:http" : goto reject-chain }'
    )
    assert incremental.element_key(line) == ("no-endpoint-services", "10.96.0.16 . tcp . 80")
    assert incremental.element_key("add element ip kube-proxy cluster-ips { 10.96.0.1 }") == (
        "cluster-ips",
        "10.96.0.1",
    )


def test_canonical_nft_ignores_element_and_chain_order() -> None:
    a = (
        "table ip kube-proxy {\n\tmap m {\n\t\ttype ipv4_addr : verdict\n"
        "\t\telements = { 1.1.1.1 : goto x,\n\t\t\t     2.2.2.2 : drop }\n\t}\n"
        "\tchain x {\n\t\tip saddr 1.1.1.1 accept\n\t}\n}\n"
    )
    b = (
        "table ip kube-proxy {\n\tchain x {\n\t\tip saddr 1.1.1.1 accept\n\t}\n"
        "\tmap m {\n\t\ttype ipv4_addr : verdict\n"
        "\t\telements = { 2.2.2.2 : drop, 1.1.1.1 : goto x }\n\t}\n}\n"
    )
    assert incremental.canonical_nft(a) == incremental.canonical_nft(b)
    assert incremental.canonical_nft(a) != incremental.canonical_nft(b.replace("drop", "accept"))


def test_canonical_iptables_keeps_the_last_rule_last() -> None:
    last = (
        '-A KUBE-SERVICES -m comment --comment "x; NOTE: this must be the last rule in this chain"'
    )
    head = "*nat\n:KUBE-SERVICES - [0:0]\n"
    one, two = "-A KUBE-SERVICES -p tcp -d 1\n", "-A KUBE-SERVICES -p tcp -d 2\n"
    a = f"{head}{one}{two}{last}\nCOMMIT\n"
    b = f"{head.replace('[0:0]', '[5:7]')}{two}{one}{last}\nCOMMIT\n"
    c = f"{head}{last}\n{two}{one}COMMIT\n"
    assert incremental.canonical_iptables(a) == incremental.canonical_iptables(b)
    assert incremental.canonical_iptables(a) != incremental.canonical_iptables(c)
