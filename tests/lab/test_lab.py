"""The default lab with real traffic: routing, isolation and teardown."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.live.lab import Lab
from tests.support.world import lab_namespaces, load_plan, state_files

pytestmark = pytest.mark.lab


def ping(lab: Lab, source: str, address: str) -> bool:
    done = lab.exec(source, ["ping", "-c1", "-W1", address])
    return done.returncode == 0


@pytest.fixture(scope="module")
def lab():
    with Lab(load_plan("default")) as built:
        yield built


def test_pods_reach_each_other_across_nodes(lab):
    pods = lab.plan.pods
    by_node = {}
    for pod in pods:
        by_node.setdefault(pod.node, pod)
    first, *others = by_node.values()
    assert others, "the default scenario spreads pods over several nodes"
    for other in others:
        assert ping(lab, first.name, other.ip), f"{first.name} -> {other.name} {other.ip}"


def test_client_reaches_every_node_address(lab):
    client = lab.plan.clients[0].name
    for node in lab.plan.nodes:
        assert ping(lab, client, node.ip), node.name


def test_client_cannot_reach_pod_or_service_addresses(lab):
    client = lab.plan.clients[0].name
    for pod in lab.plan.pods:
        assert not ping(lab, client, pod.ip), pod.name
    svc = lab.plan.services[0]
    done = lab.exec(client, ["ip", "route", "get", svc.cluster_ip])
    assert done.returncode == 0  # the client routes it to the edge, which has no route on
    edge = lab.exec("edge", ["ip", "route", "get", svc.cluster_ip])
    assert edge.returncode != 0 and "unreachable" in edge.stderr.lower()


def host_sysctls(keys: list[str]) -> dict[str, str | None]:
    """The host's own values of these keys (None: the host has no such key)."""
    found: dict[str, str | None] = {}
    for key in keys:
        try:
            found[key] = Path("/proc/sys", key).read_text().strip()
        except OSError:
            found[key] = None
    return found


def test_nodes_forward_and_the_host_does_not_change():
    """Every sysctl the lab sets inside its namespaces keeps the host's value, while the lab
    is up and after it is gone: the lab writes only its own namespaces' copies."""
    from testbed.kernel.netbuild import read_sysctl

    built = Lab(load_plan("default"), serve=False)
    keys = sorted({s.key for s in built.wiring.sysctls})
    assert "net/ipv4/ip_forward" in keys
    before = host_sysctls(keys)
    with built:
        for node in built.plan.nodes:
            assert read_sysctl(built.ns(node.name), "net/ipv4/ip_forward") == "1"
        during = host_sysctls(keys)
    assert during == before
    assert host_sysctls(keys) == before


def test_build_and_teardown_leave_nothing(no_leaks):
    before = lab_namespaces()
    lab = Lab(load_plan("default"))
    lab.up()
    try:
        made = lab_namespaces() - before
        assert len(made) == len(lab.wiring.namespaces)
        assert f"{lab.id}.json" in state_files()
    finally:
        lab.down()


def test_a_failed_build_tears_down(no_leaks, monkeypatch):
    from testbed.live import proxy as lab_module  # the Lab loads rules through its proxy

    def boom(*_args, **_kw):
        raise RuntimeError("rules refused")

    monkeypatch.setattr(lab_module.rules_sync, "load", boom)
    with pytest.raises(RuntimeError, match="rules refused"):
        Lab(load_plan("default")).up()
