"""The judge: statistics, verdict sentences, and agreement between packets, scenario and oracle."""

from __future__ import annotations

import math

import pytest

from testbed.core.model import Expectation, LoadBalancerConfig
from testbed.core.records import Attempt, Hop, Observation
from testbed.verdict.judge import judge, path_text
from testbed.verdict.oracle import predict
from testbed.verdict.statistics import ALPHA, chi2_sf, chi_square, upper_gamma_q
from tests.support.oracle_worlds import CLIENT_IP, N1, N2, VIP, probe, world

# -- chi-square ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "dof", "p"),
    [
        (3.841458820694124, 1, 0.05),  # textbook critical values
        (6.634896601021214, 1, 0.01),
        (10.827566170662733, 1, 0.001),
        (5.991464547107979, 2, 0.05),
        (13.815510557964274, 2, 0.001),
        (11.070497693516351, 5, 0.05),
        (18.307038053275146, 10, 0.05),
        (29.58829844507442, 10, 0.001),
        (124.34211340400407, 100, 0.05),
    ],
)
def test_chi2_sf_matches_known_critical_values(x: float, dof: int, p: float) -> None:
    assert chi2_sf(x, dof) == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("x", [0.001, 0.1, 0.5, 1.0, 2.0, 4.0, 9.0, 25.0, 50.0, 100.0])
def test_chi2_sf_matches_closed_forms(x: float) -> None:
    assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-10)
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-10)
    assert chi2_sf(x, 4) == pytest.approx(math.exp(-x / 2) * (1 + x / 2), rel=1e-10)


def test_upper_gamma_edges() -> None:
    assert chi2_sf(0.0, 3) == 1.0
    assert upper_gamma_q(1.0, 0.0) == 1.0
    assert upper_gamma_q(1.0, 3.0) == pytest.approx(math.exp(-3.0))
    assert 0.0 <= chi2_sf(1e4, 1) < 1e-300
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)


def test_chi_square_statistic() -> None:
    stat, dof, p = chi_square([50, 0], [0.5, 0.5])
    assert (stat, dof) == (50.0, 1)
    assert p == pytest.approx(math.erfc(5.0))
    stat, dof, p = chi_square([26, 24], [0.5, 0.5])
    assert stat == pytest.approx(0.08)
    assert p > 0.7
    stat, _, _ = chi_square([10, 20, 30], [1, 2, 3])  # fractions need not sum to 1
    assert stat == pytest.approx(0.0)


# -- helpers ---------------------------------------------------------------------------------


def observe(attempts: list[Attempt], source: str = CLIENT_IP, target: str = f"{VIP}:80"):
    return Observation("p", tuple(attempts), "client", source, target)


def ok(pod: str, seen: str, entry: str, reply: str = f"{VIP}:80", **kw) -> Attempt:
    """A delivery whose answer came back from the address aimed at: it completed."""
    kw.setdefault("answered", True)
    return Attempt("delivered", pod, seen, reply, "correct", entry_node=entry, **kw)


LOCAL = world(external="Local")  # LB over node-1 (web-0) and node-2 (web-1), client IP kept


def local_split(a: int, b: int) -> list[Attempt]:
    return [ok("web-0", CLIENT_IP, "node-1")] * a + [ok("web-1", CLIENT_IP, "node-2")] * b


def run(plan, pr, attempts, **kw):
    return judge(pr, observe(attempts, **kw), predict(plan, pr), plan)


# -- passing ----------------------------------------------------------------------------------


def test_agreeing_observation_passes() -> None:
    v = run(LOCAL, probe(), local_split(26, 24))
    assert v.passed, v.reasons
    assert v.reasons == ()
    assert v.expected == v.oracle | {"share": {"web-0": 0.5, "web-1": 0.5}}
    assert v.as_report()["observed"]["pods"] == {"web-0": 26, "web-1": 24}


def test_explicit_expectation_that_agrees_passes() -> None:
    expect = Expectation("delivered", "client", ("web-0", "web-1"), "correct")
    v = run(LOCAL, probe(expect=expect), local_split(25, 25))
    assert v.passed, v.reasons


def test_node_label_accepts_any_address_of_the_entry_node() -> None:
    plan = world()
    pr = probe(expect=Expectation(source_ip="node"))
    attempts = [ok("web-0", N1.gateway, "node-1"), ok("web-1", N1.ip, "node-1")] * 10
    attempts += [ok("web-0", N2.ip, "node-2"), ok("web-1", N2.gateway, "node-2")] * 10
    attempts += [ok("web-0", "172.18.0.13", "node-3"), ok("web-1", "172.18.0.13", "node-3")] * 5
    v = run(plan, pr, attempts)
    assert v.passed, v.reasons


# -- failing, with the right sentence ----------------------------------------------------------


def test_wrong_source_ip_says_what_was_seen_and_whose_it_is() -> None:
    v = run(
        LOCAL,
        probe(),
        [ok("web-0", N2.ip, "node-1")] * 25 + [ok("web-1", CLIENT_IP, "node-2")] * 25,
    )
    assert not v.passed
    assert (
        "expected the pod to see the client's address 203.0.113.10, but web-0 saw 172.18.0.12 "
        "(an address of node-2) in 25 of 25 attempts"
    ) in v.reasons


def test_wrong_source_ip_against_an_explicit_node_expectation() -> None:
    pr = probe(expect=Expectation(source_ip="client"))
    plan = world(lb=LoadBalancerConfig(mode="single", node="node-2"), external="Local")
    v = run(plan, pr, [ok("web-1", N2.ip, "node-2")] * 50)
    assert (
        "expected the pod to see the client's address 203.0.113.10, but web-1 saw 172.18.0.12 "
        "(an address of node-2) in 50 of 50 attempts" in v.reasons
    )


def test_unexpected_pod_fails() -> None:
    attempts = local_split(24, 24) + [ok("web-9", CLIENT_IP, "node-3")] * 2
    v = run(LOCAL, probe(), attempts)
    assert not v.passed
    assert "web-9 received 2 of 50 attempts, but only web-0 and web-1 should answer" in v.reasons


def test_missing_pod_fails_with_enough_attempts_only() -> None:
    v = run(LOCAL, probe(), local_split(50, 0))
    assert any("web-1 never answered in 50 delivered attempts" in r for r in v.reasons)
    few = run(LOCAL, probe(count=4), local_split(4, 0))
    assert few.passed, few.reasons


def test_dropped_when_delivery_was_expected() -> None:
    v = run(LOCAL, probe(), [Attempt("dropped")] * 50)
    assert not v.passed
    assert "expected every attempt to be delivered, but 50 of 50 were dropped" in v.reasons


def test_delivered_when_drop_was_expected() -> None:
    plan = world(external="Local")
    pr = probe("client", "nodePort", "node-3")
    v = run(plan, pr, [ok("web-0", CLIENT_IP, "node-3")] * 5, target=f"{N1.ip}:30080")
    assert not v.passed
    assert "expected every attempt to be dropped, but 5 of 5 were delivered" in v.reasons
    assert "web-0 received 5 of 5 attempts, but no pod should receive any" in v.reasons


def test_scenario_disagreeing_with_the_oracle_fails_even_when_packets_match_it() -> None:
    pr = probe(expect=Expectation(outcome="dropped"))
    v = run(LOCAL, pr, [Attempt("dropped")] * 50)
    assert not v.passed
    assert v.reasons == (
        "the scenario expects the outcome dropped but kube-proxy semantics predict delivered",
    )
    assert v.expected == {"outcome": "dropped", "completed": 0.0, "pods": [], "returnPath": "none"}
    assert v.oracle["outcome"] == "delivered"


def test_scenario_source_ip_disagreement_is_its_own_sentence() -> None:
    pr = probe("client", "nodePort", "node-1", expect=Expectation(source_ip="client"))
    plan = world()
    attempts = [ok("web-0", N1.gateway, "node-1"), ok("web-1", N1.ip, "node-1")] * 25
    v = run(plan, pr, attempts, target=f"{N1.ip}:30080")
    assert v.reasons[0].startswith(
        "the scenario expects the pod to see the client's address 203.0.113.10 but kube-proxy "
        "semantics predict an address of the entry node (node-1: 172.18.0.11 or 10.244.1.1)"
    )


def test_scenario_pods_and_share_disagreements() -> None:
    pr = probe(expect=Expectation(pods=("web-0",), share=(("web-0", 0.9), ("web-1", 0.1))))
    v = run(LOCAL, pr, local_split(25, 25))
    assert (
        "the scenario expects the pods web-0 to answer but kube-proxy semantics predict "
        "web-0 and web-1"
    ) in v.reasons
    assert any(
        r.startswith("the scenario expects the shares web-0 90%, web-1 10%") for r in v.reasons
    )


def test_shares_off_fail_and_fair_shares_pass() -> None:
    plan = world()
    pr = probe("tester", "clusterIP")
    tester = "10.244.3.2"

    def split(a: int, b: int) -> list[Attempt]:
        reply = "10.96.0.10:80"
        return [ok("web-0", tester, "node-3", reply)] * a + [
            ok("web-1", tester, "node-3", reply)
        ] * b

    bad = judge(pr, observe(split(50, 0), tester, "10.96.0.10:80"), predict(plan, pr), plan)
    assert not bad.passed
    share = [r for r in bad.reasons if "shares" in r]
    assert share == [
        "the pods' shares do not fit the expected split: web-0 50 and web-1 0 of 50 attempts, "
        "expected web-0 50%, web-1 50% (chi-square 50.00 with 1 degree of freedom, "
        f"p = 1.5e-12 < {ALPHA})"
    ]
    good = judge(pr, observe(split(26, 24), tester, "10.96.0.10:80"), predict(plan, pr), plan)
    assert good.passed, good.reasons
    # 35/15 is unlikely (p ~ 0.005) but not below alpha: still a pass
    fair = judge(pr, observe(split(35, 15), tester, "10.96.0.10:80"), predict(plan, pr), plan)
    assert fair.passed, fair.reasons


def test_mixed_outcomes_are_checked_statistically() -> None:
    plan = world(external="Local", lb=LoadBalancerConfig(health_checks=False))
    good = local_split(17, 17) + [Attempt("dropped", entry_node="node-3")] * 16
    assert run(plan, probe(), good).passed
    bad = local_split(25, 25)
    v = run(plan, probe(), bad)
    assert not v.passed
    assert any(
        r.startswith("the outcomes (delivered 50, dropped 0 of 50) do not fit") for r in v.reasons
    )
    odd = run(plan, probe(), good[:-1] + [Attempt("rejected")])
    assert "1 of 50 attempts were rejected, which is never expected here" in odd.reasons


def test_affinity_requires_one_pod() -> None:
    plan = world(affinity=10800)
    pr = probe("tester", "clusterIP")
    tester, reply = "10.244.3.2", "10.96.0.10:80"
    same = [ok("web-1", tester, "node-3", reply)] * 30
    assert judge(pr, observe(same, tester, reply), predict(plan, pr), plan).passed
    split = same[:20] + [ok("web-0", tester, "node-3", reply)] * 10
    v = judge(pr, observe(split, tester, reply), predict(plan, pr), plan)
    assert (
        "with sessionAffinity ClientIP every attempt of one source should reach the same pod, "
        "but web-0 got 10 and web-1 got 20"
    ) in v.reasons


def test_affinity_through_ecmp_is_one_pod_per_node() -> None:
    plan = world(affinity=10800)
    pr = probe()
    fine = [ok("web-0", N1.gateway, "node-1")] * 20 + [ok("web-0", N2.ip, "node-2")] * 20
    assert run(plan, pr, fine).passed
    bad = fine + [ok("web-1", N2.gateway, "node-2")]
    v = run(plan, pr, bad)
    assert any("through node-2, but web-0 got 20 and web-1 got 1" in r for r in v.reasons)


def test_no_snat_return_paths() -> None:
    plan = world(what_if=("no-snat",))
    pr = probe("client", "nodePort", "node-1")
    target = f"{N1.ip}:30080"
    right = [ok("web-0", CLIENT_IP, "node-1", target)] * 25
    broken = [Attempt("delivered", "web-1", CLIENT_IP, "10.244.2.2:8080", "broken", True, "node-1")]
    v = run(plan, pr, right + broken * 25, target=target)
    assert v.passed, v.reasons
    assert v.observed["returnPath"] == "mixed"
    all_right = run(plan, pr, right * 2, target=target)
    assert not all_right.passed
    assert any(
        "expected some replies to come back right and others not" in r for r in all_right.reasons
    )


def test_broken_return_path_when_correct_expected() -> None:
    attempts = local_split(25, 24) + [
        Attempt("delivered", "web-1", CLIENT_IP, "10.244.2.2:8080", "broken", True, "node-2")
    ]
    v = run(LOCAL, probe(), attempts)
    assert (
        "expected every reply to come from 198.51.100.10:80, the address the source used, but 1 "
        "of 50 replies came from elsewhere (10.244.2.2:8080)"
    ) in v.reasons


def test_no_attempts_is_a_failure() -> None:
    v = run(LOCAL, probe(), [])
    assert v.reasons == ("no attempt was made, so nothing could be checked",)


def test_verdict_report_shape() -> None:
    report = run(LOCAL, probe(), local_split(25, 25)).as_report()
    required = {"name", "passed", "observed", "expected", "oracle", "reasons"}
    assert required <= set(report) and set(report) - required <= {
        "nodes",
        "latency",
        "lines",
        "route",
        "flows",
        "oracleFlows",
    }
    assert report["reasons"] == []
    assert report["observed"]["sent"] == 50


def test_path_text_from_the_first_delivered_attempt() -> None:
    hop = Hop("client/eth0", "203.0.113.10:40001", "172.18.0.12:30080", "syn")
    first = Attempt("dropped")
    a = Attempt(
        "delivered",
        "web-0",
        "172.18.0.12",
        dnat="10.244.1.2:8080",
        snat="172.18.0.12",
        hops=(hop,),
    )
    obs = Observation("p", (first, a), "client", CLIENT_IP, "172.18.0.12:30080")
    assert path_text(obs) == (
        "203.0.113.10:40001 -> 172.18.0.12:30080 | DNAT 10.244.1.2:8080 SNAT 172.18.0.12 "
        "| pod web-0 saw 172.18.0.12"
    )
    icmp = Hop("client/eth0", "203.0.113.1", "203.0.113.10", "icmp-unreach")
    rejected = Observation(
        "p", (Attempt("rejected", hops=(icmp,)),), "client", CLIENT_IP, "10.96.0.10:80"
    )
    assert (
        path_text(rejected)
        == "203.0.113.10 -> 10.96.0.10:80 | rejected (icmp-unreach from 203.0.113.1)"
    )


# -- completed connections -------------------------------------------------------------------


def test_an_attempt_ends_in_exactly_one_way() -> None:
    assert ok("web-0", CLIENT_IP, "node-1").end == "completed"
    unanswered = ok("web-0", CLIENT_IP, "node-1", answered=False)
    assert unanswered.end == "broken"  # reached the pod, the request was never answered
    reset = Attempt("delivered", "web-0", CLIENT_IP, "10.244.1.2:8080", "broken")
    assert reset.end == "broken"  # reply from the pod's own address: the client resets it
    refused = Attempt("delivered", "web-0", CLIENT_IP, f"{VIP}:80", "correct", refused=True)
    assert refused.end == "rejected"
    assert Attempt("dropped").end == "dropped" and Attempt("rejected").end == "rejected"


def test_source_ip_says_whether_the_pod_answered_it() -> None:
    said = ok("web-0", CLIENT_IP, "node-1", server_view=f"{CLIENT_IP}:40000")
    seen = Attempt("delivered", "web-0", CLIENT_IP, "10.244.1.2:8080", "broken")
    obs = observe([said, said, seen])
    assert obs.source_ips_by == {CLIENT_IP: {"answer": 2, "capture": 1}}
    report = obs.as_report()
    assert (report["completed"], report["broken"], report["delivered"]) == (2, 1, 3)


def test_broken_deliveries_fail_an_expectation_of_completion() -> None:
    plan = world(external="Local")
    attempts = local_split(25, 20) + [ok("web-1", CLIENT_IP, "node-2", answered=False)] * 5
    v = run(plan, probe(), attempts)
    assert v.expected["completed"] == 1.0
    assert v.reasons == ("expected every attempt to complete, but 5 of 50 did not (5 broken)",)


def test_completed_fraction_is_checked_statistically() -> None:
    plan = world(external="Local", lb=LoadBalancerConfig(health_checks=False))
    exp = Expectation(completed=0.6667, outcomes=(("delivered", 0.6667), ("dropped", 0.3333)))
    pr = probe(count=90, expect=exp)
    dropped = [Attempt("dropped", entry_node="node-3")]
    fair = run(plan, pr, local_split(30, 30) + dropped * 30)
    assert fair.passed, fair.reasons
    assert fair.expected["outcomes"] == {"delivered": 0.6667, "dropped": 0.3333}
    rehashed = run(plan, pr, local_split(43, 42) + dropped * 5)  # retried SYNs elsewhere
    assert not rehashed.passed
    assert any(
        r.startswith("85 of 90 attempts completed (5 dropped did not), which does not fit")
        for r in rehashed.reasons
    )
    everything = run(plan, pr, local_split(45, 45))
    assert any(
        r.startswith("90 of 90 attempts completed, which does not fit the expected 66.7%")
        for r in everything.reasons
    )


def test_scenario_completed_and_outcomes_must_agree_with_the_oracle() -> None:
    plan = world(external="Local", lb=LoadBalancerConfig(health_checks=False))
    pr = probe(expect=Expectation(completed=0.5, outcomes=(("delivered", 1.0),)))
    v = run(plan, pr, local_split(25, 25))
    assert any(
        r.startswith("the scenario expects 50% of the attempts to complete") for r in v.reasons
    )
    assert any(r.startswith("the scenario expects the outcomes delivered 100%") for r in v.reasons)


def test_the_oracle_names_why_attempts_do_not_complete() -> None:
    plan = world(external="Local", lb=LoadBalancerConfig(health_checks=False))
    v = run(plan, probe(), local_split(17, 17) + [Attempt("dropped", entry_node="node-3")] * 16)
    assert any(
        line.startswith("why dropped (33.3%): LB IP") and "node-3 has no local endpoint" in line
        for line in v.lines
    )
