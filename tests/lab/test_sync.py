"""A running lab that changes: rules loaded as deltas equal a fresh full load."""

from __future__ import annotations

import pytest

from testbed.kernel import rules as rules_sync
from testbed.kubeproxy import incremental
from testbed.kubeproxy.sync import render
from testbed.live.lab import Lab

pytestmark = pytest.mark.lab


def canonical(mode: str, text: str) -> str:
    if mode == "nftables":
        return incremental.canonical_nft(text)
    return incremental.canonical_iptables(text)


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_changes_load_as_deltas_that_match_a_full_load(mode):
    with Lab.from_file("scenarios/local-no-local-endpoint.yaml", mode) as lab:
        lab.set_policy("web-local", external="Cluster")
        lab.delete_pod("web-0")
        lab.set_policy("web-local", external="Local")
        nodes = len(lab.plan.nodes)
        assert lab.loads == {"full": nodes, "delta": 3 * nodes, "fallback": 0}
        for node in lab.plan.nodes:
            live = lab.rules(node.name)
            text = render(node, lab.plan.services, lab.plan.proxy)
            with Lab(lab.plan, serve=False) as other:
                rules_sync.load(other.ns(node.name), mode, text)
                assert canonical(mode, live) == canonical(mode, other.rules(node.name))
        verdict = lab.probe(
            source="client", service="web-cluster", via="nodePort", node="node-2", count=5
        )
        assert verdict.observed["rejected"] == 5  # no endpoints left anywhere
