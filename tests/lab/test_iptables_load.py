"""Every golden iptables ruleset loads into a real node namespace, and the kernel keeps it.

The unit tests prove the text is what kube-proxy would write; this proves the kernel
(iptables-nft here) accepts it: every match module, target and option it uses exists.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from testbed.core.topology import NS_PREFIX
from testbed.kernel import netns
from tests.support.waiting import wait_until

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "iptables"
CASES = sorted(p.stem for p in GOLDEN.glob("*.txt"))
PREFIX = f"{NS_PREFIX}ipt-"  # the suite's own prefix: a concurrent suite never sees these


def _run(ns: str, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], input=stdin, text=True, capture_output=True
    )


def _rules_per_chain(text: str) -> Counter[tuple[str, str]]:
    """(table, chain) -> number of rules; chains declared with no rules count as 0."""
    counts: Counter[tuple[str, str]] = Counter()
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            counts[(table, line[1:].split()[0])] += 0
        elif line.startswith("-A "):
            counts[(table, line.split()[1])] += 1
    return counts


@pytest.fixture
def node_ns(request: pytest.FixtureRequest):
    name = f"{PREFIX}{request.node.callspec.indices['case']}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


def test_cases_found() -> None:
    assert len(CASES) >= 12


@pytest.mark.lab
@pytest.mark.parametrize("case", CASES)
def test_golden_ruleset_loads(case: str, node_ns: str) -> None:
    text = (GOLDEN / f"{case}.txt").read_text()

    check = _run(node_ns, ["iptables-restore", "--test"], text)
    assert check.returncode == 0, f"iptables-restore --test rejected {case}: {check.stderr}"

    load = _run(node_ns, ["iptables-restore"], text)
    assert load.returncode == 0, f"iptables-restore failed for {case}: {load.stderr}"

    save = _run(node_ns, ["iptables-save"])
    assert save.returncode == 0, save.stderr
    saved = save.stdout

    service_chains = {
        line[1:].split()[0]
        for line in text.splitlines()
        if line.startswith((":KUBE-SVC-", ":KUBE-SVL-"))
    }
    for chain in service_chains:
        assert f":{chain} - [0:0]" in saved, f"{chain} missing from iptables-save"
    if not service_chains:  # no usable endpoint here: only the filter REJECT or DROP
        assert 'has no endpoints" ' in saved or 'has no local endpoints" ' in saved

    # The kernel holds exactly the chains we declared, each with as many rules.
    assert _rules_per_chain(saved) == _rules_per_chain(text)


@pytest.mark.lab
def test_no_namespace_left() -> None:
    """Runs last in this module: the fixtures removed every namespace they made."""
    wait_until(lambda: not any(n.startswith(PREFIX) for n in netns.listed()), 2)
    assert not [n for n in netns.listed() if n.startswith(PREFIX)]
