"""Probing a lab that another process keeps up (`testbed up`).

The owner process serves the pods; any other process can still capture and
send in the lab's namespaces, because the plan is deterministic: re-planning
the recorded scenario gives the same addresses, and the lab id gives the names.
"""

from __future__ import annotations

from testbed import judge as judging
from testbed import oracle, topology
from testbed.capture import Capture
from testbed.model import ProbePlan, Target
from testbed.probe import capture_points
from testbed.probe import run as run_probe
from testbed.records import Observation
from testbed.state import LabState


def probe_running_lab(
    found: LabState,
    source: str,
    service: str | None,
    via: str = "clusterIP",
    node: str | None = None,
    port: str | None = None,
    count: int = 10,
    protocol: str = "TCP",
    address: str | None = None,
) -> tuple[judging.Verdict, Observation]:
    from testbed import runner

    plan = runner.load(found.file, found.proxy_mode)
    wiring = topology.wire(plan, found.id)
    if source not in wiring.namespaces:
        raise LookupError(f"no client, pod or node named {source!r} in lab {found.id}")
    if not service and not address:
        raise ValueError("say where to probe: --to SERVICE or --address IP")
    key = service if not service or "/" in service else f"default/{service}"
    port_ref: int | str | None = int(port) if port and port.isdigit() else port
    probe = ProbePlan(
        name=f"{source}-to-{service or address}",
        source=source,
        target=Target(service=key, port=port_ref, via=via, node=node, address=address),
        protocol=protocol,
        count=count,
    )
    if key and not any(s.key == key for s in plan.services):
        raise LookupError(f"no service {key} in lab {found.id}")
    with Capture(capture_points(plan, wiring)) as capture:
        observed = run_probe(plan, wiring, capture, probe)
    predicted = oracle.predict(plan, probe)
    return judging.judge(probe, observed, predicted, plan), observed
