"""Services read back from a real API server: JSON it answered, under tests/data/upstream/.

`library/*.json` is `kubectl get services,endpointslices -A -o json` after the objects of
tests/support/manifests.py were created for each library scenario (v1.37.2 kube-apiserver);
`fields.json` holds hand-written objects covering every field, in namespace `fields`
(what the model expresses) and `unmodelled` (what it cannot).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from testbed.core.library import library
from testbed.core.load import load
from testbed.core.model import Endpoint
from testbed.kubeproxy import fromapi
from testbed.kubeproxy.fromapi import FromApiError
from tests.support import manifests

DATA = Path(__file__).resolve().parent.parent / "data" / "upstream"
SCENARIOS = [p.stem for p in library()]


def _json(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def _plan(name: str = "default"):
    return load(str(next(p for p in library() if p.stem == name)))


def _only(listing: dict, namespace: str, *names: str) -> dict:
    items = [
        i
        for i in listing["items"]
        if i["metadata"]["namespace"] == namespace and (not names or _owner(i) in names)
    ]
    return {**listing, "items": items}


def _owner(item: dict) -> str:
    if item["kind"] == "EndpointSlice":
        return item["metadata"]["labels"]["kubernetes.io/service-name"]
    return item["metadata"]["name"]


def test_every_library_scenario_has_its_api_server_capture():
    assert sorted(p.stem for p in (DATA / "library").glob("*.json")) == sorted(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_library_plan_round_trips_through_the_real_api_server(name):
    plan = _plan(name)
    assert fromapi.services(plan, _json(f"library/{name}.json")) == plan.services


@pytest.mark.parametrize("name", SCENARIOS)
def test_library_plan_round_trips_through_the_manifests_alone(name):
    plan = _plan(name)
    listing = json.loads(json.dumps(manifests.as_list(manifests.manifests(plan))))
    assert fromapi.services(plan, listing) == plan.services


def test_the_api_servers_own_service_and_slice_are_ignored():
    listing = _json("library/default.json")
    names = {(i["kind"], i["metadata"]["name"]) for i in listing["items"]}
    assert ("Service", "kubernetes") in names and ("EndpointSlice", "kubernetes") in names
    assert [s.key for s in fromapi.services(_plan(), listing)] == ["default/web"]


def test_every_modelled_field_is_read():
    got = {s.key: s for s in fromapi.services(_plan(), _only(_json("fields.json"), "fields"))}
    lb = got["fields/lb"]
    assert (lb.type, lb.cluster_ip) == ("LoadBalancer", "10.96.1.10")
    assert lb.external_ips == ("192.0.2.50",)
    assert lb.lb_ips == ("198.51.100.20", "198.51.100.21")  # from status, ipMode VIP or unset
    assert (lb.external_policy, lb.internal_policy) == ("Local", "Local")
    assert lb.health_check_node_port == 32100
    assert lb.affinity_timeout == 300
    assert lb.source_ranges == ("203.0.113.0/25", "198.51.100.0/24")
    http, dns = lb.ports
    assert (http.name, http.port, http.protocol, http.node_port, http.target_port) == (
        "http",
        80,
        "TCP",
        32080,
        "web",
    )
    assert (dns.name, dns.protocol, dns.node_port, dns.target_port) == ("dns", "UDP", 32053, 5353)
    # two slices with different ports for `http`; endpoints not in the plan follow by address
    assert [(e.ip, e.port) for e in http.endpoints] == [
        ("10.244.1.2", 8080),
        ("10.244.1.3", 9090),
        ("10.244.2.2", 8080),  # its second address is ignored, as kube-proxy ignores it
        ("10.244.3.2", 8080),
        ("10.244.3.3", 8080),
    ]
    by_ip = {e.ip: e for e in http.endpoints}
    assert by_ip["10.244.1.2"] == Endpoint("10.244.1.2", 8080, "node-1", "web-0")  # zone dropped
    assert by_ip["10.244.2.2"] == Endpoint(
        "10.244.2.2", 8080, "node-2", "web-1", ready=False, serving=True, terminating=True
    )
    assert (by_ip["10.244.3.2"].ready, by_ip["10.244.3.2"].serving) == (False, False)
    assert by_ip["10.244.3.2"].pod == "web-2"  # no targetRef: the plan's pod at that address
    assert by_ip["10.244.3.3"] == Endpoint("10.244.3.3", 8080, "", "")  # empty conditions: ready
    plain = got["fields/plain"]
    assert plain.affinity_timeout == 10800  # ClientIP without a timeout: the API default
    assert plain.ports[0].name == ""
    # the mirrored slice (managed by another controller) is not the testbed's
    assert [e.ip for e in plain.ports[0].endpoints] == ["10.244.2.3"]
    assert got["fields/headless"].cluster_ip is None
    assert got["fields/np"].ports[0].node_port == 31537  # allocated by the API server


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ("topology", "Service unmodelled/topology: spec.trafficDistribution: PreferClose is not"),
        ("hinted", "EndpointSlice unmodelled/hinted-a: endpoints[0].hints: topology hints"),
        ("proxied", "Service unmodelled/proxied: status.loadBalancer.ingress[0].ipMode: Proxy"),
        ("sctp", "Service unmodelled/sctp: spec.ports[0].protocol: SCTP is not modelled"),
    ],
)
def test_what_the_model_cannot_express_is_one_line_naming_object_and_field(service, message):
    listing = _only(_json("fields.json"), "unmodelled", service)
    with pytest.raises(FromApiError) as caught:
        fromapi.services(_plan(), listing)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_ipv6_slices_and_dual_stack_services_are_refused():
    listing = _only(_json("fields.json"), "fields", "lb")
    bad = copy.deepcopy(listing)
    next(i for i in bad["items"] if i["kind"] == "EndpointSlice")["addressType"] = "IPv6"
    with pytest.raises(FromApiError, match=r"EndpointSlice fields/lb-a: addressType: IPv6"):
        fromapi.services(_plan(), bad)
    bad = copy.deepcopy(listing)
    spec = next(i for i in bad["items"] if i["kind"] == "Service")["spec"]
    spec["clusterIPs"].append("fd00::10")
    spec["ipFamilies"].append("IPv6")
    with pytest.raises(FromApiError, match=r"Service fields/lb: spec.ipFamilies"):
        fromapi.services(_plan(), bad)


def test_a_change_made_with_kubectl_is_what_comes_back():
    plan = _plan("default")
    listing = _json("library/default.json")
    web = next(i for i in listing["items"] if i["metadata"]["name"] == "web")
    web["spec"]["externalTrafficPolicy"] = "Local"
    web_slice = next(i for i in listing["items"] if i["metadata"]["name"] == "web-0")
    web_slice["endpoints"][0]["conditions"] = {"ready": False, "serving": True, "terminating": True}
    (svc,) = fromapi.services(plan, listing)
    assert svc.external_policy == "Local"
    first = svc.ports[0].endpoints[0]
    assert (first.pod, first.ready, first.terminating) == ("web-0", False, True)


def test_services_the_plan_lacks_follow_and_deleted_ones_are_gone():
    plan = _plan("session-affinity")  # web, web-plain
    listing = _json("library/session-affinity.json")
    listing["items"] = [i for i in listing["items"] if _owner(i) != "web"]
    extra = manifests.service(_plan("default").services[0])
    extra["metadata"]["name"] = "added"
    listing["items"].append(extra)
    assert [s.key for s in fromapi.services(plan, listing)] == [
        "default/web-plain",
        "default/added",
    ]


@pytest.mark.parametrize(
    "listing", [{}, {"items": None}, [], {"items": [{"kind": "Pod", "metadata": {"name": "x"}}]}]
)
def test_not_a_list_of_services_and_slices_is_one_line(listing):
    with pytest.raises(FromApiError):
        fromapi.services(_plan(), listing)


def test_a_testbed_slice_without_its_service_label_is_refused():
    listing = _json("library/default.json")
    web_slice = next(i for i in listing["items"] if i["metadata"]["name"] == "web-0")
    del web_slice["metadata"]["labels"]["kubernetes.io/service-name"]
    with pytest.raises(FromApiError, match="EndpointSlice default/web-0: metadata.labels"):
        fromapi.services(_plan(), listing)


def test_with_services_keeps_everything_else_of_the_plan():
    plan = _plan("default")
    listing = _json("library/default.json")
    web = next(i for i in listing["items"] if i["metadata"]["name"] == "web")
    web["spec"]["externalTrafficPolicy"] = "Local"
    changed = fromapi.with_services(plan, listing)
    assert changed.services[0].external_policy == "Local"
    assert (changed.nodes, changed.pods, changed.probes) == (plan.nodes, plan.pods, plan.probes)


def test_external_name_is_skipped_unless_a_planned_service_became_one():
    listing = _only(_json("fields.json"), "unmodelled", "external-name")
    assert fromapi.services(_plan(), listing) == ()  # kube-proxy writes nothing for it
    listing = _json("library/default.json")
    web = next(i for i in listing["items"] if i["metadata"]["name"] == "web")
    web["spec"] = {"type": "ExternalName", "externalName": "example.com"}
    with pytest.raises(FromApiError, match="Service default/web: spec.type: ExternalName"):
        fromapi.services(_plan(), listing)
