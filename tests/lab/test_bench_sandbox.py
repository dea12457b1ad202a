"""The benchmark removes the namespaces it made, and only those."""

from __future__ import annotations

import contextlib

import pytest

from testbed.bench.sandbox import Sandbox
from testbed.kernel import netns

pytestmark = pytest.mark.lab


def test_sweep_removes_what_it_made_and_nothing_else() -> None:
    sandbox = Sandbox()
    made = sandbox.create("rules")
    lab = sandbox.name("lab") + "-node-1"  # a lab built under a handed-out name
    stranger = f"{sandbox.prefix}999-not-ours"  # same pid prefix, never handed out
    for name in (lab, stranger):
        netns.create(name)
    try:
        left = sandbox.sweep()
        assert sorted(left) == sorted([made, lab])
        listed = netns.listed()
        assert made not in listed and lab not in listed
        assert stranger in listed
    finally:
        for name in (made, lab, stranger):
            with contextlib.suppress(Exception):
                netns.remove(name)


def test_json_through_a_planted_link_is_refused_before_any_work(tmp_path, capsys) -> None:
    from testbed.cli import main

    target = tmp_path / "root-only"
    target.write_text("keep")
    link = tmp_path / "bench.json"
    link.symlink_to(target)
    assert main(["bench", "--quick", "--json", str(link)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a link is refused" in err, err
    assert target.read_text() == "keep"
