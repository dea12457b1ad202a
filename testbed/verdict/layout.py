"""The lab as the report draws it: who is where, with which address, and the steps in order.

Pure data from the plan (and the scenario's steps), so a saved JSON report carries
everything a picture of the run needs: `testbed report` draws it later without the
scenario file, and without root.
"""

from __future__ import annotations

from collections.abc import Sequence

from testbed.core.model import Plan
from testbed.core.scenario.types import Step


def _ports(plan: Plan) -> list[dict]:
    out = []
    for svc in plan.services:
        ports = []
        for port in svc.ports:
            item: dict = {"name": port.name, "port": port.port, "protocol": port.protocol}
            if port.node_port:
                item["nodePort"] = port.node_port
            ports.append(item)
        entry: dict = {
            "name": svc.key,
            "type": svc.type,
            "clusterIP": svc.cluster_ip,
            "ports": ports,
            "externalTrafficPolicy": svc.external_policy,
            "internalTrafficPolicy": svc.internal_policy,
        }
        if svc.lb_ips:
            entry["loadBalancerIPs"] = list(svc.lb_ips)
        if svc.external_ips:
            entry["externalIPs"] = list(svc.external_ips)
        pods = {e.pod for port in svc.ports for e in port.endpoints if e.pod}
        entry["endpoints"] = sorted(pods)
        if svc.health_check_node_port:
            entry["healthCheckNodePort"] = svc.health_check_node_port
        out.append(entry)
    return out


def step_words(step: Step) -> str:
    """One step as a person would say it, in the scenario's own field names."""
    if step.action == "deletePod":
        return f"delete pod {step.pod}"
    if step.action == "scale":
        return f"scale {step.deployment} to {step.replicas} replicas"
    if step.action == "setPolicy":
        parts = []
        if step.external_policy:
            parts.append(f"externalTrafficPolicy {step.external_policy}")
        if step.internal_policy:
            parts.append(f"internalTrafficPolicy {step.internal_policy}")
        return f"set {' and '.join(parts) or 'policy'} on {step.service}"
    if step.action == "proxyHealthy":
        state = "healthy" if step.healthy else "unhealthy"
        return f"kube-proxy on {step.node} reports {state}"
    if step.action == "edgeHealthChecks":
        return "the edge starts checking health" if step.healthy else "the edge stops checking"
    if step.action == "rollout" and step.rollout is not None:
        r = step.rollout
        return (
            f"roll out {step.deployment} (maxSurge {r.max_surge}, maxUnavailable "
            f"{r.max_unavailable}, ready after {r.readiness_delay:g} s)"
        )
    if step.action == "drainNode":
        return f"drain {step.node} (cordon, ToBeDeletedByClusterAutoscaler, evict its pods)"
    if step.action == "taintNode" and step.taint is not None:
        t = step.taint
        value = f"={t.value}" if t.value else ""
        return f"taint {step.node} {t.key}{value}:{t.effect}"
    if step.action == "waitForHealthChecks":
        return "wait until the edge's health checks have settled"
    if step.action == "load" and step.load is not None:
        until = f"until {step.load.until} ends" if step.load.until else "until the last step ends"
        return f"start a steady load of {step.load.rate:g}/s, {until}"
    if step.action == "probeDuringConvergence":
        return f"probe {step.name} while the edge converges"
    return f"probe {step.name}"


def topology(plan: Plan, steps: Sequence[Step] = ()) -> dict:
    """The report's `topology`: edge, clients, nodes with their pods, services, steps."""
    lb = plan.load_balancer
    return {
        "edge": {
            "externalIP": plan.network.edge_external_ip,
            "fabricIP": plan.network.edge_fabric_ip,
            "mode": lb.mode,
            "healthChecks": lb.health_checks,
        },
        "clients": [{"name": c.name, "ip": c.ip} for c in plan.clients],
        "nodes": [
            {
                "name": n.name,
                "ip": n.ip,
                "podCIDR": n.pod_cidr,
                "pods": [
                    {"name": p.name, "ip": p.ip, "ready": p.ready}
                    for p in plan.pods
                    if p.node == n.name
                ],
            }
            for n in plan.nodes
        ],
        "services": _ports(plan),
        "steps": [
            {
                "name": s.name,
                "action": s.action,
                "words": step_words(s),
                "probe": s.probe is not None or s.load is not None,
                **({"pod": s.pod} if s.pod else {}),
            }
            for s in steps
        ],
    }
