"""Without root: commands that need CAP_NET_ADMIN say so in one line; the rest works.

As root, commands run as `nobody` (setpriv --reuid=65534 --regid=65534 --clear-groups);
run by a normal user, they simply run as that user. The pure unit tests pass as nobody
(the modules that start a new interpreter are left out: the venv's interpreter lives
under /root, which nobody may not enter), and the lab tests skip with their reason.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cli.common import NEEDS_ROOT
from testbed.pytest_plugin import SKIP_REASON
from tests.support.commands import ROOT
from tests.support.private import IS_ROOT, Private

pytestmark = pytest.mark.reliability

NOBODY = 65534
DROP = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if IS_ROOT else []
NEED_ROOT = {
    "up": ("up", "default"),
    "down": ("down",),
    "run": ("run", "default"),
    "exec": ("exec", "client", "--", "true"),
    "clean": ("clean",),
    "rules": ("rules", "node-1"),
    "probe": ("probe", "--from", "client", "--to", "web"),
    "lb": ("lb",),
    "bench": ("bench", "--quick"),
}
# Pure modules: no interpreter started, no namespace made.
UNIT_SUBSET = [
    "tests/unit/test_scenario.py",
    "tests/unit/test_plan.py",
    "tests/unit/test_topology.py",
    "tests/unit/test_oracle.py",
    "tests/unit/test_judge.py",
    "tests/unit/test_report.py",
    "tests/unit/test_iptables_render.py",
    "tests/unit/test_nftables_render.py",
    "tests/unit/test_healthcheck.py",
    "tests/reliability/test_limits.py",
    "tests/reliability/test_bad_input.py::test_the_loader_refuses_every_bad_file_in_one_line_without_blowing_up",
]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(path, 0o777)
    return path


def closed_to_others(path: Path) -> Path | None:
    """The first directory on the way to `path` that other users may not enter, if any."""
    for part in [*reversed(path.resolve().parents), path.resolve()]:
        if not part.stat().st_mode & stat.S_IXOTH:
            return part
    return None


def unprivileged(argv: list[str], env: dict[str, str], timeout: float = 300):
    if IS_ROOT:
        # A checkout under a private directory (mktemp -d makes one) cannot be read by
        # nobody at all: there is nothing to test as nobody then, and nothing is wrong.
        if (closed := closed_to_others(ROOT)) is not None:
            pytest.skip(f"nobody cannot enter {closed}, on the way to the checkout {ROOT}")
        probe = subprocess.run([*DROP, sys.executable, "-c", "pass"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"the interpreter cannot run as nobody: {probe.stderr.decode()[:200]}")
    return subprocess.run(
        [*DROP, *argv], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout
    )


def nobody_env(private: Private, home: Path) -> dict[str, str]:
    return dict(private.env, HOME=str(home), PYTHONDONTWRITEBYTECODE="1")


@pytest.mark.parametrize("command", sorted(NEED_ROOT))
def test_commands_that_need_root_say_so_in_one_line(private: Private, home: Path, command: str):
    done = unprivileged(private.argv(*NEED_ROOT[command]), nobody_env(private, home))
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"testbed: {NEEDS_ROOT}\n"
    assert done.stdout == ""


@pytest.mark.parametrize("argv", [("plan", "default"), ("--help",), ("run", "--help"), ("ls",)])
def test_commands_that_need_no_root_work(private: Private, home: Path, argv):
    done = unprivileged(private.argv(*argv), nobody_env(private, home))
    assert done.returncode == 0, done.stderr
    assert done.stdout and done.stderr == ""


def test_unit_tests_pass_and_lab_tests_skip_as_nobody(private: Private, home: Path):
    # the unit tests check the default names (tb-), so no private prefix here
    env = {k: v for k, v in nobody_env(private, home).items() if not k.startswith("TESTBED_")}
    pytest_argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    units = unprivileged([*pytest_argv, *UNIT_SUBSET], env)
    tail = units.stdout.strip().splitlines()[-1]
    assert units.returncode == 0, units.stdout[-3000:] + units.stderr[-2000:]
    assert " passed" in tail and "failed" not in tail and "error" not in tail, tail
    labs = unprivileged(
        [*pytest_argv, "-rs", "tests/lab/test_cli.py", "tests/reliability/test_crash.py"], env
    )
    assert labs.returncode == 0, labs.stdout[-3000:]
    last = labs.stdout.strip().splitlines()[-1]
    assert "skipped" in last and "passed" not in last and "failed" not in last, last
    assert SKIP_REASON in labs.stdout
    print(f"\nNOBODY: unit subset: {tail}; lab tests: {last}")
