"""Planning: addresses, allocations, placement and endpoints, as the format promises."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testbed.core import scenario
from testbed.core.describe import describe
from testbed.core.model import Endpoint, Target
from testbed.core.plan import plan
from testbed.core.scenario import ScenarioError

ROOT = Path(__file__).resolve().parents[2]


def lab(nodes: int | str = 3, extra: str = "") -> str:
    return (
        "apiVersion: testbed/v1alpha1\nkind: Lab\nmetadata: {name: t}\n"
        f"spec:\n  nodes: {nodes}\n{extra}"
    )


def deployment(name: str, replicas: int, labels: str = "", pod_spec: str = "") -> str:
    labels = labels or f"app: {name}"
    return (
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\n"
        f"spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{{labels}}}}}\n"
        f"  template:\n    metadata: {{labels: {{{labels}}}}}\n    spec:\n"
        f"      containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]\n{pod_spec}"
    )


def pod(name: str, spec: str = "", labels: str = "", status: str = "") -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n"
        f"spec:\n  containers: [{{name: c}}]\n{spec}" + (f"status: {status}\n" if status else "")
    )


def service(name: str, spec: str) -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n{spec}"


def build(*docs: str):
    return plan(scenario.loads("---\n".join(docs), "t.yaml"))


def placement(p) -> dict[str, str]:
    return {x.name: x.node for x in p.pods}


ANTI = """\
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - labelSelector: {{matchLabels: {{app: {app}}}}}
              topologyKey: {key}
"""


# -- addresses ----------------------------------------------------------------------------


def test_default_scenario_address_plan():
    p = plan(scenario.load(ROOT / "scenarios" / "default.yaml"))
    assert [(n.name, n.index, n.ip, n.pod_cidr, n.gateway) for n in p.nodes] == [
        ("node-1", 1, "172.18.0.11", "10.244.1.0/24", "10.244.1.1"),
        ("node-2", 2, "172.18.0.12", "10.244.2.0/24", "10.244.2.1"),
        ("node-3", 3, "172.18.0.13", "10.244.3.0/24", "10.244.3.1"),
    ]
    assert (p.network.edge_fabric_ip, p.network.edge_external_ip) == ("172.18.0.1", "203.0.113.1")
    assert [(x.name, x.node, x.ip) for x in p.pods] == [
        ("web-0", "node-1", "10.244.1.2"),
        ("web-1", "node-2", "10.244.2.2"),
        ("web-2", "node-3", "10.244.3.2"),
        ("web-3", "node-1", "10.244.1.3"),
    ]
    (svc,) = p.services
    assert (svc.key, svc.cluster_ip, svc.external_policy) == (
        "default/web",
        "10.96.0.10",
        "Cluster",
    )
    (port,) = svc.ports
    assert (port.port, port.node_port, port.target_port) == (80, 30080, 8080)
    assert [(e.ip, e.port, e.node, e.pod) for e in port.endpoints] == [
        ("10.244.1.2", 8080, "node-1", "web-0"),
        ("10.244.2.2", 8080, "node-2", "web-1"),
        ("10.244.3.2", 8080, "node-3", "web-2"),
        ("10.244.1.3", 8080, "node-1", "web-3"),
    ]
    assert [(c.name, c.ip) for c in p.clients] == [("client", "203.0.113.10")]
    assert p.proxy.cluster_cidr == "10.244.0.0/16"
    assert p.probes[0].target == Target(
        service="default/web", port=80, via="nodePort", node="node-2"
    )


def test_clients_without_ip_take_the_next_free_external_address():
    p = build(lab(1, "  clients: [{name: a}, {name: b, ip: 203.0.113.10}, {name: c}]\n"))
    assert [(c.name, c.ip) for c in p.clients] == [
        ("a", "203.0.113.11"),
        ("b", "203.0.113.10"),
        ("c", "203.0.113.12"),
    ]


def test_cluster_ips_are_allocated_from_host_10_skipping_explicit_ones():
    p = build(
        lab(1),
        service("a", "  ports: [{port: 80}]\n"),
        service("b", "  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n"),
        service("c", "  ports: [{port: 80}]\n"),
        service("d", "  clusterIP: None\n  ports: [{port: 80}]\n"),
    )
    assert {s.name: s.cluster_ip for s in p.services} == {
        "a": "10.96.0.11",
        "b": "10.96.0.10",
        "c": "10.96.0.12",
        "d": None,
    }


def test_node_ports_and_health_check_ports_take_the_lowest_free_port():
    p = build(
        lab(1),
        service("a", "  type: NodePort\n  ports: [{name: x, port: 80}, {name: y, port: 81}]\n"),
        service("b", "  type: NodePort\n  ports: [{port: 80, nodePort: 30001}]\n"),
        service(
            "c", "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  ports: [{port: 80}]\n"
        ),
        service(
            "d",
            "  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  ports: [{port: 80}]\n",
        ),
        service("e", "  ports: [{port: 80}]\n"),
    )
    by_name = {s.name: s for s in p.services}
    assert [x.node_port for x in by_name["a"].ports] == [30000, 30002]
    assert by_name["b"].ports[0].node_port == 30001
    assert by_name["c"].ports[0].node_port == 30003
    assert by_name["c"].health_check_node_port == 30004
    assert by_name["d"].ports[0].node_port is None
    assert by_name["e"].ports[0].node_port is None
    assert by_name["a"].health_check_node_port is None


def test_load_balancer_addresses_come_from_status_spec_or_the_vip_pool():
    lb = "  type: LoadBalancer\n  ports: [{port: 80}]\n"
    p = build(
        lab(1),
        service("a", lb),
        service("b", lb) + "status: {loadBalancer: {ingress: [{ip: 198.51.100.10}]}}\n",
        service("c", lb + "  loadBalancerIP: 192.0.2.50\n"),
        service("d", lb),
    )
    assert {s.name: s.lb_ips for s in p.services} == {
        "a": ("198.51.100.11",),  # .10 is b's, set aside before allocating
        "b": ("198.51.100.10",),
        "c": ("192.0.2.50",),
        "d": ("198.51.100.12",),
    }


def test_node_objects_replace_planned_address_pod_cidr_and_add_labels():
    node = (
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-2, labels: {disk: ssd}}\n"
        "spec: {podCIDR: 10.244.100.0/24}\n"
        "status: {addresses: [{type: InternalIP, address: 172.18.0.50}]}\n"
    )
    p = build(lab(3), node, deployment("web", 2, pod_spec="      nodeSelector: {disk: ssd}\n"))
    n2 = p.node("node-2")
    assert (n2.ip, n2.pod_cidr, n2.gateway) == ("172.18.0.50", "10.244.100.0/24", "10.244.100.1")
    assert ("disk", "ssd") in n2.labels and ("kubernetes.io/hostname", "node-2") in n2.labels
    assert [(x.node, x.ip) for x in p.pods] == [
        ("node-2", "10.244.100.2"),
        ("node-2", "10.244.100.3"),
    ]


def test_pod_status_ip_is_honoured_and_set_aside():
    p = build(
        lab(3),
        pod("db", "  nodeName: node-2\n", status="{podIP: 10.244.2.2}"),
        pod("cache", status="{podIP: 10.244.3.9}"),
        deployment("web", 3),
    )
    pods = {x.name: x for x in p.pods}
    assert (pods["db"].node, pods["db"].ip) == ("node-2", "10.244.2.2")
    assert (pods["cache"].node, pods["cache"].ip) == ("node-3", "10.244.3.9")  # by its CIDR
    assert pods["web-1"].ip == "10.244.2.3"  # .2 is db's


def test_too_many_nodes_for_the_pod_cidr_is_an_error():
    with pytest.raises(ScenarioError) as err:
        build(lab(3, "  network: {podCIDR: 10.244.0.0/23}\n"))
    assert "t.yaml:6: spec.network.podCIDR: 10.244.0.0/23 has room for 1 nodes" in str(err.value)


# -- placement --------------------------------------------------------------------------


def test_spread_counts_owner_pods_first_then_all_pods_then_node_order():
    p = build(lab(3), pod("db", "  nodeName: node-1\n"), deployment("web", 3))
    assert placement(p) == {"db": "node-1", "web-0": "node-2", "web-1": "node-3", "web-2": "node-1"}


def test_node_name_pins_even_against_the_spread():
    p = build(lab(3), deployment("web", 3, pod_spec="      nodeName: node-3\n"))
    assert set(placement(p).values()) == {"node-3"}


def test_node_selector_uses_lab_node_labels_and_the_hostname_label():
    nodes = (
        "\n    - {name: a, labels: {disk: ssd}}\n    - {name: b}"
        "\n    - {name: c, labels: {disk: ssd}}"
    )
    p = build(lab(nodes), deployment("web", 4, pod_spec="      nodeSelector: {disk: ssd}\n"))
    assert placement(p) == {"web-0": "a", "web-1": "c", "web-2": "a", "web-3": "c"}
    p = build(
        lab(nodes),
        deployment("api", 2, pod_spec="      nodeSelector: {kubernetes.io/hostname: b}\n"),
    )
    assert set(placement(p).values()) == {"b"}


def test_required_anti_affinity_spreads_by_topology_domain():
    nodes = (
        "\n    - {name: a, labels: {zone: z1}}\n    - {name: b, labels: {zone: z1}}"
        "\n    - {name: c, labels: {zone: z2}}"
    )
    anti = ANTI.format(app="web", key="zone")
    p = build(lab(nodes), deployment("web", 2, pod_spec=anti))
    assert placement(p) == {"web-0": "a", "web-1": "c"}
    with pytest.raises(ScenarioError) as err:
        build(lab(nodes), deployment("web", 3, pod_spec=anti))
    message = str(err.value)
    assert message.startswith("t.yaml:")
    assert "spec.template.spec.affinity.podAntiAffinity: pod web-2 would stay Pending" in message


def test_required_anti_affinity_is_symmetric():
    # cache is placed first and refuses to share a node with app=web pods, so the web
    # replicas that come later keep off its node although they carry no affinity themselves
    keep_web_away = """\
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - {labelSelector: {matchLabels: {app: web}}, topologyKey: kubernetes.io/hostname}
"""
    cache = pod("cache", keep_web_away, labels="app: cache")
    p = build(lab(3), cache, deployment("web", 4))
    nodes = placement(p)
    assert nodes["cache"] == "node-1"
    assert {nodes[f"web-{i}"] for i in range(4)} == {"node-2", "node-3"}
    with pytest.raises(ScenarioError) as err:
        build(lab(1), cache, deployment("web", 1))
    assert "spec.template.spec: pod web-0 would stay Pending" in str(err.value)


def test_preferred_anti_affinity_is_soft_but_steers():
    preferred = """\
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 50
          podAffinityTerm:
            labelSelector: {matchLabels: {app: web}}
            topologyKey: kubernetes.io/hostname
"""
    base = [lab(3), pod("a", "  nodeName: node-2\n"), pod("b", "  nodeName: node-3\n")]
    base.append(deployment("web", 1))
    without = build(*base, pod("db", labels="app: db"))
    with_pref = build(*base, pod("db", preferred, labels="app: db"))
    assert placement(without)["web-0"] == placement(with_pref)["web-0"] == "node-1"
    assert placement(without)["db"] == "node-1"  # fewest pods, then node order
    assert placement(with_pref)["db"] == "node-2"  # away from web-0
    # soft: with nowhere else to go, the pod still runs
    crowded = build(lab(1), deployment("web", 1), pod("db", preferred, labels="app: db"))
    assert placement(crowded)["db"] == "node-1"


def test_unsatisfiable_node_selector_leaves_the_pod_pending():
    with pytest.raises(ScenarioError) as err:
        build(lab(2), pod("db", "  nodeSelector: {gpu: 'true'}\n"))
    assert "spec.nodeSelector: pod db would stay Pending" in str(err.value)


# -- endpoints ----------------------------------------------------------------------------


def test_named_target_port_resolves_per_pod():
    def named(name: str, port: int, port_name: str) -> str:
        return (
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\n"
            f"spec: {{containers: [{{name: c, ports: [{{containerPort: {port}, "
            f"name: {port_name}}}]}}]}}\n"
        )

    p = build(
        lab(1),
        named("old", 8080, "http"),
        named("new", 9090, "http"),
        named("other", 7070, "metrics"),
        service("web", "  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]\n"),
    )
    port = p.service("web").ports[0]
    assert port.target_port == "http"
    assert [(e.pod, e.port) for e in port.endpoints] == [("old", 8080), ("new", 9090)]


def test_endpoint_conditions_follow_the_pods():
    p = build(
        lab(1),
        pod("up", labels="app: web", status="{conditions: [{type: Ready, status: 'True'}]}"),
        pod("down", labels="app: web", status="{conditions: [{type: Ready, status: 'False'}]}"),
        pod("done", labels="app: web", status="{phase: Succeeded}"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: going, labels: {app: web},"
        " deletionTimestamp: '2024-01-01T00:00:00Z'}\nspec: {containers: [{name: c}]}\n",
        service("web", "  selector: {app: web}\n  ports: [{port: 80}]\n"),
        service(
            "all",
            "  selector: {app: web}\n  publishNotReadyAddresses: true\n  ports: [{port: 80}]\n",
        ),
    )
    web = p.service("web").ports[0].endpoints
    assert [(e.pod, e.ready, e.serving, e.terminating) for e in web] == [
        ("up", True, True, False),
        ("down", False, False, False),
        ("going", False, True, True),
    ]
    assert [e.ready for e in p.service("all").ports[0].endpoints] == [True, True, True]


def test_endpoint_slices_replay_endpoints_and_make_pods_for_unknown_addresses():
    slice_ = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 8443, protocol: TCP}]
endpoints:
  - addresses: [10.244.2.20]
    nodeName: node-2
    targetRef: {kind: Pod, name: api-abc, namespace: default}
  - addresses: [10.244.3.30]
    nodeName: node-3
    conditions: {ready: false, serving: true, terminating: true}
  - addresses: [10.244.1.5]
"""
    p = build(
        lab(3),
        pod("known", "  nodeName: node-1\n", status="{podIP: 10.244.1.5}"),
        service("api", "  ports: [{name: http, port: 443}]\n"),
        slice_,
    )
    pods = {x.name: x for x in p.pods}
    assert (pods["api-abc"].node, pods["api-abc"].ip) == ("node-2", "10.244.2.20")
    assert (pods["api-ep-0"].node, pods["api-ep-0"].ip) == ("node-3", "10.244.3.30")
    assert [cp.port for cp in pods["api-abc"].ports] == [8443]  # its echo server's port
    assert "api-ep-1" not in pods  # 10.244.1.5 is the Pod "known"
    assert p.service("api").ports[0].endpoints == (
        Endpoint("10.244.2.20", 8443, "node-2", "api-abc"),
        Endpoint("10.244.3.30", 8443, "node-3", "api-ep-0", False, True, True),
        Endpoint("10.244.1.5", 8443, "node-1", "known"),
    )


def test_kubectl_dump_replay_plans_the_cluster_addresses():
    p = plan(scenario.load(ROOT / "tests" / "data" / "kubectl-dump.yaml"))
    assert [(n.name, n.ip, n.pod_cidr) for n in p.nodes] == [
        ("kind-worker", "172.18.0.2", "10.244.1.0/24"),
        ("kind-worker2", "172.18.0.3", "10.244.2.0/24"),
    ]
    svc = p.service("web")
    assert (svc.cluster_ip, svc.lb_ips, svc.health_check_node_port) == (
        "10.96.45.12",
        ("198.51.100.20",),
        31234,
    )
    assert svc.external_local
    assert [(e.ip, e.port, e.node, e.ready) for e in svc.ports[0].endpoints] == [
        ("10.244.1.5", 8080, "kind-worker", True),
        ("10.244.2.7", 8080, "kind-worker2", False),
    ]


def test_single_mode_load_balancer_defaults_to_the_first_node():
    p = build(lab(2, "  loadBalancer: {mode: single}\n"))
    assert (p.load_balancer.mode, p.load_balancer.node) == ("single", "node-1")


# -- the whole plan ---------------------------------------------------------------------------


def test_describe_shows_what_will_exist():
    text = describe(plan(scenario.load(ROOT / "scenarios" / "default.yaml")))
    for fact in (
        "node-1  172.18.0.11",
        "10.244.1.0/24",
        "web-3  node-1  10.244.1.3",
        "default/web  NodePort  ClusterIP 10.96.0.10",
        "nodePort 30080",
        "10.244.2.2:8080  web-1 on node-2",
        "client           203.0.113.10",
        "client-via-node-2: client -> default/web port 80 via nodePort of node-2, TCP x40",
    ):
        assert fact in text, fact


def test_hundred_nodes_and_thousand_pods_plan_well_under_a_second():
    docs = [lab(100)]
    for i in range(10):
        docs.append(deployment(f"app{i}", 100))
        docs.append(
            service(
                f"svc{i}",
                f"  type: NodePort\n  selector: {{app: app{i}}}\n  ports: [{{port: 80}}]\n",
            )
        )
    loaded = scenario.loads("---\n".join(docs), "big.yaml")
    started = time.perf_counter()
    p = plan(loaded)
    elapsed = time.perf_counter() - started
    assert len(p.pods) == 1000 and len(p.nodes) == 100
    assert all(sum(1 for x in p.pods if x.node == n.name) == 10 for n in p.nodes)
    assert sum(len(s.ports[0].endpoints) for s in p.services) == 1000
    assert elapsed < 30, f"planning took {elapsed:.3f}s"  # speed: scripts/bench; here a hang
