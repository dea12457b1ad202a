"""The benchmark's pure parts: the ip -batch floor, statistics, figures, generated worlds."""

from __future__ import annotations

import argparse

import pytest

from testbed import bench
from testbed.core import topology
from testbed.core.topology import Addr, Route, Sysctl, Veth, Wiring


def tiny_wiring() -> Wiring:
    return Wiring(
        lab_id="x",
        namespaces=("edge", "node-1", "web-0"),
        bridges=(("edge", "br-fabric", "172.18.0.1/24"),),
        veths=(
            Veth("edge", "node-1", "node-1", "eth0", master="br-fabric"),
            Veth("node-1", "web-0", "web-0", "eth0"),
        ),
        addrs=(
            Addr("node-1", "eth0", "172.18.0.11/24"),
            Addr("node-1", "web-0", "10.244.1.1/32"),
            Addr("web-0", "eth0", "10.244.1.2/32"),
        ),
        routes=(
            Route("node-1", "default", ("172.18.0.1",)),
            Route("node-1", "10.244.1.2/32", dev="web-0"),
            Route("web-0", "10.244.1.1/32", dev="eth0"),
            Route("web-0", "default", ("10.244.1.1",)),
            Route("edge", "198.51.100.10/32", ("172.18.0.11", "172.18.0.12")),
        ),
        sysctls=(Sysctl("edge", "net/ipv4/ip_forward", "1"),),
    )


def test_ip_batch_builds_the_same_wiring() -> None:
    batch = bench.ip_batch(tiny_wiring(), "tbb-1-")
    assert batch.build.splitlines() == [
        "netns add tbb-1-edge",
        "netns add tbb-1-node-1",
        "netns add tbb-1-web-0",
        "link add node-1 netns tbb-1-edge type veth peer name eth0 netns tbb-1-node-1",
        "link add web-0 netns tbb-1-node-1 type veth peer name eth0 netns tbb-1-web-0",
    ]
    per = {ns: script.splitlines() for ns, script in batch.per_namespace}
    assert list(per) == ["tbb-1-edge", "tbb-1-node-1", "tbb-1-web-0"]
    assert per["tbb-1-edge"] == [
        "link set lo up",
        "link add br-fabric type bridge",
        "addr add 172.18.0.1/24 dev br-fabric",
        "link set br-fabric up",
        "link set node-1 master br-fabric",
        "link set node-1 up",
        "route add 198.51.100.10/32 proto static nexthop via 172.18.0.11 nexthop via 172.18.0.12",
    ]
    assert per["tbb-1-node-1"] == [
        "link set lo up",
        "link set eth0 up",
        "link set web-0 up",
        "addr add 172.18.0.11/24 dev eth0",
        "addr add 10.244.1.1/32 dev web-0",
        "route add default via 172.18.0.1 proto static",
        "route add 10.244.1.2/32 dev web-0 scope link proto static",
    ]
    assert per["tbb-1-web-0"] == [
        "link set lo up",
        "link set eth0 up",
        "addr add 10.244.1.2/32 dev eth0",
        "route add 10.244.1.1/32 dev eth0 scope link proto static",
        "route add default via 10.244.1.1 proto static",
    ]
    assert batch.teardown.splitlines() == [
        "netns del tbb-1-edge",
        "netns del tbb-1-node-1",
        "netns del tbb-1-web-0",
    ]
    # ip cannot write sysctls: the floor leaves them out, and says so
    assert "sysctl" not in batch.build + "".join(s for _, s in batch.per_namespace)


def test_ip_batch_covers_a_planned_lab() -> None:
    plan = bench.scale_plan(3, 2)
    wiring = topology.wire(plan, "t")
    batch = bench.ip_batch(wiring, "p-")
    scripts = "".join(s for _, s in batch.per_namespace)
    assert len(batch.namespaces) == len(wiring.namespaces) == 1 + 3 + 6 + 1
    assert batch.build.count("type veth") == len(wiring.veths)
    assert scripts.count("addr add") == len(wiring.addrs) + len(wiring.bridges)
    assert scripts.count("route add") == len(wiring.routes)
    # every line names a namespace with the prefix, never the host's
    assert all(" netns p-" in line for line in batch.build.splitlines() if "veth" in line)


def test_median_spread_iqr() -> None:
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert bench.median(xs) == 3.0
    assert bench.spread(xs) == (1.0, 5.0)
    assert bench.iqr(xs) == (2.0, 4.0)
    assert bench.iqr([7.0]) == (7.0, 7.0)
    assert bench.median([1.0, 2.0]) == 1.5


def test_figure_targets_on_value_and_on_ratio() -> None:
    fast = bench.Figure("a", "s", (0.2, 0.3, 0.4), (0.1,), target=0.5)
    assert fast.median == 0.3 and fast.met is True
    assert fast.ratio == pytest.approx(3.0)
    slow = bench.Figure("b", "s", (0.3,), (0.1,), target=1.5, op="<=", on_ratio=True)
    assert slow.met is False  # 3x the floor
    rate = bench.Figure("c", "/s", (900.0, 1000.0, 1100.0), target=2000.0, op=">=")
    assert rate.met is False and rate.ratio is None
    assert bench.Figure("d", "ms", (1.0,)).met is None
    exact = bench.Figure("e", "s", (0.5,), target=0.5)
    assert exact.met is False  # "under 0.5 s" means strictly under


def test_table_and_json_carry_every_column() -> None:
    figs = [
        bench.Figure("lab up", "s", (0.2, 0.25, 0.3), (0.1, 0.1), "floor", 0.5, note="n1"),
        bench.Figure("probes", "/s", (900.0,), target=2000.0, op=">="),
    ]
    text = bench.table(figs)
    head, rule, first, second = text.splitlines()[:4]
    for column in ("figure", "median", "spread (min-max)", "baseline", "ratio", "target", "met?"):
        assert column in head
    assert set(rule.replace(" ", "")) == {"-"}
    assert "0.250 s" in first and "0.200 s - 0.300 s" in first and "2.50x" in first
    assert first.rstrip().endswith("yes") and second.rstrip().endswith("NO")
    assert ">= 2,000/s" in second
    assert "lab up: n1" in text
    data = figs[0].to_json()
    assert data["median"] == 0.25 and data["baseline"] == 0.1 and data["met"] is True
    assert data["samples"] == [0.2, 0.25, 0.3] and data["baseline_samples"] == [0.1, 0.1]
    assert data["target"] == 0.5 and data["target_on"] == "median"


def test_probe_batches_fit_the_fd_limit() -> None:
    assert bench.probe_batches(10_000, 1 << 20) == [10_000]
    assert bench.probe_batches(10_000, 20_000) == [5_000, 5_000]
    odd = bench.probe_batches(10_001, 8_000)
    assert sum(odd) == 10_001 and max(odd) - min(odd) <= 1 and max(odd) <= 3_500


def test_scale_docs_plan_pods_evenly() -> None:
    plan = bench.scale_plan(4, 3)
    assert [n.name for n in plan.nodes] == ["node-1", "node-2", "node-3", "node-4"]
    per_node = {n.name: sum(1 for p in plan.pods if p.node == n.name) for n in plan.nodes}
    assert set(per_node.values()) == {3}
    (web,) = plan.services
    assert web.type == "NodePort" and len(web.ports[0].endpoints) == 12


def test_bulk_services_and_one_change() -> None:
    services = bench.bulk_services(30)
    assert len({s.cluster_ip for s in services}) == 30
    assert len({e.ip for s in services for e in s.ports[0].endpoints}) == 90
    assert [s.type for s in services].count("NodePort") == 3
    changed = bench.one_change(services)
    assert len(changed) == 31 and changed[-1].name == "added"
    shrunk = [a for a, b in zip(services, changed, strict=False) if a is not b]
    assert len(shrunk) == 1
    assert len(changed[15].ports[0].endpoints) == 2


def test_wiring_seconds_leaves_out_sysctls() -> None:
    marks = {"state-saved": 1.0, "addresses": 1.5, "sysctls": 1.7, "routes": 2.0}
    assert bench.wiring_seconds(marks) == pytest.approx(0.8)
    assert bench.wiring_seconds({"state-saved": 1.0}) is None


def test_only_and_quick() -> None:
    assert bench.parse_only(None) == list(bench.SECTIONS)
    assert bench.parse_only("rules, default") == ["default", "rules"]
    with pytest.raises(ValueError, match="unknown"):
        bench.parse_only("rules,nope")
    quick = bench.Config.quick()
    assert quick.scale == ((10, 10), (50, 10)) and quick.reps < bench.Config().reps


def test_add_command_registers_bench() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    bench.add_command(sub)
    args = parser.parse_args(["bench", "--quick", "--json", "out.json", "--only", "rules"])
    assert args.func is bench.run
    assert args.quick and args.json == "out.json" and args.only == "rules"
