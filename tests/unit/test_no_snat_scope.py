"""The no-snat fault removes the Cluster path's masquerade only, in both proxy modes."""

from testbed.core.model import Endpoint, NodePlan, PortPlan, ProxyOptions, ServicePlan
from testbed.kubeproxy import iptables, nftables

NODE = NodePlan("node-1", 1, "172.18.0.11", "10.244.1.0/24", "10.244.1.1")


def service(internal: str) -> ServicePlan:
    port = PortPlan("http", 80, "TCP", None, 8080, (Endpoint("10.244.1.2", 8080, "node-1"),))
    return ServicePlan(
        "default", "web", "ClusterIP", "10.96.0.10", (port,), internal_policy=internal
    )


def test_itp_local_keeps_its_masquerade_under_no_snat_in_both_modes():
    faulty = ProxyOptions(what_if=("no-snat",))
    ipt = iptables.render(NODE, [service("Local")], faulty)
    svl = [line for line in ipt.splitlines() if line.startswith("-A KUBE-SVL-")]
    assert any("KUBE-MARK-MASQ" in line for line in svl)
    nft = nftables.render(NODE, [service("Local")], faulty)
    local = [line for line in nft.splitlines() if "local-" in line and "mark-for-masq" in line]
    assert local, "the local- chain keeps its off-cluster masquerade"


def test_cluster_chain_loses_its_masquerade_under_no_snat_in_both_modes():
    faulty = ProxyOptions(what_if=("no-snat",))
    ipt = iptables.render(NODE, [service("Cluster")], faulty)
    svc = [line for line in ipt.splitlines() if line.startswith("-A KUBE-SVC-")]
    assert not any("KUBE-MARK-MASQ" in line for line in svc)
    nft = nftables.render(NODE, [service("Cluster")], faulty)
    assert not [
        line
        for line in nft.splitlines()
        if "service-" in line and "mark-for-masq" in line and "saddr != " in line
    ]
