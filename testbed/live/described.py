"""A probe described by hand (`Lab.probe(source=..., service=...)`, `testbed probe`), checked.

The checks are the scenario loader's, said against the running lab: a name it does not
have, a port the service does not offer, a path the service cannot take.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from testbed.core import topology
from testbed.core.errors import LabError
from testbed.core.model import Expectation, Plan, ProbePlan, Target
from testbed.core.scenario import MAX_PROBE_COUNT
from testbed.core.targets import service_port
from testbed.core.topology import Wiring


def described_probe(
    plan: Plan,
    wiring: Wiring,
    lab_id: str,
    source: str | None,
    service: str | None,
    via: str,
    node: str | None,
    port: int | str | None,
    address: str | None,
    protocol: str | None,
    count: int,
    mode: str = "connection",
) -> ProbePlan:
    """A probe described by its fields, checked as the scenario loader checks one.

    A bad source, service, port, address, path or count is a LabError naming it.
    """
    if source is None or (service is None and address is None):
        raise LabError("probe needs a source and a service or an address")
    if service is not None and address is not None:
        raise LabError("probe takes a service or an address, not both")
    if source not in wiring.namespaces or source == topology.EDGE:
        raise LabError(f"no client, pod or node named {source!r} in lab {lab_id}")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PROBE_COUNT:
        raise LabError(f"count {count!r} is outside 1-{MAX_PROBE_COUNT}")
    if protocol not in (None, "TCP", "UDP"):
        raise LabError(f"protocol {protocol!r}: must be TCP or UDP")
    if via not in ("clusterIP", "nodePort", "loadBalancer", "externalIP"):
        raise LabError(f"via {via!r}: must be clusterIP, nodePort, loadBalancer or externalIP")
    if mode not in ("connection", "packet"):
        raise LabError(f"mode {mode!r}: must be connection or packet")
    if mode == "packet" and source in {n.name for n in plan.nodes}:
        raise LabError(
            "packet probes start at a client or a pod: a node's own packets are NATed"
            " before any capture point can see them"
        )
    if node is not None and node not in {n.name for n in plan.nodes}:
        raise LabError(f"no node named {node!r} in lab {lab_id}")
    key = None
    if address is not None:
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise LabError(f"address {address!r} is not an IPv4 address") from None
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise LabError(f"a probe to an address needs a port number 1-65535, not {port!r}")
    else:
        key = service if "/" in service else f"default/{service}"
        svc = next((s for s in plan.services if s.key == key), None)
        if svc is None:
            raise LabError(f"no service {key} in lab {lab_id}")
        try:
            chosen_port = service_port(svc, port)
        except LookupError as exc:
            raise LabError(str(exc)) from None
        if via == "nodePort" and not chosen_port.node_port:
            raise LabError(f"service {key} ({svc.type}) has no nodePort")
        if via == "loadBalancer" and not svc.lb_ips:
            raise LabError(f"service {key} ({svc.type}) has no load-balancer address")
        if via == "externalIP" and not svc.external_ips:
            raise LabError(f"service {key} has no externalIPs")
        if protocol is not None and protocol != chosen_port.protocol:
            raise LabError(f"service {key} port {chosen_port.port} is {chosen_port.protocol}")
        protocol = chosen_port.protocol
    return ProbePlan(
        name=f"{source}-to-{service or address}",
        source=source,
        target=Target(service=key, port=port, via=via, node=node, address=address),
        protocol=protocol or "TCP",
        count=count,
        mode=mode,
    )


EXPECT_KEYS = ("outcome", "completed", "sourceIP", "pods", "returnPath")


def described_expectation(plan: Plan, text: str) -> Expectation:
    """`--expect`: `dropped`, or `outcome=delivered,sourceIP=client,pods=web-0+web-1`.

    The fields and values of a scenario's `expect` (docs/scenario-format.md), checked as the
    loader checks them; a bad one is a LabError naming it.
    """
    out = Expectation()
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        key, eq, value = part.partition("=")
        if not eq:
            key, value = "outcome", part
        key, value = key.strip(), value.strip()
        if key == "outcome":
            if value not in ("delivered", "dropped", "rejected"):
                raise LabError(f"expect outcome {value!r}: must be delivered, dropped or rejected")
            out = replace(out, outcome=value)
        elif key == "completed":
            try:
                fraction = float(value.removesuffix("%")) / (100 if value.endswith("%") else 1)
            except ValueError:
                fraction = -1.0
            if not 0 <= fraction <= 1:
                raise LabError(f"expect completed {value!r}: a fraction 0-1 or a percentage")
            out = replace(out, completed=fraction)
        elif key == "sourceIP":
            if value not in ("client", "node"):
                try:
                    value = str(ipaddress.IPv4Address(value))
                except ValueError:
                    raise LabError(
                        f"expect sourceIP {value!r}: client, node or an IPv4 address"
                    ) from None
            out = replace(out, source_ip=value)
        elif key == "pods":
            pods = tuple(p for p in value.split("+") if p)
            known = {p.name for p in plan.pods}
            unknown = [p for p in pods if p not in known]
            if unknown:
                raise LabError(f"expect pods: no pod named {unknown[0]!r} in this lab")
            out = replace(out, pods=pods)
        elif key == "returnPath":
            if value not in ("correct", "broken", "mixed", "none"):
                raise LabError(f"expect returnPath {value!r}: correct, broken, mixed or none")
            out = replace(out, return_path=value)
        else:
            raise LabError(f"expect: unknown field {key!r} (known: {', '.join(EXPECT_KEYS)})")
    return out
