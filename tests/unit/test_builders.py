"""The code builders: documents the loader accepts, the loader's errors, a cheap import."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import testbed
from testbed import builders
from testbed.core import plan as planner
from testbed.core import scenario
from testbed.core.model import Expectation, Target
from testbed.core.scenario import ScenarioError

ROOT = Path(__file__).resolve().parents[2]


def web_world(**kw):
    args = dict(
        name="web",
        nodes=3,
        clients=["client"],
        services=[
            testbed.service(
                "web", type="NodePort", policy="Local", port=80, target=8080, node_port=30080
            )
        ],
        pods=[testbed.pod("web-0", node="node-1", app="web", port=8080)],
        proxy_mode="nftables",
    )
    args.update(kw)
    return testbed.documents(**args)


# -- documents the loader accepts ---------------------------------------------------------


def test_a_small_world_loads_and_means_what_the_arguments_say():
    s = scenario.load_dict(web_world())
    assert s.lab.name == "web" and s.lab.proxy_mode == "nftables"
    assert [n.name for n in s.lab.nodes] == ["node-1", "node-2", "node-3"]
    assert [(c.name, c.ip) for c in s.lab.clients] == [("client", None)]
    (svc,) = s.services
    assert (svc.key, svc.type, svc.external_policy) == ("default/web", "NodePort", "Local")
    assert svc.selector == (("app", "web"),)
    (port,) = svc.ports
    assert (port.port, port.target_port, port.node_port, port.protocol) == (80, 8080, 30080, "TCP")
    (pod,) = s.pods
    assert (pod.name, pod.template.node_name, pod.template.labels) == (
        "web-0",
        "node-1",
        (("app", "web"),),
    )
    assert [p.port for p in pod.template.ports] == [8080]


def test_spread_deployment_puts_one_replica_per_node_and_packed_puts_all_on_one():
    docs = testbed.documents(
        nodes=3,
        deployments=[
            testbed.deployment("spread", replicas=3, port=8080, spread=True),
            testbed.deployment("packed", replicas=3, port=8080, node="node-2"),
        ],
    )
    planned = planner.plan(scenario.load_dict(docs))
    spread = {p.node for p in planned.pods if p.name.startswith("spread-")}
    packed = {p.node for p in planned.pods if p.name.startswith("packed-")}
    assert spread == {"node-1", "node-2", "node-3"}
    assert packed == {"node-2"}
    (dep,) = [d for d in scenario.load_dict(docs).deployments if d.name == "spread"]
    (term,) = dep.template.anti_required
    assert term.topology_key == "kubernetes.io/hostname"


def test_every_service_option_reaches_the_scenario():
    docs = testbed.documents(
        nodes=2,
        services=[
            testbed.service(
                "lb",
                type="LoadBalancer",
                policy="Local",
                internal_policy="Local",
                app="web",
                session_affinity="ClientIP",
                affinity_timeout=60,
                source_ranges=["203.0.113.0/25"],
                external_ips=["192.0.2.10"],
                health_check_node_port=32000,
                cluster_ip="10.96.0.50",
                namespace="shop",
                protocol="UDP",
            ),
            testbed.service(
                "multi",
                selector={"tier": "db"},
                ports=[{"name": "a", "port": 1}, {"name": "b", "port": 2, "protocol": "UDP"}],
            ),
        ],
    )
    s = scenario.load_dict(docs)
    lb = s.service("shop/lb")
    assert (lb.external_policy, lb.internal_policy) == ("Local", "Local")
    assert (lb.session_affinity, lb.affinity_timeout) == ("ClientIP", 60)
    assert lb.source_ranges == ("203.0.113.0/25",)
    assert lb.external_ips == ("192.0.2.10",)
    assert (lb.health_check_node_port, lb.cluster_ip) == (32000, "10.96.0.50")
    assert lb.selector == (("app", "web"),) and lb.ports[0].protocol == "UDP"
    multi = s.service("multi")
    assert multi.selector == (("tier", "db"),)
    assert [(p.name, p.port, p.protocol) for p in multi.ports] == [
        ("a", 1, "TCP"),
        ("b", 2, "UDP"),
    ]


def test_lab_options_reach_the_scenario():
    docs = testbed.documents(
        description="a story",
        nodes=["worker-a", {"name": "worker-b", "labels": {"zone": "b"}}],
        clients=[testbed.client("alice", ip="203.0.113.20"), "bob"],
        what_if=["no-snat"],
        kube_proxy={"masqueradeAll": True},
        load_balancer={"mode": "single", "node": "worker-b"},
        network={"podCIDR": "10.32.0.0/16"},
    )
    lab = scenario.load_dict(docs).lab
    assert lab.description == "a story"
    assert [(n.name, n.labels) for n in lab.nodes] == [
        ("worker-a", ()),
        ("worker-b", (("zone", "b"),)),
    ]
    assert [(c.name, c.ip) for c in lab.clients] == [("alice", "203.0.113.20"), ("bob", None)]
    assert lab.kube_proxy.what_if == ("no-snat",) and lab.kube_proxy.masquerade_all
    assert (lab.load_balancer.mode, lab.load_balancer.node) == ("single", "worker-b")
    assert lab.network.pod_cidr == "10.32.0.0/16"


@pytest.mark.parametrize(
    "expect",
    [
        Expectation(outcome="dropped"),
        Expectation(
            outcome="delivered",
            source_ip="client",
            pods=("web-0",),
            return_path="correct",
            share=(("web-0", 1.0),),
        ),
    ],
)
def test_a_probe_spec_with_an_expectation_comes_back_as_the_same_expectation(expect):
    probe = testbed.probe_spec(
        "p", source="client", service="web", via="nodePort", node="node-2", count=7, expect=expect
    )
    (loaded,) = scenario.load_dict(web_world(probes=[probe])).lab.probes
    assert loaded.target == Target(service="default/web", port=80, via="nodePort", node="node-2")
    assert (loaded.source, loaded.count, loaded.expect) == ("client", 7, expect)


def test_a_probe_spec_to_a_raw_address_and_with_a_yaml_expectation():
    probe = testbed.probe_spec(
        "raw", source="client", address="172.18.0.11", port=30080, protocol="TCP", expect={}
    )
    (loaded,) = scenario.load_dict(web_world(probes=[probe])).lab.probes
    assert loaded.target == Target(address="172.18.0.11", port=30080)
    assert loaded.expect == Expectation()


def test_latency_probes_and_steps_reach_the_scenario():
    probe = testbed.probe_spec(
        "timed", source="client", service="web", via="nodePort", measure_latency=True
    )
    steps = [
        {"name": "flip", "setPolicy": {"service": "web", "externalTrafficPolicy": "Cluster"}},
        {"name": "after", "probe": {"from": "client", "to": {"service": "web"}, "count": 3}},
    ]
    lab = scenario.load_dict(web_world(probes=[probe], steps=steps)).lab
    assert lab.probes[0].measure_latency is True
    assert [(st.name, st.action) for st in lab.steps] == [("flip", "setPolicy"), ("after", "probe")]
    assert lab.steps[0].external_policy == "Cluster" and lab.steps[1].probe.count == 3


def test_documents_dumped_as_yaml_are_a_scenario_file_that_loads_the_same(tmp_path):
    docs = web_world(
        deployments=[testbed.deployment("api", replicas=2, port=9090, spread=True)],
        probes=[testbed.probe_spec("p", source="client", service="web", via="nodePort")],
    )
    path = tmp_path / "built.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    from_file = scenario.load(path)
    from_docs = scenario.load_dict(docs)
    assert (from_file.lab, from_file.services, from_file.deployments, from_file.pods) == (
        from_docs.lab,
        from_docs.services,
        from_docs.deployments,
        from_docs.pods,
    )


def test_build_returns_a_lab_that_is_planned_but_not_up():
    lab = testbed.build(
        name="built",
        nodes=2,
        clients=["client"],
        services=[testbed.service("web", type="NodePort")],
        deployments=[testbed.deployment("web", replicas=2, port=8080)],
        proxy_mode="nftables",
    )
    assert isinstance(lab, testbed.Lab)
    assert lab.id.startswith("built-") and lab.plan.proxy.mode == "nftables"
    assert [(p.name, p.node) for p in lab.plan.pods] == [("web-0", "node-1"), ("web-1", "node-2")]
    assert lab.hub is None and lab.scenario is not None  # nothing started; changes can re-plan


def test_load_takes_a_library_name_a_path_or_documents():
    by_name = testbed.load("local-no-local-endpoint")
    by_path = testbed.load(ROOT / "scenarios" / "local-no-local-endpoint.yaml", "nftables")
    by_docs = testbed.load(web_world())
    assert by_name.plan.name == by_path.plan.name == "local-no-local-endpoint"
    assert (by_name.plan.proxy.mode, by_path.plan.proxy.mode) == ("iptables", "nftables")
    assert by_docs.plan.name == "web"


def test_load_of_a_missing_scenario_is_the_loaders_error():
    with pytest.raises(ScenarioError, match=r"no-such-scenario.*cannot read file"):
        testbed.load("no-such-scenario")


# -- bad arguments are the loader's errors -------------------------------------------------

BAD = [
    (dict(services=[testbed.service("web", type="Bogus")]), r":2: Service/web spec\.type: 'Bogus'"),
    (dict(services=[testbed.service("web", policy="Local")]), r"Service/web.*externalTraffic"),
    (dict(services=[testbed.service("web", type="NodePort", node_port=80)]), r"NodePort range"),
    (dict(services=[testbed.service("9web")]), r"must start with a letter"),
    (dict(nodes=0), r":1: Lab/lab spec\.nodes: 0 nodes"),
    (dict(nodes=["edge"]), r"reserved for the lab's router"),
    (dict(proxy_mode="ipvs"), r"spec\.proxyMode: 'ipvs' is not one of iptables \| nftables"),
    (dict(pods=[testbed.pod("web-0", node="node-9")]), r"Pod/web-0 spec\.nodeName: no node"),
    (dict(pods=[testbed.pod("Web")]), r"Pod/Web metadata\.name"),
    (dict(pods=[testbed.pod("a", port=0)]), r"outside the port range"),
    (dict(deployments=[testbed.deployment("web", replicas=-1)]), r"replicas"),
    (dict(deployments=[testbed.deployment("web", replicas=2, spread=True)]), r"Pending"),
    (dict(clients=[testbed.client("c", ip="10.0.0.1")]), r"outside externalCIDR"),
    (dict(what_if=["no-dnat"]), r"unknown fault 'no-dnat'"),
    (dict(load_balancer={"mode": "random"}), r"'random' is not one of ecmp \| single"),
    (dict(steps=[{"name": "s", "deletePod": "nope"}]), r"cannot delete pod 'nope'"),
    (
        dict(
            clients=["client"],
            probes=[testbed.probe_spec("p", source="nobody", service="web")],
            services=[testbed.service("web")],
        ),
        r"'nobody' is not a client, pod or node",
    ),
    (
        dict(
            clients=["client"],
            probes=[testbed.probe_spec("p", source="client", service="web", via="nodePort")],
            services=[testbed.service("web")],
        ),
        r"Service default/web is ClusterIP: it has no nodePort",
    ),
    (
        dict(objects=[{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute"}]),
        r"'HTTPRoute' is not a supported kind",
    ),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_arguments_fail_with_one_line_naming_the_object(kwargs, message):
    with pytest.raises(ScenarioError) as caught:
        testbed.build(**kwargs)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("<testbed.build>:")
    assert re.search(message, text), text


def test_the_same_documents_fail_the_same_way_through_the_plain_loader():
    docs = testbed.documents(services=[testbed.service("web", type="Bogus")])
    with pytest.raises(ScenarioError) as plain:
        scenario.load_dict(docs)
    with pytest.raises(ScenarioError) as built:
        builders.from_documents(docs)
    assert built.value.reason == plain.value.reason
    assert built.value.line == plain.value.line == 2


# -- the package's face ---------------------------------------------------------------------


def test_every_public_name_resolves_and_none_is_shadowed_by_a_submodule():
    package = Path(testbed.__file__).parent
    for name in testbed.__all__:
        assert getattr(testbed, name) is not None
        # `import testbed.<name>` would replace the attribute with the module
        assert not (package / f"{name}.py").exists() and not (package / name).is_dir(), name
    assert set(testbed.__all__) <= set(dir(testbed))
    with pytest.raises(AttributeError):
        testbed.no_such_name  # noqa: B018


def test_importing_testbed_and_the_builders_does_not_import_scapy_or_pyroute2():
    code = (
        "import sys, testbed\n"
        "docs = testbed.documents(nodes=2, services=[testbed.service('web')],"
        " pods=[testbed.pod('web-0')])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('scapy', 'pyroute2'))\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_importing_testbed_is_fast():
    code = "import time; t = time.perf_counter(); import testbed; print(time.perf_counter() - t)"
    runs = []
    for _ in range(3):  # the best of three: a busy machine must not fail this
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        assert done.returncode == 0, done.stderr
        runs.append(float(done.stdout))
    assert min(runs) < 0.1, runs
