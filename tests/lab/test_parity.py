"""Proof both ways: every library scenario under our renderer and under the real kube-proxy.

The same file, the same proxy mode, two labs: one whose rules our renderer wrote
(builtin), one where the pinned upstream kube-proxy wrote them from a real API server
(upstream, the default version). The verdicts must be the same, and so must what the
packets showed, as distributions (tests/support/parity.py). The builtin runs are the
session's shared library runs; the upstream ones are made here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.core.errors import TestbedError
from testbed.core.load import load_both
from testbed.live.lab import Lab
from tests.support.parity import CHECKS_PER_PROBE, differences

pytestmark = pytest.mark.lab

LIBRARY = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.yaml"))
MODES = ("iptables", "nftables")
# their whatIf faults are ones only our renderer commits
BUILTIN_ONLY = {
    "no-snat-broken-return",
    "udp-stale-conntrack-no-cleanup",
    "tcp-invalid-segment-no-drop",
}
MAX_PROBES = (
    80  # an upper bound on the library's rows (probes and probe steps), for the level below
)
# The parity checks share one thousandth of the suite's one-in-a-thousand false alarms.
ALPHA = 1e-4 / (CHECKS_PER_PROBE * MAX_PROBES * len(MODES))


def test_the_level_covers_the_library() -> None:
    probes = 0
    for path in LIBRARY:
        scenario, plan = load_both(str(path))
        rows = [s for s in scenario.lab.steps if s.probe is not None or s.load is not None]
        probes += len(plan.probes) + len(rows)
    assert probes <= MAX_PROBES, f"{probes} probes: raise MAX_PROBES so ALPHA stays honest"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "path", [p for p in LIBRARY if p.stem not in BUILTIN_ONLY], ids=lambda p: p.stem
)
def test_upstream_kube_proxy_gives_what_our_renderer_gives(library_runs, path, mode):
    ours, our_obs = library_runs(path.stem, mode)
    theirs, their_obs = library_runs(path.stem, mode, "upstream")
    assert theirs.error is None, theirs.error
    failing = {v.name: v.reasons for v in theirs.verdicts if not v.passed}
    assert not failing, failing
    plan = load_both(str(path), mode)[1]
    pairs = [
        [(v.passed, o) for v, o in zip(r.verdicts, obs, strict=True)]
        for r, obs in ((ours, our_obs), (theirs, their_obs))
    ]
    sticky = [v.name for v in ours.verdicts if v.oracle.get("affinity")]
    found = differences(plan, pairs[0], pairs[1], ALPHA, sticky)
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("no-snat-broken-return", "no-snat"),
        ("udp-stale-conntrack-no-cleanup", "no-conntrack-cleanup"),
        ("tcp-invalid-segment-no-drop", "no-invalid-drop"),
    ],
)
def test_a_fault_only_our_renderer_commits_is_refused_in_upstream_mode(name, fault) -> None:
    path = LIBRARY[0].parent / f"{name}.yaml"
    scenario, plan = load_both(str(path), None, "upstream")
    lab = Lab(plan, scenario=scenario)
    try:
        with pytest.raises(TestbedError, match=f"whatIf {fault}") as caught:
            lab.up()
    finally:
        lab.down()  # had it come up, nothing stays behind
    assert "\n" not in str(caught.value)
