"""Verdicts: what the packets showed, against the scenario's expectation and the oracle.

A probe passes only when all three agree. The expectation is the scenario's
`expect` field by field, and the oracle's prediction for every field the
scenario leaves out; a field where the scenario and the oracle disagree is a
failure of its own, even when the packets match one of them, because then the
scenario's story is wrong or kube-proxy's semantics are misread.

Where kube-proxy is random (which endpoint, which node the edge picks) the
judge tests counts statistically: a chi-square goodness-of-fit test at the
significance level `ALPHA` per check. That level is Bonferroni-corrected: `FAMILY_ALPHA`
spread over `MAX_CHECKS` checks, so a run (or a whole test suite) of up to that many
checks raises a false alarm on fair counts with probability at most `FAMILY_ALPHA`.
The chi-square tail is computed here (the regularized upper incomplete gamma
function), so the judge needs nothing beyond the standard library.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from testbed.core.model import Expectation, Plan, ProbePlan
from testbed.core.records import COMPLETED, DELIVERED, DROPPED, ENDS, REJECTED, Attempt, Observation
from testbed.verdict import flows, measure
from testbed.verdict.prediction import MIXED, NONE, Prediction
from testbed.verdict.statistics import (
    ALPHA,
    chi_square,
)
from testbed.verdict.words import (
    and_list,
    capped,
    describe_ip,
    describe_label,
    describe_outcomes,
    pct,
)

MIN_EXPECTED = 5  # below this many expected attempts per pod, chi-square is not trusted
SHARE_TOLERANCE = 0.01  # how far a scenario's share may be from the oracle's and still agree
ALL_ANSWER_FACTOR = 10  # with this many attempts per allowed pod, every one must answer
MAX_WHY_LINES = 3  # the oracle's causes shown under a row


# -- verdicts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    name: str
    passed: bool
    reasons: tuple[str, ...]
    observed: dict
    expected: dict
    oracle: dict
    path: str = ""  # the first delivered attempt, hop by hop, for the table
    details: dict = field(default_factory=dict)  # extra report keys: nodes, latency, ...
    lines: tuple[str, ...] = ()  # shown under the probe's row in the table (not failures)

    def as_report(self) -> dict:
        """The probe object of the JSON report."""
        return {
            "name": self.name,
            "passed": self.passed,
            "observed": self.observed,
            "expected": self.expected,
            "oracle": self.oracle,
            "reasons": list(self.reasons),
            **({"lines": list(self.lines)} if self.lines else {}),
            **self.details,
        }


@dataclass(frozen=True)
class Expected:
    """The scenario's expectation, completed from the oracle's prediction."""

    outcome: str
    outcomes: dict[str, float]  # probabilities, when they come from the oracle
    source_ip: str | None
    source_from_oracle: bool
    pods: tuple[str, ...] | None  # None: not checked
    return_path: str | None  # None: not checked
    share: dict[str, float] | None
    completed: float | None = None  # fraction of attempts that complete; None: not checked

    def as_report(self) -> dict:
        out: dict = {"outcome": self.outcome}
        if self.outcome == MIXED and self.outcomes:
            out["outcomes"] = {k: round(v, 6) for k, v in self.outcomes.items()}
        if self.completed is not None:
            out["completed"] = round(self.completed, 6)
        if self.source_ip is not None:
            out["sourceIP"] = self.source_ip
        if self.pods is not None:
            out["pods"] = list(self.pods)
        if self.return_path is not None:
            out["returnPath"] = self.return_path
        if self.share:
            out["share"] = {k: round(v, 6) for k, v in self.share.items()}
        return out


def _oracle_share(pred: Prediction) -> dict[str, float] | None:
    return pred.share if len(pred.pods) > 1 and not pred.sticky else None


def expectation(probe: ProbePlan, pred: Prediction) -> Expected:
    """The scenario's fields, the oracle's for the rest.

    When the scenario overrides the outcome, the oracle's delivery details no longer
    fit: nothing delivered means no pod, no source address and no reply; a delivery
    the oracle does not predict leaves the unspecified details unchecked (None).
    """
    exp = probe.expect or Expectation()
    stated = _normalised(dict(exp.outcomes)) if exp.outcomes else {}
    if stated:
        outcome = MIXED if len(stated) > 1 else next(iter(stated))
    else:
        outcome = exp.outcome or pred.outcome
    if outcome == pred.outcome:
        fill = Expected(
            outcome=outcome,
            outcomes=pred.outcomes,
            source_ip=pred.source_ip,
            source_from_oracle=True,
            pods=pred.pods,
            return_path=pred.return_path,
            share=_oracle_share(pred),
            completed=pred.completed,
        )
    elif outcome in (DROPPED, REJECTED):
        fill = Expected(outcome, {}, None, False, (), NONE, None, 0.0)
    else:
        fill = Expected(outcome, {}, None, False, None, None, None)
    return Expected(
        outcome=outcome,
        outcomes=dict(sorted(stated.items())) if len(stated) > 1 else fill.outcomes,
        completed=exp.completed if exp.completed is not None else fill.completed,
        source_ip=exp.source_ip or fill.source_ip,
        source_from_oracle=exp.source_ip is None and fill.source_from_oracle,
        pods=tuple(exp.pods) if exp.pods is not None else fill.pods,
        return_path=exp.return_path or fill.return_path,
        share=dict(exp.share) if exp.share is not None else fill.share,
    )


def judge(probe: ProbePlan, observed: Observation, prediction: Prediction, plan: Plan) -> Verdict:
    """Compare one probe's observation with its expectation and with the oracle."""
    exp = expectation(probe, prediction)
    reasons = _disagreements(probe.expect, prediction, plan)
    if observed.sent == 0:
        reasons.append("no attempt was made, so nothing could be checked")
    else:
        view = _View(plan, prediction, observed)
        reasons += _check_outcome(exp, observed)
        reasons += _check_completed(exp, observed)
        reasons += _check_source(exp, view)
        reasons += _check_pods(exp, view)
        reasons += _check_return_path(exp, view)
        reasons += _check_share(exp, view)
    details: dict = flows.details(probe, observed, prediction)
    if observed.count(DELIVERED):
        details["nodes"] = measure.node_shares(observed.attempts, prediction, exp.share)
    # only attempts sent one at a time time the path; a burst's times mostly time the burst
    if probe.measure_latency and (latency := measure.latency(observed.attempts)):
        details["latency"] = latency
    lines = measure.latency_lines(observed.attempts) if probe.measure_latency else []
    lines += why_lines(prediction)
    return Verdict(
        name=probe.name,
        passed=not reasons,
        reasons=tuple(reasons),
        observed=observed.as_report(),
        expected=exp.as_report(),
        oracle=prediction.as_report(),
        path=path_text(observed),
        details=details,
        lines=tuple(lines),
    )


# -- scenario versus oracle -------------------------------------------------------


def _satisfies(label: str, ip: str, source_address: str, node_addrs: Iterable[str]) -> bool:
    if label == "client":
        return ip == source_address
    if label == "node":
        return ip in set(node_addrs)
    return ip == label


def _disagreements(exp: Expectation | None, pred: Prediction, plan: Plan) -> list[str]:
    if exp is None:
        return []
    out: list[str] = []
    say = "the scenario expects {} but kube-proxy semantics predict {}".format
    if exp.outcome is not None and exp.outcome != pred.outcome:
        predicted = pred.outcome
        if predicted == MIXED:
            predicted = f"a mix ({describe_outcomes(pred.outcomes)})"
        out.append(say(f"the outcome {exp.outcome}", predicted))
    if exp.outcomes is not None:
        mine = _normalised(dict(exp.outcomes))
        theirs = pred.outcomes
        if any(
            abs(mine.get(k, 0.0) - theirs.get(k, 0.0)) > SHARE_TOLERANCE for k in {*mine, *theirs}
        ):
            out.append(say(f"the outcomes {describe_outcomes(mine)}", describe_outcomes(theirs)))
    if exp.completed is not None and abs(exp.completed - pred.completed) > SHARE_TOLERANCE:
        out.append(
            say(
                f"{pct(exp.completed)} of the attempts to complete",
                f"{pct(pred.completed)} ({describe_outcomes(pred.ends)})",
            )
        )
    if exp.source_ip is not None:
        fates = pred.delivered
        agree = bool(fates) and all(
            _satisfies(
                exp.source_ip,
                f.source_ip or "",
                pred.source_address,
                pred.addresses_of(f.entry_node),
            )
            for f in fates
        )
        if not agree:
            nodes = pred.entry_nodes or tuple(n.name for n in plan.nodes)
            out.append(
                say(
                    f"the pod to see {describe_label(exp.source_ip, pred, nodes)}",
                    describe_label(pred.source_ip, pred, pred.entry_nodes),
                )
            )
    if exp.pods is not None and set(exp.pods) != set(pred.pods):
        out.append(
            say(
                f"the pods {and_list(sorted(exp.pods))} to answer",
                f"{and_list(pred.pods)}" if pred.pods else "no pod at all",
            )
        )
    if exp.return_path is not None and exp.return_path != pred.return_path:
        out.append(say(f"the return path {exp.return_path}", pred.return_path))
    if exp.share is not None:
        mine = _normalised(dict(exp.share))
        theirs = pred.share
        off = set(mine) != {p for p, v in theirs.items() if v > 0} or any(
            abs(v - theirs.get(p, 0.0)) > SHARE_TOLERANCE for p, v in mine.items()
        )
        if pred.sticky:
            off = True
        if off:
            predicted = (
                "sessionAffinity ClientIP: each source sticks to one pod"
                if pred.sticky
                else _describe_share(theirs)
            )
            out.append(say(f"the shares {_describe_share(mine)}", predicted))
    return out


def _normalised(share: Mapping[str, float]) -> dict[str, float]:
    total = sum(share.values())
    return {k: v / total for k, v in share.items() if v > 0} if total > 0 else {}


def _describe_share(share: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {pct(v)}" for k, v in sorted(share.items()))


# -- observation versus expectation -----------------------------------------------


@dataclass(frozen=True)
class _View:
    plan: Plan
    pred: Prediction
    obs: Observation

    @property
    def source_address(self) -> str:
        return self.obs.source_address or self.pred.source_address

    @property
    def target(self) -> str:
        return self.obs.target or self.pred.target

    @property
    def delivered(self) -> tuple[Attempt, ...]:
        return tuple(a for a in self.obs.attempts if a.outcome == DELIVERED)

    def candidate_nodes(self, attempt: Attempt) -> tuple[str, ...]:
        """The attempt's entry node when it was seen, and every node that could be it."""
        known = self.pred.entry_nodes or tuple(n.name for n in self.plan.nodes)
        return tuple(
            dict.fromkeys(([attempt.entry_node] if attempt.entry_node else []) + list(known))
        )

    def node_addrs(self, nodes: Iterable[str]) -> set[str]:
        return {a for n in nodes for a in self.pred.addresses_of(n)}


def _where(obs: Observation, outcome: str) -> str:
    """` at node-2 (4), node-3 (2)`: the nodes that dropped or rejected, as the captures saw."""
    if outcome == DELIVERED:
        return ""
    nodes = Counter(a.entry_node for a in obs.attempts if a.outcome == outcome and a.entry_node)
    if not nodes:
        return ""
    if len(nodes) == 1:
        return f" at {next(iter(nodes))}"
    return " at " + ", ".join(f"{node} ({k})" for node, k in sorted(nodes.items()))


def _check_outcome(exp: Expected, obs: Observation) -> list[str]:
    counts = Counter(a.outcome for a in obs.attempts)
    n = obs.sent
    if exp.outcome != MIXED:
        bad = {k: v for k, v in sorted(counts.items()) if k != exp.outcome}
        if not bad:
            return []
        parts = [f"{v} of {n} were {k}{_where(obs, k)}" for k, v in bad.items()]
        return [f"expected every attempt to be {exp.outcome}, but {and_list(parts)}"]
    if not exp.outcomes:  # the scenario says "mixed" on its own: want more than one outcome
        if len(counts) > 1:
            return []
        (only,) = counts
        return [f"expected a mix of outcomes, but all {n} attempts were {only}"]
    out = []
    unexpected = {k: v for k, v in counts.items() if exp.outcomes.get(k, 0.0) <= 0}
    for k, v in sorted(unexpected.items()):
        out.append(f"{v} of {n} attempts were {k}, which is never expected here")
    names = [k for k, p in exp.outcomes.items() if p > 0]
    fractions = [exp.outcomes[k] for k in names]
    observed = [counts.get(k, 0) for k in names]
    total = sum(observed)
    if len(names) > 1 and total and total * min(fractions) / sum(fractions) >= MIN_EXPECTED:
        stat, dof, p = chi_square(observed, fractions)
        if p < ALPHA:
            seen = ", ".join(f"{k} {c}" for k, c in zip(names, observed, strict=True))
            out.append(
                f"the outcomes ({seen} of {total}) do not fit the expected "
                f"{describe_outcomes(exp.outcomes)} ({_stat_words(stat, dof, p)})"
            )
    return out


def _check_completed(exp: Expected, obs: Observation) -> list[str]:
    """How many attempts a real client saw succeed, against the expected fraction."""
    if exp.completed is None:
        return []
    n = obs.sent
    done = obs.ended(COMPLETED)
    rest = Counter(a.end for a in obs.attempts if a.end != COMPLETED)
    others = and_list([f"{rest[e]} {e}" for e in ENDS if rest.get(e)])
    if exp.completed >= 1.0:
        if done == n:
            return []
        return [f"expected every attempt to complete, but {n - done} of {n} did not ({others})"]
    if exp.completed <= 0.0:
        if done == 0:
            return []
        return [f"expected no attempt to complete, but {done} of {n} did"]
    fractions = [exp.completed, 1.0 - exp.completed]
    if n * min(fractions) < MIN_EXPECTED:
        return []
    stat, dof, p = chi_square([done, n - done], fractions)
    if p >= ALPHA:
        return []
    rest_words = f" ({others} did not)" if rest else ""
    return [
        f"{done} of {n} attempts completed{rest_words}, which does not fit the "
        f"expected {pct(exp.completed)} ({_stat_words(stat, dof, p)})"
    ]


def why_lines(pred: Prediction) -> list[str]:
    """The oracle's cause of each way an attempt is predicted not to complete."""
    causes: dict[tuple[str, str], float] = {}
    for f in pred.fates:
        if f.probability <= 0 or not f.why:
            continue
        end = f.outcome
        if f.outcome == DELIVERED:
            if f.return_path == "correct" and not f.reset:
                continue
            end = "broken"
        causes[(end, f.why)] = causes.get((end, f.why), 0.0) + f.probability
    ranked = sorted(causes.items(), key=lambda kv: (-kv[1], kv[0]))
    out = [f"why {end} ({pct(p)}): {why}" for (end, why), p in ranked[:MAX_WHY_LINES]]
    if len(ranked) > MAX_WHY_LINES:
        out.append(f"... and {len(ranked) - MAX_WHY_LINES} more causes")
    return out


def _stat_words(stat: float, dof: int, p: float) -> str:
    unit = "degree" if dof == 1 else "degrees"
    return f"chi-square {stat:.2f} with {dof} {unit} of freedom, p = {p:.2g} < {ALPHA}"


def _check_source(exp: Expected, view: _View) -> list[str]:
    pred = view.pred
    groups: Counter[tuple[str, str]] = Counter()
    wanted: dict[str, str] = {}
    per_pod = Counter(a.pod or "?" for a in view.delivered)
    for a in view.delivered:
        if not a.source_ip:
            continue
        pod = a.pod or "?"
        if exp.source_from_oracle:
            fates = [f for f in pred.delivered if a.pod is None or f.pod == a.pod]
            if not fates:
                continue  # a pod the oracle does not predict: the pods check says so
            ok = any(
                _satisfies(
                    pred.label(f) or "",
                    a.source_ip,
                    view.source_address,
                    view.node_addrs({f.entry_node or "", a.entry_node or ""}),
                )
                for f in fates
            )
            labels = sorted({pred.label(f) or "" for f in fates})
            nodes = sorted({f.entry_node for f in fates if f.entry_node})
            want = " or ".join(describe_label(lbl, pred, nodes) for lbl in labels)
        else:
            if exp.source_ip is None or exp.source_ip == MIXED:
                continue
            nodes = view.candidate_nodes(a)
            ok = _satisfies(exp.source_ip, a.source_ip, view.source_address, view.node_addrs(nodes))
            want = describe_label(exp.source_ip, pred, nodes)
        if not ok:
            groups[(pod, a.source_ip)] += 1
            wanted[pod] = want
    out = []
    for (pod, ip), k in sorted(groups.items()):
        out.append(
            f"expected the pod to see {wanted[pod]}, but {pod} saw {ip} "
            f"({describe_ip(view.plan, ip)}) in {k} of {per_pod[pod]} attempts"
        )
    return capped(out)


def _check_pods(exp: Expected, view: _View) -> list[str]:
    pred, obs = view.pred, view.obs
    seen = obs.pods
    n = obs.sent
    if exp.pods is None:
        return []
    allowed = set(exp.pods)
    out = []
    for pod, k in sorted(seen.items()):
        if pod in allowed:
            continue
        if allowed:
            only = and_list(sorted(allowed))
            out.append(f"{pod} received {k} of {n} attempts, but only {only} should answer")
        else:
            out.append(f"{pod} received {k} of {n} attempts, but no pod should receive any")
    delivered = sum(k for pod, k in seen.items() if pod in allowed)
    if pred.sticky:
        out += _check_affinity(view)
    elif allowed and delivered >= ALL_ANSWER_FACTOR * len(allowed):
        for pod in sorted(allowed - set(seen)):
            out.append(
                f"{pod} never answered in {delivered} delivered attempts, although with "
                f"that many every one of the {len(allowed)} allowed pods should"
            )
    return capped(out)


def _check_affinity(view: _View) -> list[str]:
    """ClientIP affinity: one pod per DNAT node (one pod in all when only one node DNATs)."""
    groups: dict[str, Counter[str]] = {}
    for a in view.delivered:
        if a.pod:
            key = (a.entry_node or "?") if not view.pred.affinity else "all"
            groups.setdefault(key, Counter())[a.pod] += 1
    out = []
    for key, pods in sorted(groups.items()):
        if len(pods) > 1:
            got = and_list([f"{p} got {k}" for p, k in sorted(pods.items())])
            where = "" if key in ("all", "?") else f" through {key}"
            out.append(
                "with sessionAffinity ClientIP every attempt of one source should reach "
                f"the same pod{where}, but {got}"
            )
    return out


def _check_return_path(exp: Expected, view: _View) -> list[str]:
    obs = view.obs
    got = obs.return_path
    replies = [a for a in obs.attempts if a.return_path != NONE]
    n = len(replies)
    target = view.target
    if exp.return_path is None:
        return []
    if exp.return_path == MIXED:
        if got == MIXED or n < ALL_ANSWER_FACTOR:
            return []
        return [f"expected some replies to come back right and others not, but all were {got}"]
    if got == exp.return_path:
        return []
    if exp.return_path == NONE:
        return [f"expected no reply at all, but {n} of {obs.sent} attempts got one"]
    if n == 0:
        return [f"expected replies from {target}, but no reply came back in {obs.sent} attempts"]
    if exp.return_path == "correct":
        bad = [a for a in replies if a.return_path != "correct"]
        froms = sorted({a.reply_from for a in bad if a.reply_from})
        where = f" ({and_list(froms)})" if froms else ""
        return [
            f"expected every reply to come from {target}, the address the source used, "
            f"but {len(bad)} of {n} replies came from elsewhere{where}"
        ]
    bad = [a for a in replies if a.return_path != exp.return_path]
    return [
        f"expected the replies to be {exp.return_path}, but {len(bad)} of {n} were "
        f"{and_list(sorted({a.return_path for a in bad}))}"
    ]


def _check_share(exp: Expected, view: _View) -> list[str]:
    if not exp.share or view.pred.sticky:
        return []
    share = _normalised(exp.share)
    if len(share) < 2:
        return []
    pods = sorted(share)
    counts = Counter(a.pod for a in view.delivered if a.pod in share)
    observed = [counts.get(p, 0) for p in pods]
    fractions = [share[p] for p in pods]
    n = sum(observed)
    if n == 0 or n * min(fractions) < MIN_EXPECTED:
        return []
    stat, dof, p = chi_square(observed, fractions)
    if p >= ALPHA:
        return []
    seen = and_list([f"{pod} {c}" for pod, c in zip(pods, observed, strict=True)])
    return [
        f"the pods' shares do not fit the expected split: {seen} of {n} attempts, "
        f"expected {_describe_share(share)} ({_stat_words(stat, dof, p)})"
    ]


# -- the path line ----------------------------------------------------------------


def path_text(obs: Observation) -> str:
    """The first delivered attempt (else the first one) as one line:
    `src -> dst | DNAT ... SNAT ... | pod web-0 saw ...`."""
    if not obs.attempts:
        return f"{obs.source_address or '?'} -> {obs.target or '?'} | not sent"
    a = next((x for x in obs.attempts if x.outcome == DELIVERED), obs.attempts[0])
    # as the source sent it; a node's own traffic is NATed before any capture point sees it
    at_source = f"{obs.source}/eth0"
    first = next(
        (h for h in a.hops if h.kind in ("syn", "udp", "data") and h.point == at_source), None
    )
    src = first.src if first else obs.source_address or "?"
    dst = obs.target or (first.dst if first else "?")
    parts = [f"{src} -> {dst}"]
    if a.edge_node:  # as it left the edge towards the node the edge chose
        parts.append(f"edge to {a.edge_node}")
    nat = [f"DNAT {a.dnat}"] if a.dnat else []
    nat += [f"SNAT {a.snat}"] if a.snat else []
    if a.outcome == DELIVERED:
        parts.append(" ".join(nat) if nat else "no NAT seen")
        parts.append(f"pod {a.pod or '?'} saw {a.source_ip or '?'}")
    else:
        if nat:
            parts.append(" ".join(nat))
        answer = next((h for h in a.hops if h.kind in ("icmp-unreach", "rst")), None)
        who = answer.src.rsplit(":", 1)[0] if answer and answer.kind == "icmp-unreach" else None
        who = who or (answer.src if answer else None)
        parts.append(f"{a.outcome} ({answer.kind} from {who})" if answer else a.outcome)
    return " | ".join(parts)
