"""A plan's Services and EndpointSlices as Kubernetes objects, for the API server round trip.

The tests write these with kubectl into a real API server (tests/data/upstream/ holds
what it answered) and read them back with testbed.kubeproxy.fromapi. Slices are grouped
as the EndpointSlice controller groups them: endpoints sharing one set of ports go into
one slice, so a named targetPort that resolves differently per pod still round-trips.
"""

from __future__ import annotations

from typing import Any

from testbed.core.model import Endpoint, Plan, ServicePlan

MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SERVICE_NAME = "kubernetes.io/service-name"
TESTBED = "testbed"


def service(svc: ServicePlan) -> dict[str, Any]:
    """The Service as created (spec) and as its status subresource is then patched."""
    ports = []
    for port in svc.ports:
        item: dict[str, Any] = {"port": port.port, "protocol": port.protocol}
        if port.name:
            item["name"] = port.name
        item["targetPort"] = port.target_port or port.port
        if port.node_port is not None:
            item["nodePort"] = port.node_port
        ports.append(item)
    spec: dict[str, Any] = {
        "type": svc.type,
        "clusterIP": svc.cluster_ip or "None",
        "ports": ports,
        "internalTrafficPolicy": svc.internal_policy,
    }
    if svc.type != "ClusterIP":
        spec["externalTrafficPolicy"] = svc.external_policy
    if svc.external_ips:
        spec["externalIPs"] = list(svc.external_ips)
    if svc.health_check_node_port is not None:
        spec["healthCheckNodePort"] = svc.health_check_node_port
    if svc.affinity_timeout is not None:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": svc.affinity_timeout}}
    if svc.source_ranges:
        spec["loadBalancerSourceRanges"] = list(svc.source_ranges)
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc.name, "namespace": svc.namespace},
        "spec": spec,
    }
    if svc.lb_ips:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in svc.lb_ips]}}
    return obj


def _conditions(ep: Endpoint) -> dict[str, bool]:
    return {"ready": ep.ready, "serving": ep.serving, "terminating": ep.terminating}


def slices(svc: ServicePlan) -> list[dict[str, Any]]:
    """One slice per distinct port set, endpoints in the plan's order."""
    by_ip: dict[str, tuple[Endpoint, list[tuple[str, int, str]]]] = {}
    for port in svc.ports:
        for ep in port.endpoints:
            first, ports = by_ip.setdefault(ep.ip, (ep, []))
            ports.append((port.name, ep.port, port.protocol))
    groups: dict[tuple[tuple[str, int, str], ...], list[Endpoint]] = {}
    for ep, ports in by_ip.values():
        groups.setdefault(tuple(ports), []).append(ep)
    if not groups:  # a slice with no endpoints, as the controller leaves it
        groups[tuple((p.name, p.port, p.protocol) for p in svc.ports)] = []
    out = []
    for n, (ports, endpoints) in enumerate(groups.items()):
        out.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{svc.name}-{n}",
                    "namespace": svc.namespace,
                    "labels": {SERVICE_NAME: svc.name, MANAGED_BY: TESTBED},
                },
                "addressType": "IPv4",
                "ports": [
                    {"name": name, "port": number, "protocol": proto}
                    for name, number, proto in ports
                ],
                "endpoints": [
                    {
                        "addresses": [ep.ip],
                        "conditions": _conditions(ep),
                        "nodeName": ep.node,
                        **(
                            {
                                "targetRef": {
                                    "kind": "Pod",
                                    "name": ep.pod,
                                    "namespace": svc.namespace,
                                }
                            }
                            if ep.pod
                            else {}
                        ),
                    }
                    for ep in endpoints
                ],
            }
        )
    return out


def manifests(plan: Plan) -> list[dict[str, Any]]:
    """Every Service, then every EndpointSlice, of the plan."""
    return [service(s) for s in plan.services] + [sl for s in plan.services for sl in slices(s)]


def as_list(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """A v1 List, the shape `kubectl get -o json` prints."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": objects,
    }
