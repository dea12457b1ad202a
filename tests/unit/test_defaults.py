"""One set of defaults: a probe left unsaid is the same in YAML, CLI, Python and the docs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from testbed.cli import build_parser
from testbed.core.errors import LabError
from testbed.core.scenario import loads
from testbed.live.described import described_expectation
from testbed.live.lab import Lab

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = """
apiVersion: testbed/v1alpha1
kind: Lab
metadata: {name: d}
spec:
  nodes: 1
  clients: [{name: client, ip: 203.0.113.10}]
  probes:
    - {name: p, from: client, to: {address: 203.0.113.1, port: 80}}
"""


def _docs_default(field: str) -> str:
    """The default column of the field's row in the probe tables of docs/scenario-format.md."""
    text = (ROOT / "docs" / "scenario-format.md").read_text()
    text = text[text.index("| `name` | Unique among probes") :]
    row = re.search(rf"^\| `{field}` \|.*\| `?([^|`]+)`? \|$", text, re.M)
    assert row, field
    return row.group(1)


def test_probe_defaults_agree() -> None:
    yaml_probe = loads(SCENARIO).lab.probes[0]
    cli = build_parser().parse_args(["probe", "--from", "client", "--to", "web"])
    python = inspect.signature(Lab.probe).parameters
    assert yaml_probe.count == cli.count == python["count"].default
    assert str(yaml_probe.count) == _docs_default("count")
    assert yaml_probe.mode == cli.mode == python["mode"].default == _docs_default("mode")
    assert cli.via == python["via"].default == _docs_default("via")
    assert cli.node is python["node"].default is None
    assert cli.protocol is python["protocol"].default is None
    assert cli.expect is python["expect"].default is None


def test_expect_on_the_command_line() -> None:
    plan = type("P", (), {"pods": [type("Pod", (), {"name": "web-0"})()]})()
    e = described_expectation(plan, "outcome=delivered,sourceIP=client,pods=web-0,completed=50%")
    assert (e.outcome, e.source_ip, e.pods, e.completed) == ("delivered", "client", ("web-0",), 0.5)
    assert described_expectation(plan, "dropped").outcome == "dropped"
    for bad in ("lost", "pods=web-9", "completed=2", "sourceIP=somewhere", "colour=red"):
        with pytest.raises(LabError):
            described_expectation(plan, bad)
