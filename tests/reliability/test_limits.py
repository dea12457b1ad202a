"""Resource limits: a lab larger than the machine can hold is refused before building.

limits.py is pure apart from reading RLIMIT_NOFILE and MemAvailable, so its rules are
tested with made-up hosts; the CLI tests (root) show the refusal end to end: exit 2,
one line with the limit and the reason, no namespace and no state file, while
`testbed plan` still prints the plan and adds a warning line.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
from pathlib import Path

import pytest

from testbed.core import limits, scenario
from testbed.core.load import replan
from testbed.kernel import state
from tests.support.commands import ROOT
from tests.support.private import Private

pytestmark = pytest.mark.reliability

ROOMY = limits.Host(open_files=1 << 20, memory_available_kb=64 << 20)


def pods_scenario(pods: int, nodes: int) -> str:
    return f"""apiVersion: testbed/v1alpha1
kind: Lab
metadata: {{name: huge}}
spec:
  nodes: {nodes}
  clients: [{{name: client, ip: 203.0.113.10}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {pods}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, ports: [{{containerPort: 8080}}]}}]}}
"""


def plan_of(text: str):
    return replan(scenario.loads(text, "huge.yaml"), None)


@pytest.fixture(scope="module")
def huge():
    return plan_of(pods_scenario(5000, 25))


def test_needs_count_every_namespace(huge):
    need = limits.needs(huge)
    assert need.namespaces == 1 + 25 + 5000 + 1
    assert need.open_files == need.namespaces * limits.FDS_PER_NAMESPACE + limits.FDS_RESERVE
    assert need.memory_kb == need.namespaces * limits.KB_PER_NAMESPACE


def test_five_thousand_pods_exceed_the_namespace_cap_with_the_reason(huge):
    with pytest.raises(limits.LimitError) as err:
        limits.check(huge, ROOMY)
    text = str(err.value)
    assert text.startswith("lab huge is too large for this machine: 5,027 namespaces exceed")
    assert f"the cap of {limits.MAX_NAMESPACES:,}" in text
    assert "one process serves every pod" in text and "\n" not in text


def test_each_limit_is_named_with_its_number():
    small = plan_of(pods_scenario(4, 2))
    assert limits.message(small, ROOMY) is None
    tight = limits.Host(open_files=40, memory_available_kb=8 * 1024)
    found = limits.problems(limits.needs(small), tight)
    assert len(found) == 2
    assert found[0] == (
        "about 112 open files are needed (6 per namespace) but RLIMIT_NOFILE is 40"
        " (raise it: ulimit -n 128)"
    )
    assert found[1] == (
        "about 8 MiB of kernel memory is needed (1 MiB per namespace) but only 4 MiB may be"
        " used (half of MemAvailable, 8 MiB)"
    )
    unlimited = limits.Host(open_files=None, memory_available_kb=None)
    assert limits.problems(limits.needs(small), unlimited) == []


def test_the_host_is_read():
    host = limits.host()
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert host.open_files == (None if soft == resource.RLIM_INFINITY else soft)
    assert host.memory_available_kb and host.memory_available_kb > 0


def test_lab_up_refuses_before_writing_its_state_file(huge):
    from testbed.live.lab import Lab

    lab = Lab(huge)
    with pytest.raises(limits.LimitError):
        lab.up()
    assert not os.path.exists(state.state_path(lab.id))


@pytest.fixture
def huge_file(tmp_path: Path) -> Path:
    path = tmp_path / "huge.yaml"
    path.write_text(pods_scenario(5000, 25))
    return path


def test_plan_prints_the_plan_and_a_warning(huge_file: Path, capsys):
    from testbed import cli

    assert cli.main(["plan", str(huge_file)]) == 0
    shown = capsys.readouterr()
    last = shown.out.splitlines()[-1]
    assert last.startswith("warning: lab huge is too large for this machine: 5,027 namespaces")
    assert "Lab huge" in shown.out and shown.err == ""


@pytest.mark.lab
@pytest.mark.parametrize("command", ["up", "run"])
def test_up_and_run_refuse_a_lab_too_large_with_exit_2_and_create_nothing(
    private: Private, huge_file: Path, command: str
):
    done = private.tb(command, str(huge_file))
    print(f"\nLIMIT ({command}): exit {done.returncode}: {done.stderr.strip()}")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert re.match(
        r"testbed: lab huge is too large for this machine: 5,027 namespaces exceed the cap of"
        r" 2,048 \(.+\)",
        done.stderr,
    ), done.stderr
    assert done.stdout == ""
    assert private.namespaces() == set() and private.state_files() == set()


@pytest.mark.lab
def test_a_low_open_file_limit_refuses_even_the_default_lab(private: Private):
    def low() -> None:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (50, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )

    done = subprocess.run(
        private.argv("up", "default"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=private.env,
        preexec_fn=low,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "but RLIMIT_NOFILE is 50 (raise it: ulimit -n 128)" in done.stderr
    assert private.namespaces() == set() and private.state_files() == set()
