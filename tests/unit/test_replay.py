"""Replaying what `kubectl get -o yaml` prints: real dumps load, place pods where the cluster
had them, skip what kube-proxy never reads (saying so) and refuse what the lab cannot be.

The corpus is tests/data/replay: a Deployment with its ReplicaSet's pods, the Kubernetes
"Using Source IP" tutorial on kind, a `get all,cm,ing,sa,ns` dump of a GKE namespace and a
Helm-installed ingress-nginx controller, each written as kubectl prints it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from testbed.core import describe, scenario, topology
from testbed.core import plan as planner
from testbed.core.load import replan
from testbed.core.scenario import ScenarioError
from testbed.live import changes

ROOT = Path(__file__).resolve().parents[2]
REPLAY = ROOT / "tests" / "data" / "replay"

LAB = """\
apiVersion: testbed/v1alpha1
kind: Lab
metadata: {name: t}
spec:
  nodes: 3
  clients: [{name: client, ip: 203.0.113.10}]
"""


def load_text(*docs: str) -> scenario.Scenario:
    return scenario.loads("---\n".join(docs), "t.yaml")


def placement(planned) -> dict[str, str]:
    return {p.name: p.node for p in planned.pods}


def owned_pod(name: str, owner_kind: str, owner: str, node: str, ip: str, **labels: str) -> str:
    label_text = ", ".join(f"{k}: {v}" for k, v in {"app": "web", **labels}.items())
    return f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{{label_text}}}
  ownerReferences: [{{apiVersion: apps/v1, kind: {owner_kind}, name: {owner}, controller: true}}]
spec: {{nodeName: {node}, containers: [{{name: web, ports: [{{containerPort: 8080}}]}}]}}
status: {{podIP: {ip}}}
"""


def workload(kind: str, replicas: int | None = 2, extra_spec: str = "") -> str:
    count = f"  replicas: {replicas}\n" if replicas is not None else ""
    return f"""\
apiVersion: apps/v1
kind: {kind}
metadata: {{name: web}}
spec:
{count}  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, ports: [{{containerPort: 8080}}]}}]
{extra_spec}"""


SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: NodePort, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
"""

# -- a Deployment and its pods are one set of pods ---------------------------------------


def test_a_deployment_dumped_with_its_replicaset_pods_plans_exactly_those_pods():
    s = scenario.load(REPLAY / "deployment-with-pods.yaml")
    planned = planner.plan(s)
    assert placement(planned) == {
        "web-5d8f7c9b4-x7k2p": "node-1",
        "web-5d8f7c9b4-q9z4m": "node-1",
    }
    (web,) = s.deployments
    assert web.owned == ("web-5d8f7c9b4-x7k2p", "web-5d8f7c9b4-q9z4m")
    assert web.made() == []
    # replicas 2, two pods: nothing to say but that the ReplicaSet is not read
    assert [w.split(": ", 1)[1] for w in s.warnings] == [
        "skipped 1 object kube-proxy does not read: ReplicaSet x1"
    ]
    # the outage the dump shows survives: Local through node-2 has no local endpoint
    endpoints = planned.service("web").ports[0].endpoints
    assert {e.node for e in endpoints} == {"node-1"}


def test_the_owner_is_found_from_the_pod_template_hash_without_the_replicaset():
    s = load_text(
        LAB,
        workload("Deployment"),
        owned_pod(
            "web-abc12-x",
            "ReplicaSet",
            "web-abc12",
            "node-2",
            "10.244.2.5",
            **{"pod-template-hash": "abc12"},
        ),
        owned_pod(
            "web-abc12-y",
            "ReplicaSet",
            "web-abc12",
            "node-2",
            "10.244.2.6",
            **{"pod-template-hash": "abc12"},
        ),
    )
    assert placement(planner.plan(s)) == {"web-abc12-x": "node-2", "web-abc12-y": "node-2"}


def test_a_pod_of_a_replicaset_whose_deployment_is_elsewhere_is_a_pod_like_any_other():
    s = load_text(
        LAB,
        owned_pod(
            "db-abc12-x",
            "ReplicaSet",
            "db-abc12",
            "node-3",
            "10.244.3.5",
            **{"pod-template-hash": "abc12"},
        ),
    )
    assert s.pods[0].owner is None
    assert placement(planner.plan(s)) == {"db-abc12-x": "node-3"}


def test_fewer_pods_than_replicas_follow_the_dump_and_say_so():
    s = load_text(
        LAB,
        workload("Deployment", replicas=3),
        owned_pod(
            "web-abc12-x",
            "ReplicaSet",
            "web-abc12",
            "node-1",
            "10.244.1.5",
            **{"pod-template-hash": "abc12"},
        ),
    )
    assert placement(planner.plan(s)) == {"web-abc12-x": "node-1"}
    assert s.warnings == (
        "t.yaml:12: spec.replicas: Deployment default/web asks for 3 pods but the file holds "
        "1: the lab runs the file's, where the cluster had them",
    )


def test_scaling_a_replayed_deployment_adds_and_removes_pods_around_the_dumped_ones():
    s = load_text(
        LAB,
        workload("Deployment"),
        owned_pod(
            "web-abc12-x",
            "ReplicaSet",
            "web-abc12",
            "node-1",
            "10.244.1.5",
            **{"pod-template-hash": "abc12"},
        ),
        owned_pod(
            "web-abc12-y",
            "ReplicaSet",
            "web-abc12",
            "node-1",
            "10.244.1.6",
            **{"pod-template-hash": "abc12"},
        ),
    )
    first = replan(s, None)
    up = replan(changes.scale(s, "web", 3), first)
    assert placement(up) == {"web-abc12-x": "node-1", "web-abc12-y": "node-1", "web-0": "node-2"}
    down = replan(changes.scale(s, "web", 1), first)
    assert placement(down) == {"web-abc12-x": "node-1"}


# -- StatefulSet and DaemonSet ------------------------------------------------------------


def test_a_statefulset_names_its_pods_by_ordinal_and_keeps_the_dumped_ones():
    s = load_text(
        LAB,
        workload("StatefulSet", replicas=3, extra_spec="  serviceName: web\n"),
        owned_pod("web-0", "StatefulSet", "web", "node-3", "10.244.3.9"),
    )
    planned = planner.plan(s)
    assert s.warnings[0].startswith("t.yaml:12: spec.replicas: StatefulSet default/web asks for")
    assert placement(planned) == {"web-0": "node-3"}
    fresh = planner.plan(load_text(LAB, workload("StatefulSet", 3, "  ordinals: {start: 1}\n")))
    assert sorted(placement(fresh)) == ["web-1", "web-2", "web-3"]


NODES = """\
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {node-role.kubernetes.io/control-plane: ""}}
spec:
  taints: [{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}]
---
apiVersion: v1
kind: Node
metadata: {name: node-3, labels: {disk: ssd}}
spec: {unschedulable: true}
"""


def test_a_daemonset_runs_one_pod_per_node_that_fits_and_tolerates():
    plain = planner.plan(load_text(LAB, NODES, workload("DaemonSet", None), SERVICE))
    # the control-plane taint keeps it off node-1; the cordoned node-3 still runs it, as
    # the DaemonSet controller tolerates node.kubernetes.io/unschedulable by itself
    assert placement(plain) == {"web-node-2": "node-2", "web-node-3": "node-3"}
    tolerant = workload(
        "DaemonSet",
        None,
        "      tolerations: [{operator: Exists}]\n",
    )
    assert placement(planner.plan(load_text(LAB, NODES, tolerant, SERVICE))) == {
        "web-node-1": "node-1",
        "web-node-2": "node-2",
        "web-node-3": "node-3",
    }
    picky = workload(
        "DaemonSet",
        None,
        "      nodeSelector: {disk: ssd}\n      tolerations: [{operator: Exists}]\n",
    )
    assert placement(planner.plan(load_text(LAB, NODES, picky, SERVICE))) == {
        "web-node-3": "node-3"
    }


def test_a_deployment_keeps_off_tainted_and_cordoned_nodes():
    planned = planner.plan(load_text(LAB, NODES, workload("Deployment", 4), SERVICE))
    assert set(placement(planned).values()) == {"node-2"}


def test_daemonset_pods_on_real_node_names_are_named_after_the_first_label():
    lab = LAB.replace(
        "nodes: 3", "nodes: [{name: ip-10-0-1-23.ec2.internal}, {name: ip-10-0-2-7.ec2.internal}]"
    )
    planned = planner.plan(load_text(lab, workload("DaemonSet", None), SERVICE))
    assert placement(planned) == {
        "web-ip-10-0-1-23": "ip-10-0-1-23.ec2.internal",
        "web-ip-10-0-2-7": "ip-10-0-2-7.ec2.internal",
    }


# -- well-known labels and node names -------------------------------------------------------


def test_lab_nodes_carry_the_well_known_labels_so_helm_node_selectors_schedule():
    lab = LAB.replace("nodes: 3", "nodes: [{name: a, zone: zone-a}, {name: b}]")
    planned = planner.plan(load_text(lab))
    labels = dict(planned.node("a").labels)
    assert labels["kubernetes.io/hostname"] == "a"
    assert labels["kubernetes.io/os"] == "linux"
    assert labels["kubernetes.io/arch"] == scenario.NODE_ARCH
    assert labels["topology.kubernetes.io/zone"] == "zone-a"
    assert "topology.kubernetes.io/zone" not in dict(planned.node("b").labels)
    helm = workload("Deployment", 2, "      nodeSelector: {kubernetes.io/os: linux}\n")
    assert sorted(placement(planner.plan(load_text(LAB, helm))).values()) == ["node-1", "node-2"]


def test_a_node_selector_nobody_has_names_the_missing_label():
    windows = workload("Deployment", 1, "      nodeSelector: {kubernetes.io/os: windows}\n")
    with pytest.raises(ScenarioError) as err:
        planner.plan(load_text(LAB, windows))
    assert "(kubernetes.io/os=windows); lab nodes carry kubernetes.io/hostname" in str(err.value)


def test_real_node_names_keep_their_names_and_get_short_interfaces():
    gke = "gke-demo-default-pool-5f3a2b1c-9x7q"
    fqdn = "ip-10-0-1-23.ec2.internal." + "x" * 60
    lab = LAB.replace("nodes: 3", f"nodes: [{{name: {gke}}}, {{name: {fqdn}}}, {{name: lo}}]")
    planned = planner.plan(load_text(lab))
    assert [n.name for n in planned.nodes] == [gke, fqdn, "lo"]
    wiring = topology.wire(planned, "t-1")
    edge_links = [v.name for v in wiring.veths if v.ns == topology.EDGE]
    assert all(len(name) <= topology.IFNAME_MAX for name in edge_links)
    assert len(set(edge_links)) == len(edge_links)
    assert not set(edge_links) & topology.LAB_IFNAMES  # a node called lo is no collision
    assert gke in wiring.namespaces  # the namespace keeps the name the user knows
    full = wiring.ns(fqdn)
    assert len(full) < 100 and full == topology.ns_name("t-1", fqdn)


def test_pods_named_like_the_labs_own_interfaces_get_other_veth_names():
    pods = "\n---\n".join(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n"
        f"spec: {{nodeName: node-1, containers: [{{name: c}}]}}"
        for name in ("eth0", "lo", "br-fabric")
    )
    planned = planner.plan(load_text(LAB, pods))
    wiring = topology.wire(planned, "t-1")
    node_links = [v.name for v in wiring.veths if v.ns == "node-1"]
    assert len(node_links) == 3 and not set(node_links) & topology.LAB_IFNAMES


# -- skipped kinds and Endpoints ------------------------------------------------------------


def test_a_get_all_dump_loads_with_one_line_for_the_skipped_kinds():
    s = scenario.load(REPLAY / "get-all.yaml")
    skipped = [w for w in s.warnings if "kube-proxy does not read" in w]
    assert skipped == [
        f"{REPLAY / 'get-all.yaml'}:216: skipped 9 objects kube-proxy does not read: "
        "ConfigMap x2, HorizontalPodAutoscaler x1, Ingress x1, Namespace x1, ReplicaSet x2, "
        "ServiceAccount x2"
    ]
    planned = planner.plan(s)
    assert placement(planned) == {
        "web-6b7f9d4c8-4hq2n": "gke-demo-default-pool-5f3a2b1c-9x7q",
        "web-6b7f9d4c8-tx8vw": "gke-demo-default-pool-5f3a2b1c-k2mz",
    }
    zones = {n.name: dict(n.labels)["topology.kubernetes.io/zone"] for n in planned.nodes}
    assert set(zones.values()) == {"europe-west1-b", "europe-west1-c"}
    # the API server's own Service has endpoints in the cluster, none here: said, not hidden
    assert any("Service default/kubernetes has no selector" in w for w in s.warnings)


def test_the_source_ip_tutorial_replays_on_its_kind_nodes():
    s = scenario.load(REPLAY / "source-ip-tutorial.yaml")
    planned = planner.plan(s)
    assert placement(planned) == {
        "source-ip-app-7f9c6b8d5-w2xqh": "kind-worker",
        "busybox": "kind-worker2",
    }
    lb = planned.service("loadbalancer")
    assert lb.external_policy == "Local" and lb.health_check_node_port == 32122
    assert [e.pod for e in lb.ports[0].endpoints] == ["source-ip-app-7f9c6b8d5-w2xqh"]
    assert s.warnings == (
        f"{REPLAY / 'source-ip-tutorial.yaml'}:172: skipped 1 object kube-proxy does not "
        "read: ReplicaSet x1",
        # said, not hidden: the edge does not leave the control plane out as a cloud LB would
        f"{REPLAY / 'source-ip-tutorial.yaml'}:38: items[0]: node kind-control-plane is "
        "labelled exclude-from-external-load-balancers: cloud load balancers skip it, the lab's "
        "edge does not",
    )


def test_an_ingress_nginx_chart_schedules_its_controller_with_the_helm_node_selector():
    s = scenario.load(REPLAY / "ingress-nginx.yaml")
    planned = planner.plan(s)
    assert placement(planned) == {"ingress-nginx-controller-0": "node-1"}
    ports = {
        p.name: p.endpoints[0].port
        for p in planned.service("ingress-nginx/ingress-nginx-controller").ports
    }
    assert ports == {"http": 80, "https": 443}
    admission = planned.service("ingress-nginx/ingress-nginx-controller-admission")
    assert admission.ports[0].endpoints[0].port == 8443
    assert Counter(w.split(": ", 1)[1].split(":")[0] for w in s.warnings) == Counter(
        {
            "skipped 4 objects kube-proxy does not read": 1,
            # its preStop hook, /wait-shutdown, is one the lab's pods cannot run
            "items[5].spec.template.spec.containers[0].lifecycle.preStop.exec.command": 1,
        }
    )


ENDPOINTS = """\
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 10.244.1.9}], ports: [{port: 8080}]}]
"""


def test_endpoints_are_skipped_where_a_selector_or_slices_already_say_it():
    s = load_text(LAB, SERVICE, workload("Deployment"), ENDPOINTS)
    assert s.warnings == ("t.yaml:24: skipped 1 object kube-proxy does not read: Endpoints x1",)


# -- every problem, once ------------------------------------------------------------------


def test_a_file_with_several_errors_lists_them_all_in_order():
    bad = load_text
    with pytest.raises(ScenarioError) as err:
        bad(
            LAB,
            SERVICE.replace("port: 80,", "port: 0,"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: other}\n"
            "spec: {type: Nodeport, ports: [{port: 80}]}\n",
            workload("Deployment", replicas=-1),
        )
    lines = err.value.lines()
    assert lines == [
        "t.yaml:11: spec.ports[0].port: 0 is outside the port range 1-65535",
        "t.yaml:16: spec.type: 'Nodeport' is not one of ClusterIP | NodePort | LoadBalancer",
        "t.yaml:22: spec.replicas: -1 replicas: must be 0-10000",
    ]
    assert str(err.value) == lines[0]  # one error is still one line


def test_an_error_is_not_repeated_by_what_refers_to_the_broken_object():
    probe = LAB.replace(
        "  clients:",
        "  probes: [{name: p, from: client, to: {service: web, via: nodePort}, "
        "expect: {pods: [web-0]}}]\n  clients:",
    )
    with pytest.raises(ScenarioError) as err:
        load_text(probe, SERVICE.replace("NodePort", "NodePorts"), workload("Deployment", -1))
    assert [line.split(": ", 1)[1] for line in err.value.lines()] == [
        "spec.type: 'NodePorts' is not one of ClusterIP | NodePort | LoadBalancer",
        "spec.replicas: -1 replicas: must be 0-10000",
    ]


def test_many_errors_are_capped_and_counted():
    services = [
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{ports: [{{port: 0}}]}}\n"
        for i in range(scenario.MAX_PROBLEMS + 5)
    ]
    with pytest.raises(ScenarioError) as err:
        load_text(LAB, *services)
    lines = err.value.lines()
    assert len(lines) == scenario.MAX_PROBLEMS + 1
    assert lines[-1] == "t.yaml: 5 more problems not shown"


# -- reading only regular files, printing text safely --------------------------------------


def _load_in_thread(path: str) -> list[BaseException]:
    """Load in a thread so a reader that blocks fails the test instead of hanging it."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            scenario.load(path)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            caught.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=3)
    assert not thread.is_alive(), f"loading {path} blocked"
    return caught


def test_a_fifo_is_refused_at_once(tmp_path: Path):
    fifo = tmp_path / "f.yaml"
    os.mkfifo(fifo)
    (error,) = _load_in_thread(str(fifo))
    assert str(error) == (
        f"{fifo}:1: file is a FIFO (named pipe), not a regular file; refusing to load"
    )


@pytest.mark.parametrize("path", ["/proc/kmsg", "/dev/null", "/sys/kernel/notes"])
def test_devices_and_kernel_files_are_refused_at_once(path: str):
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist here")
    (error,) = _load_in_thread(path)
    assert isinstance(error, ScenarioError)
    assert str(error).startswith(f"{path}:1: ") and "refusing to load" in str(error)


def test_a_description_cannot_send_escape_sequences_to_the_terminal():
    lab = LAB.replace("metadata: {name: t}", 'metadata: {name: t, description: "x\\e[2Jy\\a"}')
    shown = describe.describe(planner.plan(load_text(lab)))
    assert "\x1b" not in shown and "\x07" not in shown
    assert "x\\x1b[2Jy\\x07" in shown


# -- the command line shows warnings --------------------------------------------------------


def test_plan_prints_warnings_on_stderr_and_the_plan_on_stdout():
    done = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "plan", str(REPLAY / "get-all.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    warnings = done.stderr.splitlines()
    assert len(warnings) == 2 and all(w.startswith("warning: ") for w in warnings)
    assert "skipped 9 objects" in warnings[0]
    assert "Pods (2)" in done.stdout and "warning" not in done.stdout


def test_several_errors_print_one_line_each_and_exit_2(tmp_path: Path):
    path = tmp_path / "two.yaml"
    path.write_text(
        "---\n".join([LAB, SERVICE.replace("port: 80,", "port: 0,"), workload("Deployment", -1)])
    )
    done = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "plan", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"testbed: {path}:") for line in lines)


KUBE_PROXY_DS = """\
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: kube-proxy, namespace: kube-system}
spec:
  selector: {matchLabels: {k8s-app: kube-proxy}}
  template:
    metadata: {labels: {k8s-app: kube-proxy}}
    spec:
      hostNetwork: true
      containers: [{name: kube-proxy, image: registry.k8s.io/kube-proxy:v1.32.2}]
"""


def test_host_network_daemonsets_no_service_selects_are_skipped_and_said():
    s = load_text(LAB, KUBE_PROXY_DS, SERVICE, workload("Deployment"))
    assert [d.name for d in s.deployments] == ["web"]
    assert s.warnings == (
        "t.yaml:8: skipped 1 hostNetwork object no Service selects: "
        "DaemonSet kube-system/kube-proxy",
    )
    selected = SERVICE.replace("{name: web}", "{name: kp, namespace: kube-system}").replace(
        "app: web", "k8s-app: kube-proxy"
    )
    with pytest.raises(ScenarioError) as err:
        load_text(LAB, KUBE_PROXY_DS, selected)
    assert "spec.template.spec.hostNetwork: hostNetwork pods are not modelled" in str(err.value)
