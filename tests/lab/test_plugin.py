"""The pytest plugin as a CI user writes it: three lines per test."""

import pytest

pytestmark = pytest.mark.lab


def test_three_line_ci_test(lab):
    built = lab("local-preserves-client-ip")
    assert all(v.passed for v in built.verdicts())


def test_inline_scenario_and_ad_hoc_probe(lab):
    built = lab(
        [
            {
                "apiVersion": "testbed/v1alpha1",
                "kind": "Lab",
                "metadata": {"name": "inline"},
                "spec": {"nodes": 2, "clients": [{"name": "client"}]},
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {
                    "type": "NodePort",
                    "externalTrafficPolicy": "Local",
                    "selector": {"app": "web"},
                    "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}],
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web-0", "labels": {"app": "web"}},
                "spec": {
                    "nodeName": "node-1",
                    "containers": [{"name": "web", "ports": [{"containerPort": 8080}]}],
                },
            },
        ],
        proxy_mode="nftables",
    )
    hit = built.probe(source="client", service="web", via="nodePort", node="node-1", count=5)
    miss = built.probe(source="client", service="web", via="nodePort", node="node-2", count=5)
    assert hit.passed and hit.observed["sourceIPs"] == {"203.0.113.10": 5}
    assert miss.passed and miss.observed["dropped"] == 5
