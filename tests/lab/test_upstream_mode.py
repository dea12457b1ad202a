"""Upstream mode, end to end: the real kube-proxy in every node, fed by a real API server.

These need the built binaries (`testbed upstream build`); without them they skip.
"""

from __future__ import annotations

import json
import os

import pytest

from testbed.kernel import netns, upstreambin
from tests.support.commands import run_testbed
from tests.support.world import lab_namespaces, state_files

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not upstreambin.built(), reason="no upstream binaries built"),
]


def ns_inode(path: str) -> int:
    return os.stat(path).st_ino


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
@pytest.mark.parametrize("scenario", ["cluster-snat", "local-no-local-endpoint"])
def test_run_passes_under_the_real_kube_proxy(scenario, mode):
    before = lab_namespaces()
    done = run_testbed(
        "run", "-q", "--kube-proxy", "upstream", "--proxy-mode", mode, scenario, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{scenario} ({mode}," in done.stdout
    assert lab_namespaces() == before, "the run removed its lab, control plane included"


def test_one_kube_proxy_per_node_in_that_nodes_namespace(lab):
    built = lab("default", kube_proxy="upstream")
    proxy = built.proxy
    assert len(proxy._running) == len(built.plan.nodes)
    for node in built.plan.nodes:
        proc = proxy._running[node.name]
        with open(f"/proc/{proc.pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
        assert argv[0].endswith(b"/kube-proxy"), argv
        assert ns_inode(f"/proc/{proc.pid}/ns/net") == ns_inode(netns.path(built.ns(node.name)))
    # its record names every process it started, by pid and start time
    from testbed.kernel import state

    names = sorted(p["name"] for p in state.load(built.id).processes)
    assert names == sorted(
        ["etcd", "kube-apiserver", *(f"kube-proxy-{n.name}" for n in built.plan.nodes)]
    )


def test_kubectl_lists_the_scenarios_objects_and_a_flip_to_local_drops(lab):
    built = lab("cluster-snat", kube_proxy="upstream")
    got = json.loads(built.proxy.cp.kubectl(["get", "svc,endpointslices", "-A", "-o", "json"]))
    names = {(i["kind"], i["metadata"]["name"]) for i in got["items"]}
    assert ("Service", "web") in names
    assert ("EndpointSlice", "web-0") in names
    # through `testbed kubectl`, from inside the lab's control plane namespace
    env = dict(os.environ)
    done = run_testbed("kubectl", "--lab", built.id, "--", "get", "svc", "web", env=env)
    assert done.returncode == 0, done.stderr
    assert "NodePort" in done.stdout
    before = built.probe(
        source="client", service="web", via="nodePort", node="node-2", count=5
    ).observed
    assert before["completed"] == 5, before
    patch = '{"spec":{"externalTrafficPolicy":"Local"}}'
    flipped = run_testbed("kubectl", "--lab", built.id, "--", "patch", "svc", "web", "-p", patch)
    assert flipped.returncode == 0, flipped.stderr
    judged = built.probe(source="client", service="web", via="nodePort", node="node-2", count=5)
    after = judged.observed
    assert after["dropped"] == 5, after  # node-2 runs no web pod: Local drops it
    # the oracle read the Service from the API server: it predicted the drop too
    assert judged.passed, judged.reasons
    assert (judged.oracle["outcome"], judged.oracle["completed"]) == ("dropped", 0), judged.oracle
    through_pod_node = built.probe(
        source="client", service="web", via="nodePort", node="node-1", count=5
    ).observed
    assert through_pod_node["completed"] == 5
    assert set(through_pod_node["sourceIPs"]) == {"203.0.113.10"}  # the client's own address


def test_down_leaves_no_process_namespace_or_data_dir(lab):
    from testbed.builders import load
    from testbed.kernel import procs, state

    built = load("default", kube_proxy="upstream").up()
    started = [procs.Proc(p["pid"], p["start"]) for p in state.load(built.id).processes]
    data = state.data_dir(built.id)
    assert os.path.isdir(data)
    built.down()
    assert not [p for p in started if procs.alive(p.pid, p.start)]
    assert not os.path.exists(data)
    assert not any(f.startswith(built.id) for f in state_files())
    assert not [n for n in lab_namespaces() if built.id in n]


def test_an_unbuilt_version_says_how_to_build_it():
    done = run_testbed("run", "--kube-proxy", "upstream@v1.30.0", "default")
    assert done.returncode == 2
    assert "v1.30.0" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("kube_proxy", ["builtin", "upstream"])
def test_an_unhealthy_kube_proxy_fails_healthz_but_not_the_service_checks(lab, kube_proxy):
    """proxyHealthy false taints the Node for deletion (KEP-3836) in both implementations:
    the edge stops sending Cluster traffic to it (its /healthz says 503) but keeps sending
    a Local Service's, whose healthCheckNodePort still counts the local endpoints."""
    built = lab("lb-cluster-vs-local-balance", kube_proxy=kube_proxy)
    built.wait_for_edge()
    before = built.lb_nodes()
    cluster, spread = "198.51.100.10", "198.51.100.12"
    assert "node-2" in before[cluster] and "node-2" in before[spread], before
    built.set_proxy_health("node-2", False)
    built.wait_for_edge()
    after = built.lb_nodes()
    assert "node-2" not in after[cluster], after
    assert "node-2" in after[spread], after
    built.set_proxy_health("node-2", True)
    built.wait_for_edge()
    assert "node-2" in built.lb_nodes()[cluster]
