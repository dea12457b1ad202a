"""The nftables renderer against golden files and against kube-proxy's own expected dump.

Every case uses the conventions of kube-proxy's nftables proxier_test.go
(`NewFakeProxier`): node `test-node` at 192.168.0.2, pods in 10.0.0.0/8 (the
local-traffic detector), ClusterIPs in 172.30.0.0/16, and the tests' service
names (ns1/svc1, port p80, ...), so chain names such as
`service-ULMVA6XW-ns1/svc1/tcp/p80` can be checked against the upstream dumps
literally. Each case says which upstream test it mirrors.

`UPDATE_GOLDEN=1 pytest tests/unit/test_nftables_render.py` rewrites the
goldens; otherwise any difference fails.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from testbed.core.model import Endpoint, NodePlan, PortPlan, ProxyOptions, ServicePlan
from testbed.kubeproxy import nftables

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "nftables"
UPSTREAM_DUMP = GOLDEN / "kube-proxy-TestOverallNFTablesRules.txt"

NODE = NodePlan(
    name="test-node", index=1, ip="192.168.0.2", pod_cidr="10.0.0.0/24", gateway="10.0.0.1"
)
OPTS = ProxyOptions(mode="nftables", cluster_cidr="10.0.0.0/8", service_cidr="172.30.0.0/16")


def ep(ip: str, node: str = "remote", port: int = 80, **conditions: bool) -> Endpoint:
    return Endpoint(ip=ip, port=port, node=node, **conditions)


def terminating(ip: str, node: str, serving: bool = True) -> Endpoint:
    return ep(ip, node, ready=False, serving=serving, terminating=True)


def svc(ns: str, name: str, kind: str, cluster_ip: str, *ports: PortPlan, **kw) -> ServicePlan:
    return ServicePlan(namespace=ns, name=name, type=kind, cluster_ip=cluster_ip, ports=ports, **kw)


def p80(*endpoints: Endpoint, node_port: int | None = None, name: str = "p80") -> PortPlan:
    return PortPlan(name=name, port=80, node_port=node_port, target_port=80, endpoints=endpoints)


# TestOverallNFTablesRules' six services, as the lab's model expresses them.
OVERALL = (
    svc("ns1", "svc1", "ClusterIP", "172.30.0.41", p80(ep("10.180.0.1", node=""))),
    svc(
        "ns2",
        "svc2",
        "LoadBalancer",
        "172.30.0.42",
        p80(ep("10.180.0.2", node=""), node_port=3001),
        lb_ips=("1.2.3.4",),
        external_ips=("192.168.99.22",),
        external_policy="Local",
        health_check_node_port=30000,
    ),
    svc("ns3", "svc3", "NodePort", "172.30.0.43", p80(ep("10.180.0.3", node=""), node_port=3003)),
    svc(
        "ns4",
        "svc4",
        "NodePort",
        "172.30.0.44",
        p80(ep("10.180.0.4", node=""), ep("10.180.0.5", node="test-node")),
        external_ips=("192.168.99.33",),
    ),
    svc(
        "ns5",
        "svc5",
        "LoadBalancer",
        "172.30.0.45",
        p80(ep("10.180.0.3", node=""), node_port=3002),
        lb_ips=("5.6.7.8",),
        health_check_node_port=30000,
        source_ranges=(" 203.0.113.0/25",),
        affinity_timeout=10800,
    ),
    svc("ns6", "svc6", "ClusterIP", "172.30.0.46", p80()),
)


@dataclass(frozen=True)
class Case:
    mirrors: str  # the upstream test this golden follows
    services: tuple[ServicePlan, ...]
    opts: ProxyOptions = OPTS


LB_LOCAL = svc(
    "ns2",
    "svc2",
    "LoadBalancer",
    "172.30.0.42",
    p80(ep("10.180.0.2", node="test-node"), ep("10.180.1.2"), node_port=3001),
    lb_ips=("1.2.3.4",),
    external_ips=("192.168.99.22",),
    external_policy="Local",
    health_check_node_port=30000,
)
NODEPORT_CLUSTER = OVERALL[2]

CASES: dict[str, Case] = {
    "clusterip-3-endpoints": Case(
        "TestOverallNFTablesRules svc1, with three endpoints instead of one",
        (
            svc(
                "ns1",
                "svc1",
                "ClusterIP",
                "172.30.0.41",
                p80(ep("10.180.0.1", node="test-node"), ep("10.180.0.2"), ep("10.180.0.3")),
            ),
        ),
    ),
    "nodeport-cluster": Case("TestOverallNFTablesRules svc3", (NODEPORT_CLUSTER,)),
    "nodeport-local-with-local-endpoint": Case(
        "TestInternalExternalMasquerade svc2 (eTP Local), as a NodePort service",
        (
            svc(
                "ns2",
                "svc2",
                "NodePort",
                "172.30.0.42",
                p80(ep("10.180.0.2", node="test-node"), ep("10.180.1.2"), node_port=3002),
                external_policy="Local",
            ),
        ),
    ),
    "nodeport-local-without-local-endpoint": Case(
        "TestOverallNFTablesRules svc2 (eTP Local, only a remote endpoint), NodePort only",
        (
            svc(
                "ns2",
                "svc2",
                "NodePort",
                "172.30.0.42",
                p80(ep("10.180.0.2"), node_port=3001),
                external_policy="Local",
            ),
        ),
    ),
    "loadbalancer-local-healthcheck": Case(
        "TestOverallNFTablesRules svc2, plus a local endpoint (so local-… exists)", (LB_LOCAL,)
    ),
    "external-ips": Case("TestOverallNFTablesRules svc4", (OVERALL[3],)),
    "session-affinity": Case(
        "TestOverallNFTablesRules svc5's ClientIP affinity (10800 s), on a ClusterIP service",
        (
            svc(
                "ns1",
                "svc1",
                "ClusterIP",
                "172.30.0.41",
                p80(ep("10.180.0.1"), ep("10.180.0.2")),
                affinity_timeout=10800,
            ),
        ),
    ),
    "source-ranges": Case(
        "TestLoadBalancer (a range holds the node IP, so the LB IPs are allowed too)",
        (
            svc(
                "ns1",
                "svc1",
                "LoadBalancer",
                "172.30.0.41",
                p80(ep("10.180.0.1"), node_port=3001),
                lb_ips=("1.2.3.4", "5.6.7.8"),
                source_ranges=("192.168.0.0/24", " 203.0.113.0/25"),
            ),
        ),
    ),
    "internal-local": Case(
        "TestInternalExternalMasquerade svc3 (iTP Local) and TestInternalTrafficPolicy's"
        " no-local-endpoints case (ns2/svc2: drop)",
        (
            svc(
                "ns1",
                "svc1",
                "ClusterIP",
                "172.30.0.41",
                p80(ep("10.180.0.1", node="test-node"), ep("10.180.1.1")),
                internal_policy="Local",
            ),
            svc(
                "ns2",
                "svc2",
                "ClusterIP",
                "172.30.0.42",
                p80(ep("10.180.1.2")),
                internal_policy="Local",
            ),
        ),
    ),
    "no-endpoints": Case(
        "TestNoEndpointsReject",
        (
            svc(
                "ns1",
                "svc1",
                "LoadBalancer",
                "172.30.0.41",
                p80(node_port=3001),
                external_ips=("192.168.99.11",),
                lb_ips=("1.2.3.4",),
            ),
        ),
    ),
    "terminating-endpoints": Case(
        "TestTerminatingEndpointsTrafficPolicyCluster 'only terminating endpoints exist'"
        " (unnamed port) and ...PolicyLocal 'terminating endpoints on remote node' (ns2/svc2)",
        (
            svc(
                "ns1",
                "svc1",
                "LoadBalancer",
                "172.30.1.1",
                p80(
                    terminating("10.0.1.2", "test-node"),
                    terminating("10.0.1.3", "test-node"),
                    terminating("10.0.1.4", "another-node", serving=False),
                    terminating("10.0.1.5", "another-node"),
                    name="",
                ),
                lb_ips=("1.2.3.4",),
                health_check_node_port=30000,
            ),
            svc(
                "ns2",
                "svc2",
                "LoadBalancer",
                "172.30.1.2",
                p80(terminating("10.0.1.5", "node-1"), name=""),
                lb_ips=("1.2.3.5",),
                external_policy="Local",
                health_check_node_port=30001,
            ),
        ),
    ),
    "masquerade-all": Case(
        "TestInternalExternalMasquerade 'masqueradeAll' (on TestOverallNFTablesRules svc3)",
        (NODEPORT_CLUSTER,),
        replace(OPTS, masquerade_all=True),
    ),
    "no-local-detector": Case(
        "TestInternalExternalMasquerade 'no LocalTrafficDetector' (svc3 and an eTP Local LB)",
        (NODEPORT_CLUSTER, LB_LOCAL),
        replace(OPTS, detect_local_mode="None"),
    ),
    "no-snat": Case(
        "TestOverallNFTablesRules svc3 and an eTP Local LB under the lab's what-if no-snat"
        " fault: the Cluster path loses its masquerade, hairpin and the Local path keep theirs",
        (NODEPORT_CLUSTER, LB_LOCAL),
        replace(OPTS, what_if=("no-snat",)),
    ),
}


def golden_text(name: str, case: Case) -> str:
    header = (
        f"# golden case {name}\n# mirrors (pkg/proxy/nftables/proxier_test.go): {case.mirrors}\n"
    )
    return header + nftables.render(NODE, case.services, case.opts)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    path = GOLDEN / f"{name}.nft"
    text = golden_text(name, CASES[name])
    if os.environ.get("UPDATE_GOLDEN") == "1":  # comparing with what was just written: no test
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        pytest.skip(f"UPDATE_GOLDEN=1: wrote {path}; review the diff, then run without it")
    assert path.exists(), f"no golden {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name}: render differs from {path}"


def test_no_stray_goldens() -> None:
    """A golden without a case would go stale silently."""
    assert {p.stem for p in GOLDEN.glob("*.nft")} == set(CASES)


def _statements(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _rules_by_chain(lines: list[str]) -> dict[str, list[str]]:
    chains: dict[str, list[str]] = {}
    for line in lines:
        if line.startswith("add rule ip kube-proxy "):
            chain = line.split()[4]
            chains.setdefault(chain, []).append(line)
    return chains


def test_matches_kube_proxy_overall_dump() -> None:
    """Same statements as upstream's TestOverallNFTablesRules, and the same rule order."""
    upstream = _statements(UPSTREAM_DUMP.read_text())
    ours = _statements(nftables.render(NODE, OVERALL, OPTS))
    assert ours[:2] == ["add table ip kube-proxy", "delete table ip kube-proxy"]
    ours = ours[2:]
    assert len(ours) == len(set(ours)), "a statement is written twice"
    assert set(ours) == set(upstream)
    assert _rules_by_chain(ours) == _rules_by_chain(upstream)


def test_every_reference_is_declared_before_use() -> None:
    """nft -f resolves gotos, jumps and @sets as it reads: a target must come first."""
    for name, case in CASES.items():
        declared: set[str] = set()
        for line in _statements(nftables.render(NODE, case.services, case.opts)):
            if line.startswith("delete table"):
                declared = set()
                continue
            words = line.split()
            if words[0] == "add" and words[1] in ("chain", "set", "map"):
                declared.add(words[4])
            for target in re.findall(r"(?:goto|jump) (\S+)", line):
                assert target in declared, f"{name}: {target} used before it exists"
            for target in re.findall(r"@([\w./-]+)", line):
                assert target in declared, f"{name}: @{target} used before it exists"


def test_chain_names_hash_like_kube_proxy() -> None:
    assert nftables.service_chain_base("ns1", "svc1", "TCP", "p80") == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert (
        nftables.endpoint_chain_base("ns1", "svc1", "tcp", "p80", "10.180.0.1", 80)
        == "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    )
    long = nftables.hash_and_truncate("x" * 300)
    assert len(long) == 240 and long.endswith("...")


def test_service_port_name_drops_colon_for_unnamed_port() -> None:
    service = svc("ns1", "svc1", "ClusterIP", "172.30.0.41", p80(name=""))
    assert nftables.service_port_name(service, service.ports[0]) == "ns1/svc1"
    text = nftables.render(NODE, (service,), OPTS)
    assert 'comment "ns1/svc1" : goto reject-chain' in text


def test_headless_service_writes_nothing() -> None:
    headless = svc("ns1", "svc1", "ClusterIP", None, p80(ep("10.180.0.1")))
    assert nftables.render(NODE, (headless,), OPTS) == nftables.render(NODE, (), OPTS)


def test_no_snat_only_removes_cluster_path_masquerade() -> None:
    normal = nftables.render(NODE, (NODEPORT_CLUSTER, LB_LOCAL), OPTS)
    fault = nftables.render(NODE, (NODEPORT_CLUSTER, LB_LOCAL), replace(OPTS, what_if=("no-snat",)))
    cluster_masq = [
        "add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 jump mark-for-masquerade",
        "add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43"
        " ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
        # the off-cluster ClusterIP masquerade goes for every service, whatever its eTP
        "add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 ip daddr 172.30.0.42"
        " ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
    ]
    for line in cluster_masq:
        assert line in normal and line not in fault
    removed = set(_statements(normal)) - set(_statements(fault))
    assert {r for r in removed if not r.startswith("add chain")} == set(cluster_masq)
    assert "ip saddr 10.180.0.3 jump mark-for-masquerade" in fault  # hairpin stays
    assert "fib saddr type local jump mark-for-masquerade" in fault  # Local path untouched
    assert fault.count("what-if no-snat") >= 2


def test_masquerade_all_masquerades_every_clusterip_packet() -> None:
    text = nftables.render(NODE, (NODEPORT_CLUSTER,), replace(OPTS, masquerade_all=True))
    assert "service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 jump mark-for-masquerade" in text
    assert "ip saddr != 10.0.0.0/8" not in text


def test_node_cidr_detector_uses_the_node_pod_cidr() -> None:
    text = nftables.render(NODE, (LB_LOCAL,), replace(OPTS, detect_local_mode="NodeCIDR"))
    assert "ip saddr 10.0.0.0/24 goto service-42NFTM6N-ns2/svc2/tcp/p80" in text
    assert "ip saddr != 10.0.0.0/24 jump mark-for-masquerade" in text


def _many(count: int, per: int) -> list[ServicePlan]:
    return [
        svc(
            f"ns{i % 10}",
            f"svc{i}",
            "NodePort",
            f"172.30.{i // 250}.{i % 250 + 1}",
            p80(
                *(ep(f"10.{i // 250}.{i % 250}.{k + 1}", f"node-{k}") for k in range(per)),
                node_port=30000 + i,
            ),
        )
        for i in range(count)
    ]


def test_render_scales_linearly_enough() -> None:
    """1,000 services x 3 endpoints: every chain present, and quick to write."""
    services = _many(1000, 3)
    start = time.perf_counter()
    text = nftables.render(NODE, services, OPTS)
    elapsed = time.perf_counter() - start
    chains = [line for line in text.splitlines() if line.startswith("add chain")]
    base_chains = len(
        [
            line
            for line in nftables.render(NODE, (), OPTS).splitlines()
            if line.startswith("add chain")
        ]
    )
    assert len(chains) == base_chains + 1000 * (1 + 1 + 3)  # service, external, endpoints
    assert elapsed < 5, f"render took {elapsed:.2f} s"
