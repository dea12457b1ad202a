"""Load: 100,000 probes against one service, every one accounted for, in bounded memory.

The run is a child process under a soft RLIMIT_NOFILE of 1024 (what a login shell
usually gives): 100,000 sockets at once would fail with EMFILE, so this also proves
the probe runs its attempts in batches. Its peak memory is VmHWM of the command's own
address space, which the command writes as it ends: a child's ru_maxrss would also count
the image of this (large) test process that the child had before its exec.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.commands import ROOT
from tests.support.private import Private

pytestmark = [pytest.mark.reliability, pytest.mark.lab]

COUNT = 100_000
PEAK_MB = 150
FD_LIMIT = 1024

SCENARIO = f"""apiVersion: testbed/v1alpha1
kind: Lab
metadata: {{name: hundred-thousand}}
spec:
  nodes: 1
  clients: [{{name: client, ip: 203.0.113.10}}]
  probes:
    - name: hundred-thousand
      from: client
      to: {{service: web, port: 80, via: nodePort, node: node-1}}
      count: {COUNT}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080, nodePort: 30080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, ports: [{{containerPort: 8080}}]}}]}}
"""


# `testbed ARGS`, then the high-water mark of this interpreter's own memory into a file
PEAK = """
import sys
from testbed.cli import main
try:
    code = main(sys.argv[2:])
finally:
    with open("/proc/self/status") as status, open(sys.argv[1], "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM:")).split()[1])
sys.exit(code)
"""


def _low_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(FD_LIMIT, hard), hard))


def test_a_hundred_thousand_probes_are_all_accounted_for_in_bounded_memory(
    private: Private, tmp_path: Path
):
    path, report, log = tmp_path / "load.yaml", tmp_path / "load.json", tmp_path / "out.txt"
    peak = tmp_path / "peak-kb"
    path.write_text(SCENARIO)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", PEAK, str(peak), "run", "-q", str(path), "--json", str(report)],
            cwd=ROOT,
            env=private.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_low_fd_limit,
        )
        private.procs.append(proc)
        proc.wait()
    peak_mb = int(peak.read_text()) / 1024
    assert proc.returncode in (0, 1), log.read_text()[-2000:]
    scenario = json.loads(report.read_text())["scenarios"][0]
    assert not scenario.get("error"), scenario["error"]
    (probe,) = scenario["probes"]
    seen = probe["observed"]
    accounted = seen["delivered"] + seen["dropped"] + seen["rejected"]
    print(
        f"\nLOAD: {seen['sent']} probes: {seen['delivered']} delivered, {seen['dropped']} dropped,"
        f" {seen['rejected']} rejected ({COUNT - accounted} unknown); pods {seen['pods']};"
        f" peak memory {peak_mb:.0f} MB (limit {PEAK_MB}); soft RLIMIT_NOFILE {FD_LIMIT};"
        f" exit {proc.returncode}"
    )
    assert seen["sent"] == COUNT
    assert accounted == COUNT
    assert seen["completed"] + seen["broken"] + seen["rejected"] + seen["dropped"] == COUNT
    assert sum(seen["pods"].values()) == seen["delivered"]
    assert seen["delivered"] >= COUNT * 0.99, "nearly every attempt reaches the one pod"
    assert peak_mb < PEAK_MB
    assert private.namespaces() == set() and private.state_files() == set()
