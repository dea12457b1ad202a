"""Upstream mode's pure parts: API objects, config files and the management network of a
plan, and the --kube-proxy choice. No root, no binaries."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from testbed.core import load
from testbed.core.errors import LabError
from testbed.core.library import resolve
from testbed.kubeproxy import objects


def planned(name: str, **kw):
    return load.load_both(str(resolve(name)), **kw)[1]


def test_builtin_stays_the_default():
    plan = planned("default")
    assert (plan.proxy.implementation, plan.proxy.version) == ("builtin", "")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("builtin", ("builtin", None)),
        ("upstream", ("upstream", None)),
        ("upstream@v1.34.4", ("upstream", "v1.34.4")),
        ("upstream@1.34.4", ("upstream", "v1.34.4")),
    ],
)
def test_kube_proxy_choice(text, want):
    assert load.kube_proxy_choice(text) == want


@pytest.mark.parametrize("text", ["ipvs", "builtin@v1.34.4", "upstream@1.34", "upstream@latest"])
def test_a_bad_kube_proxy_choice_is_one_line_naming_it(text):
    with pytest.raises(load.ChoiceError, match=r"^--kube-proxy .*") as caught:
        load.kube_proxy_choice(text)
    assert "\n" not in str(caught.value)


def test_the_override_reaches_the_plan():
    plan = planned("default", kube_proxy="upstream@v1.34.4")
    assert (plan.proxy.implementation, plan.proxy.version) == ("upstream", "v1.34.4")


def test_the_scenario_field_is_read(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "apiVersion: testbed/v1alpha1\nkind: Lab\nmetadata: {name: s}\nspec:\n"
        "  kubeProxy: {implementation: upstream, version: 1.35.4}\n  nodes: 1\n"
    )
    plan = load.load_both(str(path))[1]
    assert (plan.proxy.implementation, plan.proxy.version) == ("upstream", "v1.35.4")
    assert load.load_both(str(path), kube_proxy="builtin")[1].proxy.implementation == "builtin"


def test_management_network_avoids_every_scenario_range():
    plan = planned("default")
    mgmt = objects.management(plan)
    assert mgmt.cidr == "192.168.216.0/24"
    assert mgmt.apiserver == "192.168.216.1"
    assert dict(mgmt.nodes) == {"node-1": "192.168.216.11", "node-2": "192.168.216.12",
                                "node-3": "192.168.216.13"}  # fmt: skip
    clash = replace(plan, network=replace(plan.network, external_cidr="192.168.216.0/24"))
    assert objects.management(clash).cidr == "172.31.216.0/24"


def test_no_free_management_network_is_a_clear_error():
    plan = planned("default")
    net = replace(
        plan.network,
        external_cidr="192.168.0.0/16",
        vip_cidr="172.31.0.0/16",
        service_cidr="10.255.0.0/16",
    )
    with pytest.raises(LabError, match="no management network is free.*192.168.216.0/24"):
        objects.management(replace(plan, network=net))


def test_the_api_servers_own_cluster_ip_is_refused():
    plan = planned("default")
    svc = replace(plan.services[0], cluster_ip="10.96.0.1")
    with pytest.raises(LabError, match="clusterIP 10.96.0.1 is the API server's own"):
        objects.check(replace(plan, services=(svc,)))


def test_a_renderer_fault_is_refused_in_upstream_mode():
    plan = planned("no-snat-broken-return")
    with pytest.raises(LabError, match="whatIf no-snat is a fault of the built-in renderer"):
        objects.check(plan)


def test_node_manifest_is_what_kubelet_registers():
    node = planned("default").nodes[1]
    manifest = objects.node_manifest(node)
    assert manifest["metadata"]["labels"]["kubernetes.io/hostname"] == "node-2"
    assert manifest["spec"]["podCIDRs"] == [node.pod_cidr]
    assert {"type": "InternalIP", "address": node.ip} in manifest["status"]["addresses"]


def test_service_manifest_gives_every_decided_field():
    plan = planned("cluster-to-local-outage")
    spread = plan.service("spread")
    spec = objects.service_manifest(spread)["spec"]
    assert spec["clusterIP"] == spread.cluster_ip
    assert spec["externalTrafficPolicy"] == "Local"
    assert spec["healthCheckNodePort"] == spread.health_check_node_port
    assert spec["ports"][0]["nodePort"] == spread.ports[0].node_port
    status = objects.service_status(spread)
    assert status == {"status": {"loadBalancer": {"ingress": [{"ip": spread.lb_ips[0]}]}}}


def test_session_affinity_and_source_ranges():
    spec = objects.service_manifest(planned("session-affinity").services[0])["spec"]
    assert spec["sessionAffinity"] == "ClientIP"
    assert spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] > 0
    ranged = [s for s in planned("source-ranges").services if s.source_ranges][0]
    spec = objects.service_manifest(ranged)["spec"]
    assert spec["loadBalancerSourceRanges"] == list(ranged.source_ranges)


def test_one_slice_per_port_with_every_endpoint_and_its_conditions():
    plan = planned("default")
    svc = plan.services[0]
    (found,) = objects.slice_manifests(svc, plan)
    assert found["metadata"]["labels"]["kubernetes.io/service-name"] == svc.name
    ips = [e["addresses"][0] for e in found["endpoints"]]
    assert ips == [e.ip for e in svc.ports[0].endpoints]
    first = found["endpoints"][0]
    assert first["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert first["targetRef"]["kind"] == "Pod"
    assert first["nodeName"] == svc.ports[0].endpoints[0].node


def test_kube_proxy_config_pins_the_fabric_address():
    plan = planned("default")
    node = plan.nodes[0]
    config = json.loads(objects.kube_proxy_config(node, plan, "/x/kubeconfig"))
    assert config["bindAddress"] == node.ip
    assert config["nodePortAddresses"] == [f"{node.ip}/32"]
    assert config["healthzBindAddress"] == f"{node.ip}:10256"
    assert config["metricsBindAddress"] == f"{node.ip}:10249"
    assert config["conntrack"] == {"maxPerCore": 0}
    assert (config["mode"], config["clusterCIDR"]) == ("iptables", plan.network.pod_cidr)


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_masquerade_all_and_node_port_addresses_go_where_kube_proxy_reads_them(mode):
    plan = planned("default")
    proxy = replace(
        plan.proxy, mode=mode, masquerade_all=True, node_port_addresses=("primary", "10.0.0.0/8")
    )
    node = plan.nodes[0]
    config = json.loads(objects.kube_proxy_config(node, replace(plan, proxy=proxy), "/k"))
    assert "masqueradeAll" not in config  # not a top-level field of KubeProxyConfiguration
    assert config[mode]["masqueradeAll"] is True
    assert config["nodePortAddresses"] == [f"{node.ip}/32", "10.0.0.0/8"]


def test_node_port_range_widens_to_what_the_plan_gives():
    plan = planned("default")
    assert objects.node_port_range(plan) == "30000-32767"
    port = replace(plan.services[0].ports[0], node_port=40000)
    svc = replace(plan.services[0], ports=(port,))
    assert objects.node_port_range(replace(plan, services=(svc,))) == "30000-40000"


def test_a_policy_flip_moves_no_other_services_node_port():
    from testbed.core.load import replan
    from testbed.live import changes

    scenario, before = load.load_both(str(resolve("cluster-to-local-outage")))
    after = replan(changes.set_policy(scenario, "runners", "Local"), before)
    ports = {s.key: [p.node_port for p in s.ports] for s in before.services}
    assert {s.key: [p.node_port for p in s.ports] for s in after.services} == ports
    taken = [p for ps in ports.values() for p in ps]
    assert after.service("runners").health_check_node_port not in taken
    spread = before.service("spread").health_check_node_port
    assert after.service("spread").health_check_node_port == spread  # kept, as the API server
    assert after.service("runners").health_check_node_port != spread


def test_a_sync_covers_a_change_only_if_it_began_after_everything_queued():
    from testbed.live.upstream import QUIET, Sample, covered

    change = 100.0
    # the event came at 100.2; a sync ran 100.25-100.30: it began after it
    now = Sample(count=5, total=0.5, synced=100.30, queued=100.2)
    assert covered(now, 100.25, change, False, 100.35)
    # a sync that began before the event (100.10) and ended after it does not cover it
    assert not covered(now, 100.10, change, False, 100.35)
    # nothing synced since the change began
    assert not covered(Sample(5, 0.5, 99.0, 100.2), None, change, False, 100.3)
    # a change queued after the last sync is pending
    assert not covered(Sample(5, 0.5, 100.3, 100.4), 100.25, change, False, 100.45)
    # a fresh kube-proxy's first sync after its start covers everything
    assert covered(Sample(1, 0.1, 100.5, 0.0), None, change, True, 100.6)
    # long after the last queued change, a sync in flight then has been followed by another
    assert covered(now, None, change, False, 100.2 + QUIET + 0.1)
    assert not covered(now, None, change, False, 100.2 + QUIET - 0.1)
