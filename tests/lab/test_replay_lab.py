"""Replayed dumps built for real: owned pods where the dump put them, DaemonSet pods on every
node, real node names and names the lab uses itself, and a bad file among several."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from tests.support.commands import run_testbed

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
REPLAY = ROOT / "tests" / "data" / "replay"
SCHEMA = ROOT / "tests" / "schemas" / "report.schema.json"

# Real clusters' node names, a node called `lo` and a client called `br-ext` (the lab's
# own interface names), a pod called `eth0`, and a DaemonSet giving every node a local
# endpoint for a Local NodePort: the names must not collide, and Local must work on all.
NAMES = """\
apiVersion: testbed/v1alpha1
kind: Lab
metadata: {name: names}
spec:
  nodes:
    - name: ip-10-0-1-23.ec2.internal
    - name: gke-demo-default-pool-5f3a2b1c-9x7q
    - name: lo
  clients: [{name: br-ext, ip: 203.0.113.10}]
  probes:
    - {name: via-ec2, from: br-ext, count: 3, expect: {outcome: delivered, sourceIP: client},
       to: {service: web, via: nodePort, node: ip-10-0-1-23.ec2.internal}}
    - {name: via-gke, from: br-ext, count: 3, expect: {outcome: delivered, sourceIP: client},
       to: {service: web, via: nodePort, node: gke-demo-default-pool-5f3a2b1c-9x7q}}
    - {name: via-lo, from: br-ext, count: 3, expect: {outcome: delivered, sourceIP: client},
       to: {service: web, via: nodePort, node: lo}}
    - {name: from-eth0, from: eth0, count: 3, to: {service: web},
       expect: {outcome: delivered, pods: [web-ip-10-0-1-23, web-lo,
                web-gke-demo-default-pool-5f3a2b1c-9x7q]}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {kubernetes.io/os: linux}
      containers: [{name: web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: eth0}
spec: {nodeName: lo, containers: [{name: c}]}
"""


def test_names_the_lab_uses_itself_and_real_node_names_build_and_carry_traffic(tmp_path):
    path = tmp_path / "names.yaml"
    path.write_text(NAMES)
    done = run_testbed("run", "-q", str(path), "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    probes = report["scenarios"][0]["probes"]
    assert [p["passed"] for p in probes] == [True, True, True, True]
    assert probes[0]["observed"]["pods"] == {"web-ip-10-0-1-23": 3}


def test_a_bad_file_among_several_is_an_error_row_and_the_others_run(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: testbed/v1alpha1\nkind: Lab\nmetadata: {name: bad}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
        "spec: {type: Nodeport, ports: [{port: 80}]}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: t}\nspec: {ports: [{port: 0}]}\n"
    )
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    replay = REPLAY / "deployment-with-pods.yaml"
    done = run_testbed(
        "run", "-q", str(replay), str(bad), "--json", str(report), "--junit", str(junit)
    )
    assert done.returncode == 1, done.stdout + done.stderr
    # the problems of the bad file, one line each, then the replay's warning
    errors = [line for line in done.stderr.splitlines() if line.startswith("testbed: ")]
    assert [e.split(": ", 2)[1].split(":")[0] for e in errors] == [str(bad), str(bad)]
    assert f"warning: {replay}:81: skipped 1 object kube-proxy does not read" in done.stderr
    data = json.loads(report.read_text())
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    good, refused = data["scenarios"]
    assert good["passed"] and [p["name"] for p in good["probes"]] == ["via-node-2", "via-node-1"]
    assert good["probes"][0]["observed"]["dropped"] == 5  # the outage the dump shows
    assert good["warnings"] == [
        f"{replay}:81: skipped 1 object kube-proxy does not read: ReplicaSet x1"
    ]
    assert not refused["passed"] and refused["probes"] == []
    assert refused["error"] == (
        f"{bad}:8: spec.type: 'Nodeport' is not one of ClusterIP | NodePort | LoadBalancer; "
        f"{bad}:13: spec.ports[0].port: 0 is outside the port range 1-65535"
    )
    assert data["summary"]["errors"] == 1
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.get("errors") for s in suites] == ["0", "1"]
    assert "FAIL" in done.stdout and "error: " in done.stdout


@pytest.mark.parametrize("path", sorted(REPLAY.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_replayed_dump_runs_and_its_probes_pass(path: Path, tmp_path: Path):
    done = run_testbed("run", "-q", str(path), "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    (scenario,) = json.loads((tmp_path / "r.json").read_text())["scenarios"]
    assert scenario["probes"] and all(p["passed"] for p in scenario["probes"])
    assert scenario["warnings"] == [
        line.removeprefix("warning: ") for line in done.stderr.splitlines()
    ]
