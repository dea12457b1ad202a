"""Where a probe aims: the address and port a source would really dial."""

from __future__ import annotations

from dataclasses import dataclass

from testbed.core.model import Plan, PortPlan, ProbePlan, ServicePlan


@dataclass(frozen=True)
class Aim:
    ip: str
    port: int
    protocol: str
    service: ServicePlan | None = None
    service_port: PortPlan | None = None

    @property
    def text(self) -> str:
        return f"{self.ip}:{self.port}"


def service_port(svc: ServicePlan, ref: int | str | None) -> PortPlan:
    if ref is None:
        return svc.ports[0]
    for port in svc.ports:
        if ref in (port.port, port.name) or str(ref) == str(port.port):
            return port
    raise LookupError(f"service {svc.key} has no port {ref!r}")


def source_address(plan: Plan, name: str) -> str:
    for client in plan.clients:
        if client.name == name:
            return client.ip
    for pod in plan.pods:
        if pod.name == name:
            return pod.ip
    return plan.node(name).ip


def source_kind(plan: Plan, name: str) -> str:
    if any(c.name == name for c in plan.clients):
        return "client"
    if any(p.name == name for p in plan.pods):
        return "pod"
    return "node"


def aim(plan: Plan, probe: ProbePlan) -> Aim:
    target = probe.target
    if target.address:
        return Aim(target.address, int(target.port or 0), probe.protocol)
    svc = plan.service(target.service or "")
    port = service_port(svc, target.port)
    via = target.via
    if via == "nodePort":
        node = plan.node(target.node) if target.node else plan.nodes[0]
        return Aim(node.ip, int(port.node_port or 0), port.protocol, svc, port)
    if via == "loadBalancer":
        return Aim(svc.lb_ips[0], port.port, port.protocol, svc, port)
    if via == "externalIP":
        return Aim(svc.external_ips[0], port.port, port.protocol, svc, port)
    return Aim(svc.cluster_ip or "", port.port, port.protocol, svc, port)
