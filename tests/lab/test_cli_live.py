"""A running lab from the shell: probe --node '*', live changes, -o json, ls, a fitted table."""

from __future__ import annotations

import json

import pytest

from tests.support.commands import run_testbed

pytestmark = pytest.mark.lab


def _up(name: str) -> str:
    up = run_testbed("up", name)
    assert up.returncode == 0, up.stderr
    first = up.stdout.splitlines()[0]
    assert first.startswith("lab "), up.stdout
    return first.split()[1]


def _ends(lab: str) -> dict[str, dict]:
    """Per node, the observed counts of a probe through that node's NodePort."""
    done = run_testbed(
        "probe", "--lab", lab, "--from", "client", "--to", "web-local",
        "--via", "nodePort", "--node", "*", "--count", "6", "-o", "json",
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    probes = json.loads(done.stdout)["scenarios"][0]["probes"]
    return {p["name"].rsplit("-via-", 1)[1]: p for p in probes}


def test_live_changes_are_the_steps_changes(no_leaks):
    lab = _up("local-no-local-endpoint")
    try:
        ls = run_testbed("ls")
        assert ls.stdout.splitlines()[0].split()[:2] == ["LAB", "NAME"], ls.stdout
        listed = json.loads(run_testbed("ls", "-o", "json").stdout)
        assert any(item["id"] == lab and item["status"] == "up" for item in listed)

        before = _ends(lab)
        assert before["node-1"]["observed"]["completed"] == 6
        assert before["node-2"]["observed"]["dropped"] == 6  # Local, no pod on node-2
        assert "node-2 has no ready local endpoint for default/web-local" in " ".join(
            before["node-2"]["lines"]
        )

        flip = run_testbed("set-policy", "--lab", lab, "web-local", "--external", "Cluster")
        assert flip.returncode == 0, flip.stderr
        assert "externalTrafficPolicy Cluster" in flip.stdout
        after = _ends(lab)
        assert all(p["observed"]["completed"] == 6 for p in after.values()), after

        gone = run_testbed("delete", "pod", "web-0", "--lab", lab)
        assert gone.returncode == 0, gone.stderr
        empty = _ends(lab)
        assert all(p["observed"]["completed"] == 0 for p in empty.values()), empty

        bad = run_testbed("scale", "nosuch", "--replicas", "2", "--lab", lab)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
        assert "no deployment default/nosuch" in bad.stderr
    finally:
        down = run_testbed("down", "--lab", lab)
    assert down.returncode == 0, down.stderr


def test_run_fits_an_80_column_terminal(no_leaks):
    done = run_testbed("run", "-q", "default", env={**_env(), "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    wide = [line for line in done.stdout.splitlines() if len(line) > 80]
    assert not wide, wide
    assert "      path: " in done.stdout  # the path moved under its row


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_shell_runs_inside_the_namespace_and_scale_adds_pods(no_leaks):
    lab = _up("default")
    try:
        shell = run_testbed("shell", "node-2", "--lab", lab, input="echo in-$TESTBED_NS\nexit\n")
        assert shell.returncode == 0, shell.stderr
        assert f"in-{lab}" in shell.stdout or "-node-2" in shell.stdout, shell.stdout
        scaled = run_testbed("scale", "deployment/web", "--replicas", "6", "--lab", lab)
        assert scaled.returncode == 0 and "scaled to 6" in scaled.stdout, scaled.stderr
        done = run_testbed(
            "probe", "--lab", lab, "--from", "client", "--to", "web", "--via", "nodePort",
            "--node", "node-1", "--count", "120", "-o", "json",
        )  # fmt: skip
        pods = json.loads(done.stdout)["scenarios"][0]["probes"][0]["observed"]["pods"]
        assert {"web-4", "web-5"} <= set(pods), pods  # the new pods answer: their owner serves them
    finally:
        run_testbed("down", lab)
