"""Scenario loading and validation: the format contract, kubectl dumps, and bad input."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.core import describe, scenario, yamlsrc
from testbed.core import plan as planner
from testbed.core.model import Expectation, Target
from testbed.core.scenario import ScenarioError

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
BAD = ROOT / "tests" / "bad"
BAD_FILES = sorted(BAD.glob("*.yaml"))

LAB = """\
apiVersion: testbed/v1alpha1
kind: Lab
metadata: {name: t}
spec:
  nodes: 3
  clients: [{name: client}]
"""


def load_text(*docs: str) -> scenario.Scenario:
    return scenario.loads("---\n".join(docs), "t.yaml")


# -- the format contract --------------------------------------------------------------


def test_format_example_loads_with_every_field_meaning_what_the_contract_says():
    s = scenario.load(DATA / "format-example.yaml")
    lab = s.lab
    assert (lab.name, lab.proxy_mode) == ("etp-local", "iptables")
    assert lab.description == "one line: the story this scenario tells"
    assert [n.name for n in lab.nodes] == ["node-1", "node-2", "node-3"]
    assert lab.network == scenario.NetworkSpec(
        "172.18.0.0/24", "10.244.0.0/16", "10.96.0.0/16", "203.0.113.0/24", "198.51.100.0/24"
    )
    assert [(c.name, c.ip) for c in lab.clients] == [("client", "203.0.113.10")]
    lb = lab.load_balancer
    assert (lb.mode, lb.node, lb.health_checks) == ("ecmp", "node-1", True)
    assert lab.kube_proxy == scenario.KubeProxySpec(False, "ClusterCIDR", True, ())
    (probe,) = lab.probes
    assert probe.name == "external-via-node-2"
    assert probe.source == "client"
    assert probe.target == Target(service="default/web", port=80, via="nodePort", node="node-2")
    assert (probe.protocol, probe.count) == ("TCP", 50)
    assert probe.expect == Expectation(
        outcome="delivered",
        source_ip="client",
        pods=("web-0", "web-1"),
        return_path="correct",
        share=(("web-0", 0.5), ("web-1", 0.5)),
    )
    (svc,) = s.services
    assert (svc.key, svc.type, svc.external_policy, svc.internal_policy) == (
        "default/web",
        "NodePort",
        "Local",
        "Cluster",
    )
    assert svc.selector == (("app", "web"),)
    (port,) = svc.ports
    assert (port.name, port.port, port.target_port, port.node_port, port.protocol) == (
        "http",
        80,
        8080,
        30080,
        "TCP",
    )
    (dep,) = s.deployments
    assert (dep.name, dep.replicas, dep.pod_names()) == ("web", 2, ["web-0", "web-1"])
    assert [p.port for p in dep.template.ports] == [8080]
    (pod,) = s.pods
    assert (pod.name, pod.template.node_name, pod.template.labels) == (
        "db-0",
        "node-2",
        (("app", "db"),),
    )
    assert s.warnings == ()


def test_default_scenario_is_packaged_identically_and_loads():
    repo = ROOT / "scenarios" / "default.yaml"
    packaged = ROOT / "testbed" / "scenarios" / "default.yaml"
    assert repo.read_bytes() == packaged.read_bytes()
    s = scenario.load(repo)
    assert [p.name for p in s.lab.probes] == ["client-via-node-2", "pod-to-cluster-ip"]
    assert all(p.expect is None for p in s.lab.probes)
    assert s.services[0].ports[0].node_port == 30080


def test_lab_options_are_read():
    s = load_text(
        LAB.replace("  nodes: 3\n", "  proxyMode: nftables\n  nodes: [{name: a}, {name: b}]\n")
        + """\
  network: {nodeCIDR: 10.0.0.0/24, podCIDR: 10.200.0.0/16, serviceCIDR: 10.100.0.0/16,
            externalCIDR: 192.0.2.0/24}
  loadBalancer:
    vipCIDR: 198.18.0.0/24
    mode: single
    healthChecks: false
    healthCheck: {intervalSeconds: 0.2, timeoutSeconds: 0.1, healthyThreshold: 1,
                  unhealthyThreshold: 3}
  kubeProxy:
    masqueradeAll: true
    detectLocalMode: NodeCIDR
    localhostNodePorts: false
    whatIf: [no-snat]
"""
    )
    lab = s.lab
    assert lab.proxy_mode == "nftables"
    assert [n.name for n in lab.nodes] == ["a", "b"]
    assert lab.network.external_cidr == "192.0.2.0/24"
    assert lab.network.vip_cidr == "198.18.0.0/24"
    assert (lab.load_balancer.mode, lab.load_balancer.health_checks) == ("single", False)
    assert lab.load_balancer.health.interval == 0.2
    assert lab.load_balancer.health.unhealthy_threshold == 3
    assert lab.kube_proxy == scenario.KubeProxySpec(True, "NodeCIDR", False, ("no-snat",))


def test_service_fields_as_kubernetes_defaults_them():
    s = load_text(
        LAB,
        """\
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: kube-system}
spec:
  sessionAffinity: ClientIP
  ports:
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP}
""",
        """\
apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: 32000
  loadBalancerSourceRanges: [203.0.113.0/25]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  externalIPs: [192.168.99.10]
  ports:
    - {name: a, port: 80, nodePort: 30001, protocol: TCP}
    - {name: b, port: 80, nodePort: 30001, protocol: UDP}
""",
        """\
apiVersion: v1
kind: Service
metadata: {name: headless}
spec: {clusterIP: None, selector: {app: x}, ports: [{port: 80}]}
""",
    )
    dns = s.service("kube-system/dns")
    assert dns.affinity_timeout == scenario.DEFAULT_AFFINITY_TIMEOUT == 10800
    assert [p.target_port for p in dns.ports] == [53, 53]
    lb = s.service("lb")
    assert (lb.health_check_node_port, lb.affinity_timeout) == (32000, 60)
    assert lb.source_ranges == ("203.0.113.0/25",)
    assert lb.external_ips == ("192.168.99.10",)
    assert [p.node_port for p in lb.ports] == [30001, 30001]  # one nodePort, TCP and UDP
    assert s.service("headless").headless
    # a selector that matches no pod is no error, but it is worth a warning; so is a
    # service without a selector whose EndpointSlices the file does not hold
    no_slices = "has no selector and no EndpointSlice in the file: it has no endpoints"
    assert s.warnings == (
        f"t.yaml:8: Service kube-system/dns {no_slices}",
        f"t.yaml:17: Service default/lb {no_slices}",
        "t.yaml:35: spec.selector: Service default/headless selects no pod, so it has no endpoints",
    )


def test_kubectl_dump_metadata_and_status_are_accepted():
    s = scenario.load(DATA / "kubectl-dump.yaml")
    svc = s.service("web")
    assert (svc.cluster_ip, svc.health_check_node_port, svc.lb_ingress) == (
        "10.96.45.12",
        31234,
        ("198.51.100.20",),
    )
    assert svc.ports[0].target_port == "http"
    pods = {p.name: p for p in s.pods}
    assert pods["web-7c9d8f6b5d-abcde"].ip == "10.244.1.5"
    assert not pods["web-7c9d8f6b5d-fghij"].ready
    assert {n.name: n.ip for n in s.node_objects} == {
        "kind-worker": "172.18.0.2",
        "kind-worker2": "172.18.0.3",
    }
    (sl,) = s.endpoint_slices
    assert [(e.pod, e.ready) for e in sl.endpoints] == [
        ("web-7c9d8f6b5d-abcde", True),
        ("web-7c9d8f6b5d-fghij", False),
    ]


def test_deployment_dump_with_status_and_strategy_is_accepted():
    s = load_text(
        LAB,
        """\
apiVersion: apps/v1
kind: Deployment
metadata:
  annotations: {deployment.kubernetes.io/revision: "1"}
  generation: 1
  labels: {app: web}
  name: web
  namespace: default
  resourceVersion: "999"
  uid: 5a1c6f0e-0000-4000-8000-000000000000
spec:
  progressDeadlineSeconds: 600
  replicas: 3
  revisionHistoryLimit: 10
  selector: {matchLabels: {app: web}}
  strategy:
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 25%}
    type: RollingUpdate
  template:
    metadata:
      creationTimestamp: null
      labels: {app: web}
    spec:
      containers:
      - image: nginx
        imagePullPolicy: Always
        name: nginx
        ports: [{containerPort: 80, protocol: TCP}]
        resources: {}
        terminationMessagePath: /dev/termination-log
        terminationMessagePolicy: File
      dnsPolicy: ClusterFirst
      restartPolicy: Always
      schedulerName: default-scheduler
      securityContext: {}
      terminationGracePeriodSeconds: 30
status:
  availableReplicas: 3
  conditions: [{type: Available, status: "True"}]
  observedGeneration: 1
  readyReplicas: 3
  replicas: 3
""",
    )
    assert s.deployments[0].pod_names() == ["web-0", "web-1", "web-2"]


def test_anchors_and_merge_keys_are_plain_yaml_conveniences():
    s = load_text(
        LAB
        + """\
  probes:
    - &base {name: a, from: client, to: {service: web, via: nodePort}, count: 5}
    - <<: *base
      name: b
      count: 7
""",
        """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: NodePort, selector: {app: web}, ports: [{port: 80}]}
""",
    )
    assert [(p.name, p.count, p.target.via) for p in s.lab.probes] == [
        ("a", 5, "nodePort"),
        ("b", 7, "nodePort"),
    ]


def test_probe_targets_are_normalised():
    s = load_text(
        LAB
        + """\
  probes:
    - {name: a, from: client, to: {service: web}}
    - {name: b, from: client, to: {service: default/web, port: dns, via: nodePort}}
    - {name: c, from: node-3, to: {address: 127.0.0.1, port: 30080}, protocol: UDP}
""",
        """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: NodePort, selector: {app: web}, ports: [{name: dns, port: 53, protocol: UDP}]}
""",
    )
    a, b, c = s.lab.probes
    assert a.target == Target(service="default/web", port=53, via="clusterIP")
    assert a.protocol == "UDP"  # the only port's protocol
    assert b.target == Target(service="default/web", port="dns", via="nodePort", node="node-1")
    assert c.target == Target(address="127.0.0.1", port=30080)
    assert c.protocol == "UDP"


def test_load_dict_reads_python_documents_and_names_the_document_in_errors():
    lab = yaml.safe_load(LAB)
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80, "nodePort": 30080}]},
    }
    with pytest.raises(ScenarioError) as err:
        scenario.load_dict([lab, svc])
    assert str(err.value) == (
        "<inline>:2: spec.ports[0].nodePort: may not be used when `type` is 'ClusterIP'"
    )
    del svc["spec"]["ports"][0]["nodePort"]
    assert scenario.load_dict([lab, svc]).services[0].name == "web"


def test_yaml_values_remember_their_lines():
    (doc,) = yamlsrc.parse("a: 1\nb:\n  - x\n  - {c: 2}\n", "f.yaml")
    assert doc == {"a": 1, "b": ["x", {"c": 2}]}
    assert (doc.line_of("a"), doc.line_of("b")) == (1, 2)
    assert doc["b"].item_lines == [3, 4]
    assert doc["b"][1].line_of("c") == 4


def test_unknown_fields_are_named_with_a_hint():
    with pytest.raises(ScenarioError) as err:
        load_text(
            LAB,
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
            "spec:\n  ports: [{port: 80}]\n  externalTraficPolicy: Local\n",
        )
    assert str(err.value) == (
        "t.yaml:13: spec.externalTraficPolicy: unknown field; did you mean externalTrafficPolicy?"
    )


# -- bad input ---------------------------------------------------------------------------


def test_bad_corpus_is_big_enough():
    assert len(BAD_FILES) >= 40


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_file_gives_one_line_error_with_place(path: Path):
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), "each bad file says what it expects"
    expected = first.removeprefix("# expect: ")
    with pytest.raises(ScenarioError) as err:
        planner.plan(scenario.load(str(path)))
    message = str(err.value)
    assert "\n" not in message and "\r" not in message
    assert re.match(re.escape(str(path)) + r":\d+: ", message), message
    assert expected in message


def test_oversized_file_is_refused_before_reading(tmp_path: Path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(4 * 1024 * 1024 + 1)  # sparse: the loader must not need to read it
    with pytest.raises(ScenarioError) as err:
        scenario.load(big)
    assert str(err.value) == f"{big}:1: file is 4194305 bytes; the limit is 4194304 (4 MiB)"


def test_missing_file_is_a_scenario_error(tmp_path: Path):
    with pytest.raises(ScenarioError) as err:
        scenario.load(tmp_path / "nope.yaml")
    assert str(err.value).startswith(f"{tmp_path / 'nope.yaml'}:1: cannot read file")


def test_error_text_never_spans_lines():
    with pytest.raises(ScenarioError) as err:
        load_text(LAB.replace("name: t}", 'name: "a\\nb"}'))
    assert str(err.value).startswith("t.yaml:3: metadata.name: 'a\\nb' is not a valid lab name")
    with pytest.raises(ScenarioError) as err:
        scenario.loads("a: [", "odd\nname.yaml")
    assert str(err.value).startswith("odd\\x0aname.yaml:1: invalid YAML")


# -- fuzzing: nothing but ScenarioError, ever ---------------------------------------------


def _only_scenario_errors(load) -> None:
    try:
        planned = planner.plan(load())
        describe.describe(planned)
    except ScenarioError as exc:
        text = str(exc)
        assert "\n" not in text
        assert re.match(r"[^\n]*:\d+: ", text), text


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(max_size=400))
def test_random_text_raises_only_scenario_errors(text: str):
    _only_scenario_errors(lambda: scenario.loads(text, "fuzz.yaml"))


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_scenario_errors(data: bytes):
    _only_scenario_errors(lambda: scenario.loads(data, "fuzz.yaml"))


_VALID = [
    list(yaml.safe_load_all((DATA / "format-example.yaml").read_text())),
    list(yaml.safe_load_all((ROOT / "scenarios" / "default.yaml").read_text())),
    list(yaml.safe_load_all((DATA / "kubectl-dump.yaml").read_text())),
    # replayed dumps: owners, ReplicaSets, skipped kinds, taints, real node names
    *(list(yaml.safe_load_all(p.read_text())) for p in sorted((DATA / "replay").glob("*.yaml"))),
]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.sampled_from(
        [
            "",
            "None",
            "Local",
            "LoadBalancer",
            "UDP",
            "node-2",
            "web-0",
            "web",
            "http",
            "10.96.0.10",
            "10.244.1.300",
            "203.0.113.1",
            "0.0.0.0",
            "ClientIP",
            "a" * 80,
            "172.18.0.0/24",
            "10.244.0.0/8",
            "kubernetes.io/hostname",
        ]
    ),
    st.text(max_size=12),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _places(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _places(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _places(value, (*path, i))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_scenarios_raise_only_scenario_errors(data):
    docs = copy.deepcopy(data.draw(st.sampled_from(_VALID)))
    for _ in range(data.draw(st.integers(1, 3))):
        places = list(_places(docs))[1:]
        if not places:  # every document deleted (a `kind: List` dump is one document)
            break
        path = data.draw(st.sampled_from(places))
        parent = docs
        for step in path[:-1]:
            parent = parent[step]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = data.draw(_VALUES)
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][data.draw(st.text(max_size=10))] = data.draw(_VALUES)
        elif isinstance(parent[path[-1]], list):
            parent[path[-1]].append(data.draw(_VALUES))
    text = yaml.safe_dump_all(docs, sort_keys=False)
    _only_scenario_errors(lambda: scenario.loads(text, "mutant.yaml"))
