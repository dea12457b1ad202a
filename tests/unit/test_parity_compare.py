"""The parity suite's comparison: it passes equal runs and catches each kind of difference."""

from __future__ import annotations

from testbed.core.records import DELIVERED, DROPPED, Attempt, Observation
from testbed.verdict.statistics import homogeneity
from tests.support.parity import differences, source_kinds
from tests.support.world import load_plan

ALPHA = 1e-6


def obs(pods: dict[str, int], dropped: int = 0, source: str = "172.18.0.100") -> Observation:
    attempts = [
        Attempt(DELIVERED, pod=p, source_ip=source, answered=True, return_path="correct")
        for p, n in pods.items()
        for _ in range(n)
    ]
    attempts += [Attempt(DROPPED) for _ in range(dropped)]
    return Observation("p", tuple(attempts), source="client", source_address="172.18.0.100")


def test_homogeneity_equal_and_different() -> None:
    assert homogeneity([50, 50], [48, 52]) > 0.5
    assert homogeneity([100, 0], [0, 100]) < 1e-12
    assert homogeneity([0, 0], [0, 0]) == 1.0
    assert homogeneity([3, 0], [0, 0]) == 0.0  # one run saw attempts, the other none


def test_equal_runs_have_no_difference() -> None:
    plan = load_plan()
    a = obs({"web-1": 150, "web-2": 150})
    b = obs({"web-1": 140, "web-2": 160})
    assert differences(plan, [(True, a)], [(True, b)], ALPHA) == []


def test_each_kind_of_difference_is_named() -> None:
    plan = load_plan()
    base = obs({"web-1": 150, "web-2": 150})
    dropped = obs({"web-1": 50, "web-2": 50}, dropped=200)
    one_pod = obs({"web-1": 300})
    node_ip = plan.nodes[0].ip
    snat = obs({"web-1": 150, "web-2": 150}, source=node_ip)
    assert any("verdict" in d for d in differences(plan, [(True, base)], [(False, base)], ALPHA))
    assert any("ends" in d for d in differences(plan, [(True, base)], [(True, dropped)], ALPHA))
    assert any("pods" in d for d in differences(plan, [(True, base)], [(True, one_pod)], ALPHA))
    kinds = differences(plan, [(True, base)], [(True, snat)], ALPHA)
    assert any("source kinds" in d for d in kinds)
    assert source_kinds(plan, snat) == {"node": 300}


def test_under_session_affinity_the_number_of_pods_is_compared_not_which() -> None:
    plan = load_plan()
    one, other, both = obs({"web-0": 50}), obs({"web-2": 50}), obs({"web-0": 25, "web-2": 25})
    assert any("pods" in d for d in differences(plan, [(True, one)], [(True, other)], ALPHA))
    assert differences(plan, [(True, one)], [(True, other)], ALPHA, sticky=["p"]) == []
    found = differences(plan, [(True, one)], [(True, both)], ALPHA, sticky=["p"])
    assert any("pods" in d for d in found)
