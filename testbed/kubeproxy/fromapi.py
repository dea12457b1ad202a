"""Services and EndpointSlices read back from a real API server, as the plan's types.

In upstream mode the API server is the truth: a Service patched with kubectl changes
what the real kube-proxy writes, so the oracle must predict from what the API server
holds, not from the scenario. `services(plan, listing)` takes the JSON of
`kubectl get services,endpointslices -A -o json` (a v1 List) and returns ServicePlans
the renderers and the oracle take. Pure: no I/O, no kubectl.

What is read and why:

- Service spec: type, clusterIP, ports (name, port, protocol, targetPort, nodePort),
  healthCheckNodePort, external/internalTrafficPolicy, sessionAffinity and its timeout,
  externalIPs, loadBalancerSourceRanges; status.loadBalancer.ingress[].ip (kube-proxy
  reads the status, never the deprecated spec.loadBalancerIP).
- EndpointSlice endpoints: the first address (kube-proxy uses only that one), nodeName,
  ready/serving/terminating (unset ready means ready, unset serving means ready, unset
  terminating means false, as kube-proxy reads them), targetRef's pod name. `zone` is
  accepted and dropped: kube-proxy never reads it, only hints.
- Ignored: the API server's own `default/kubernetes` Service (the lab's model has no
  API server to route to, and its endpoint is the management address, outside every
  probe path), and EndpointSlices whose `endpointslice.kubernetes.io/managed-by` is not
  `testbed`. No controller-manager runs in a lab, so the testbed is the only writer of
  slices for the scenario's Services; the one other writer is the API server's endpoint
  reconciler, whose `default/kubernetes` slice carries no managed-by label. A slice
  written by hand must carry `managed-by: testbed` to be seen here (kube-proxy itself
  reads every slice of a Service, whoever wrote it).
- Headless Services (clusterIP None) are kept with cluster_ip None: kube-proxy skips them.
  An ExternalName Service the plan does not have is skipped too (kube-proxy writes nothing
  for it); one of the plan's turned into ExternalName is refused, its probes would have
  no Service to reach.

Anything the model cannot express (trafficDistribution, topology hints, a planned Service
turned ExternalName, SCTP, IPv6 or dual-stack, ipMode Proxy) is a FromApiError naming the
object and field: predicting without it would be predicting a different cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from testbed.core.errors import TestbedError
from testbed.core.model import Endpoint, Plan, PortPlan, ServicePlan

MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SERVICE_NAME = "kubernetes.io/service-name"
TESTBED = "testbed"
API_SERVER_SERVICE = "default/kubernetes"
DEFAULT_AFFINITY_TIMEOUT = 10800  # v1.DefaultClientIPServiceAffinitySeconds
PROTOCOLS = ("TCP", "UDP")


class FromApiError(TestbedError, ValueError):
    """An object the API server holds that the lab's model cannot express (one line)."""


def _where(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', 'object')} {meta.get('namespace', '')}/{meta.get('name', '?')}"


def _fail(obj: Mapping[str, Any], field: str, why: str) -> FromApiError:
    return FromApiError(f"{_where(obj)}: {field}: {why}")


def services(plan: Plan, listing: Mapping[str, Any]) -> tuple[ServicePlan, ...]:
    """The Services the API server holds, as the plan's types.

    The plan's Services come first in its order, then any the API server has that the
    plan does not (created with kubectl), by namespace/name; a plan Service deleted from
    the API server is absent. Endpoints the plan already has keep its order (and pod
    names); new ones follow, by address. An endpoint's pod is targetRef's name, or the
    plan's pod at that address.
    """
    if not isinstance(listing, Mapping) or not isinstance(listing.get("items"), list):
        raise FromApiError("the listing is not a v1 List (no `items`)")
    svcs: dict[str, dict[str, Any]] = {}
    slices: dict[str, list[dict[str, Any]]] = {}
    for item in listing["items"]:
        kind = item.get("kind") if isinstance(item, Mapping) else None
        meta = (item.get("metadata") or {}) if kind else {}
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        if kind == "Service":
            if key != API_SERVER_SERVICE:
                svcs[key] = item
        elif kind == "EndpointSlice":
            labels = meta.get("labels") or {}
            if labels.get(MANAGED_BY) != TESTBED:
                continue
            service = labels.get(SERVICE_NAME)
            if not service:
                raise _fail(item, f"metadata.labels[{SERVICE_NAME}]", "missing")
            slices.setdefault(f"{meta.get('namespace', '')}/{service}", []).append(item)
        else:
            raise FromApiError(f"unexpected {kind or 'item'} {key} in the listing")
    known = {s.key: s for s in plan.services}
    for key in [k for k, obj in svcs.items() if k not in known]:
        if (svcs[key].get("spec") or {}).get("type") == "ExternalName":
            del svcs[key]  # a DNS name only: kube-proxy writes nothing for it
    order = [k for k in known if k in svcs] + sorted(k for k in svcs if k not in known)
    pods_by_ip = {p.ip: p.name for p in plan.pods}
    return tuple(
        _service(svcs[key], slices.get(key, []), known.get(key), pods_by_ip) for key in order
    )


def with_services(plan: Plan, listing: Mapping[str, Any]) -> Plan:
    """The plan with its Services replaced by what the API server holds (for the oracle)."""
    return replace(plan, services=services(plan, listing))


def _service(
    obj: Mapping[str, Any],
    slices: list[dict[str, Any]],
    before: ServicePlan | None,
    pods_by_ip: Mapping[str, str],
) -> ServicePlan:
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    svc_type = spec.get("type", "ClusterIP")
    if svc_type not in ("ClusterIP", "NodePort", "LoadBalancer"):
        raise _fail(obj, "spec.type", f"{svc_type} is not modelled (kube-proxy writes no rules)")
    if spec.get("trafficDistribution"):
        raise _fail(
            obj,
            "spec.trafficDistribution",
            f"{spec['trafficDistribution']} is not modelled: the lab does not do "
            "topology-aware routing",
        )
    cluster_ip = spec.get("clusterIP")
    if cluster_ip in (None, "", "None"):
        cluster_ip = None  # headless (its ipFamilies may say dual-stack: nothing is allocated)
    elif len(spec.get("clusterIPs") or ()) > 1 or ":" in cluster_ip:
        families = spec.get("ipFamilies")
        raise _fail(obj, "spec.ipFamilies", f"{families} is not modelled; the lab is IPv4 only")
    ports = tuple(_ports(obj, spec, slices, before, pods_by_ip))
    affinity = spec.get("sessionAffinity", "None")
    timeout = None
    if affinity == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        timeout = int(config.get("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT))
    elif affinity != "None":
        raise _fail(obj, "spec.sessionAffinity", f"{affinity!r} is not None or ClientIP")
    return ServicePlan(
        namespace=meta["namespace"],
        name=meta["name"],
        type=svc_type,
        cluster_ip=cluster_ip,
        ports=ports,
        external_ips=tuple(spec.get("externalIPs") or ()),
        lb_ips=_ingress(obj),
        external_policy=_policy(obj, spec, "externalTrafficPolicy"),
        internal_policy=_policy(obj, spec, "internalTrafficPolicy"),
        health_check_node_port=spec.get("healthCheckNodePort") or None,
        affinity_timeout=timeout,
        source_ranges=tuple(spec.get("loadBalancerSourceRanges") or ()),
    )


def _policy(obj: Mapping[str, Any], spec: Mapping[str, Any], field: str) -> str:
    value = spec.get(field) or "Cluster"
    if value not in ("Cluster", "Local"):
        raise _fail(obj, f"spec.{field}", f"{value!r} is not Cluster or Local")
    return value


def _ingress(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """status.loadBalancer.ingress IPs; hostname-only entries are skipped, as kube-proxy does."""
    entries = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    out: list[str] = []
    for n, entry in enumerate(entries):
        if entry.get("ipMode", "VIP") == "Proxy":
            raise _fail(
                obj,
                f"status.loadBalancer.ingress[{n}].ipMode",
                "Proxy is not modelled: the lab's edge is a pass-through load balancer",
            )
        ip = entry.get("ip")
        if ip and ip not in out:
            out.append(ip)
    return tuple(out)


def _ports(
    obj: Mapping[str, Any],
    spec: Mapping[str, Any],
    slices: list[dict[str, Any]],
    before: ServicePlan | None,
    pods_by_ip: Mapping[str, str],
) -> list[PortPlan]:
    out = []
    for n, port in enumerate(spec.get("ports") or []):
        protocol = port.get("protocol", "TCP")
        if protocol not in PROTOCOLS:
            raise _fail(obj, f"spec.ports[{n}].protocol", f"{protocol} is not modelled")
        name = port.get("name") or ""
        previous = None
        if before is not None:
            previous = next(
                (p for p in before.ports if (p.name, p.protocol) == (name, protocol)), None
            )
        endpoints = _endpoints(name, protocol, slices, pods_by_ip)
        out.append(
            PortPlan(
                name=name,
                port=int(port["port"]),
                protocol=protocol,
                node_port=port.get("nodePort") or None,
                target_port=port.get("targetPort", port["port"]),
                endpoints=_in_order(endpoints, previous),
            )
        )
    return out


def _endpoints(
    name: str, protocol: str, slices: list[dict[str, Any]], pods_by_ip: Mapping[str, str]
) -> list[Endpoint]:
    """Every endpoint of one service port across its slices, once per ip:port."""
    out: list[Endpoint] = []
    seen: set[tuple[str, int]] = set()
    for sl in slices:
        family = sl.get("addressType", "IPv4")
        if family != "IPv4":
            raise _fail(sl, "addressType", f"{family} is not modelled; the lab is IPv4 only")
        for sport in sl.get("ports") or []:
            if (sport.get("name") or "", sport.get("protocol", "TCP")) != (name, protocol):
                continue
            number = sport.get("port")
            if number is None:  # kube-proxy skips a slice port without a number
                continue
            for n, ep in enumerate(sl.get("endpoints") or []):
                if ep.get("hints"):
                    raise _fail(
                        sl,
                        f"endpoints[{n}].hints",
                        "topology hints are not modelled: the lab does not do "
                        "topology-aware routing",
                    )
                addresses = ep.get("addresses") or []
                if not addresses:
                    raise _fail(sl, f"endpoints[{n}].addresses", "empty")
                ip = addresses[0]
                if (ip, number) in seen:
                    continue
                seen.add((ip, number))
                cond = ep.get("conditions") or {}
                ready = cond.get("ready") is not False
                ref = ep.get("targetRef") or {}
                pod = ref.get("name", "") if ref.get("kind", "Pod") == "Pod" else ""
                out.append(
                    Endpoint(
                        ip=ip,
                        port=int(number),
                        node=ep.get("nodeName") or "",
                        pod=pod or pods_by_ip.get(ip, ""),
                        ready=ready,
                        serving=cond.get("serving", ready) is not False,
                        terminating=cond.get("terminating") is True,
                    )
                )
    return out


def _in_order(endpoints: list[Endpoint], previous: PortPlan | None) -> tuple[Endpoint, ...]:
    """The plan's endpoints in the plan's order, then new ones by address and port."""
    rank = {(ep.ip, ep.port): n for n, ep in enumerate(previous.endpoints if previous else ())}
    known = [ep for ep in endpoints if (ep.ip, ep.port) in rank]
    new = [ep for ep in endpoints if (ep.ip, ep.port) not in rank]
    known.sort(key=lambda ep: rank[ep.ip, ep.port])
    new.sort(key=lambda ep: (tuple(int(x) for x in ep.ip.split(".")), ep.port))
    return (*known, *new)
