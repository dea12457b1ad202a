"""Changes to a running world, as pure edits of the scenario.

The lab has no controllers: a deleted pod stays deleted, and a scaled
Deployment gets or loses its highest-numbered replicas. Every change returns a
new scenario (and the set of deleted pods); `replan` (core/load.py) turns it into a Plan in
which the pods the lab already runs keep their node and address.
"""

from __future__ import annotations

from dataclasses import replace

from testbed.core.errors import TestbedError
from testbed.core.model import Plan
from testbed.core.scenario import Scenario

POLICIES = ("Cluster", "Local")


class ChangeError(TestbedError, ValueError):
    """The change cannot apply to this world; the message says why in one line."""


def _service_key(name: str) -> str:
    return name if "/" in name else f"default/{name}"


def set_policy(
    scenario: Scenario, service: str, external: str | None = None, internal: str | None = None
) -> Scenario:
    """Flip externalTrafficPolicy and/or internalTrafficPolicy of one Service."""
    key = _service_key(service)
    found = [s for s in scenario.services if f"{s.namespace}/{s.name}" == key]
    if not found:
        raise ChangeError(f"no service {key}")
    svc = found[0]
    for value in (external, internal):
        if value is not None and value not in POLICIES:
            raise ChangeError(f"policy must be Cluster or Local, not {value!r}")
    if external == "Local" and svc.type not in ("NodePort", "LoadBalancer"):
        raise ChangeError(
            f"externalTrafficPolicy Local needs type NodePort or LoadBalancer ({key} is {svc.type})"
        )
    new = replace(
        svc,
        external_policy=external or svc.external_policy,
        internal_policy=internal or svc.internal_policy,
        # the API server drops the health-check port when the policy leaves Local
        health_check_node_port=svc.health_check_node_port if external != "Cluster" else None,
    )
    services = tuple(new if s is svc else s for s in scenario.services)
    return replace(scenario, services=services)


def set_edge_health_checks(scenario: Scenario, on: bool) -> Scenario:
    """Turn the edge's health checks on or off (spec.loadBalancer.healthChecks)."""
    lb = replace(scenario.lab.load_balancer, health_checks=on)
    return replace(scenario, lab=replace(scenario.lab, load_balancer=lb))


def scale(scenario: Scenario, deployment: str, replicas: int) -> Scenario:
    if replicas < 0:
        raise ChangeError(f"replicas must be 0 or more, not {replicas}")
    key = _service_key(deployment)
    found = [
        d
        for d in scenario.deployments
        if f"{d.namespace}/{d.name}" == key and d.kind != "DaemonSet"  # one pod per node
    ]
    if not found:
        raise ChangeError(f"no deployment {key}")
    new = replace(found[0], replicas=replicas)
    deployments = tuple(new if d is found[0] else d for d in scenario.deployments)
    return replace(scenario, deployments=deployments)


def delete_pod(current: Plan, removed: frozenset[str], name: str) -> frozenset[str]:
    if not any(p.name == name for p in current.pods):
        raise ChangeError(f"no pod {name} in the lab")
    return removed | {name}
