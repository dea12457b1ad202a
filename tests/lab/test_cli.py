"""The `testbed` command as a user runs it: up, exec, rules, down, clean, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from testbed.core.topology import NS_PREFIX
from tests.support.commands import ROOT, TESTBED, run_testbed
from tests.support.waiting import wait_until
from tests.support.world import lab_namespaces

pytestmark = pytest.mark.lab


def lab_id_from(output: str) -> str:
    first = output.splitlines()[0]
    assert first.startswith("lab "), output
    return first.split()[1]


def test_up_exec_rules_down(no_leaks):
    up = run_testbed("up", "default")
    assert up.returncode == 0, up.stderr
    lab = lab_id_from(up.stdout)
    try:
        ls = run_testbed("ls")
        assert lab in ls.stdout and " up" in ls.stdout
        ping = run_testbed(
            "exec", "--lab", lab, "client", "--", "ping", "-c1", "-W1", "172.18.0.12"
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr
        rules = run_testbed("rules", lab, "node-1")
        assert rules.returncode == 0, rules.stderr
        assert "KUBE-SERVICES" in rules.stdout
        curl = run_testbed(
            "exec",
            "--lab",
            lab,
            "client",
            "--",
            "curl",
            "-s",
            "-m",
            "2",
            "http://172.18.0.12:30080/hostname",
        )
        assert curl.returncode == 0 and curl.stdout.startswith("web-"), curl.stdout
    finally:
        down = run_testbed("down", lab)
    assert down.returncode == 0, down.stderr
    assert not any(lab in n for n in lab_namespaces())


def test_unknown_namespace_is_one_clear_line(no_leaks):
    up = run_testbed("up", "default")
    assert up.returncode == 0, up.stderr
    lab = lab_id_from(up.stdout)
    try:
        bad = run_testbed("exec", "--lab", lab, "nosuch", "--", "true")
        assert bad.returncode == 2
        assert bad.stderr.count("\n") == 1 and "no namespace 'nosuch'" in bad.stderr
    finally:
        run_testbed("down", lab)


def private_env(tmp_path, **extra) -> dict[str, str]:
    """A private namespace prefix and state dir: `clean` here touches no other lab."""
    return dict(
        os.environ,
        TESTBED_NS_PREFIX=f"{NS_PREFIX}k-",
        TESTBED_STATE_DIR=str(tmp_path / "state"),
        **extra,
    )


def private_namespaces() -> set[str]:
    return {n for n in os.listdir("/run/netns") if n.startswith(f"{NS_PREFIX}k-")}


def stalled_foreground_up(tmp_path, point: str) -> subprocess.Popen[str]:
    """`testbed up --foreground` that freezes at a build point (it says so on stderr)."""
    return subprocess.Popen(
        [*TESTBED, "up", "default", "--foreground"],
        cwd=ROOT,
        env=private_env(tmp_path, TESTBED_STALL_AT=point),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("point", ["state-saved", "namespace-1", "veth-1", "addresses", "rules"])
def test_kill_9_mid_build_then_clean_leaves_nothing(point, tmp_path):
    proc = stalled_foreground_up(tmp_path, point)
    try:
        line = proc.stderr.readline()
        assert f"stalled at {point}" in line, line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    clean = run_testbed("clean", env=private_env(tmp_path))
    assert clean.returncode == 0, clean.stderr
    assert "removed" in clean.stdout
    assert wait_until(lambda: not private_namespaces())
    assert not list((tmp_path / "state").glob("*.json"))


def test_sigterm_tears_down_a_foreground_lab(tmp_path):
    proc = stalled_foreground_up(tmp_path, "up")
    assert "stalled at up" in proc.stderr.readline()
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 143
    assert wait_until(lambda: not private_namespaces())


def test_clean_leaves_a_users_own_namespace_alone(tmp_path):
    """`ip netns add tb-victim`: named like a lab, recorded by none; clean must not touch it."""
    victim = f"tb-victim-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", victim], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    try:
        env = dict(private_env(tmp_path), TESTBED_NS_PREFIX="")  # the default prefix, tb-
        for args in (["clean"], ["clean", "--all"]):
            clean = run_testbed(*args, env=env)
            assert clean.returncode == 0, clean.stderr
            assert f"removed namespace {victim}" not in clean.stdout
            assert victim in clean.stdout and "left alone" in clean.stdout
            assert victim in os.listdir("/run/netns")
    finally:
        subprocess.run(["ip", "netns", "delete", victim], capture_output=True)
