"""The API objects and files of an upstream-mode lab, as pure functions of the Plan.

In upstream mode the real kube-proxy reads Nodes, Services and EndpointSlices from a
real API server, and the lab plays kubelet and the controllers that would write them.
Everything here only decides: what each object says, what each process's config file
says and which management addresses the control plane uses. kernel/controlplane.py and
live/upstream.py make it real. Manifests are plain dicts (JSON is YAML), so kubectl
takes them as they are.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from testbed.core.errors import LabError
from testbed.core.model import NodePlan, Plan, ServicePlan

MANAGER = "testbed"  # endpointslice.kubernetes.io/managed-by and the field manager
ZONE_LABEL = "topology.kubernetes.io/zone"
# Candidates for the management network, tried in order: the first that overlaps nothing
# the scenario uses wins. A /24: the API server is .1, node k is .(10 + k).
MANAGEMENT_CANDIDATES = ("192.168.216.0/24", "172.31.216.0/24", "10.255.216.0/24")
API_PORT = 6443
HEALTHZ_PORT = 10256
METRICS_PORT = 10249
DEFAULT_NODE_PORTS = (30000, 32767)
# Names no scenario can use: underscores are never valid in Kubernetes names.
CONTROL_PLANE_NS = "_cp"  # the short name of the control plane's namespace
NODE_IFNAME = "mgmt_0"  # the management veth inside a node
UNSUPPORTED_FAULTS = (
    "no-snat",
    "no-conntrack-cleanup",
    "no-invalid-drop",
)  # whatIf faults only our renderer can commit


@dataclass(frozen=True)
class Management:
    """The management network: the API server's address and one per node."""

    cidr: str
    apiserver: str
    nodes: tuple[tuple[str, str], ...]  # (node name, address)

    @property
    def prefix(self) -> int:
        return ipaddress.IPv4Network(self.cidr).prefixlen

    def node_ip(self, node: str) -> str:
        return dict(self.nodes)[node]

    @property
    def server(self) -> str:
        return f"https://{self.apiserver}:{API_PORT}"


def _used_networks(plan: Plan) -> list[tuple[str, ipaddress.IPv4Network]]:
    net = plan.network
    used = [
        ("nodeCIDR", net.node_cidr),
        ("podCIDR", net.pod_cidr),
        ("serviceCIDR", net.service_cidr),
        ("externalCIDR", net.external_cidr),
        ("vipCIDR", net.vip_cidr),
    ]
    for node in plan.nodes:
        used += [(f"node {node.name}", f"{node.ip}/32"), (f"node {node.name}", node.pod_cidr)]
    for svc in plan.services:
        used += [(f"service {svc.key}", f"{ip}/32") for ip in (*svc.external_ips, *svc.lb_ips)]
    return [(what, ipaddress.IPv4Network(cidr, strict=False)) for what, cidr in used]


def management(plan: Plan) -> Management:
    """The first candidate network that clashes with nothing the scenario uses."""
    used = _used_networks(plan)
    clashes = []
    for cidr in MANAGEMENT_CANDIDATES:
        net = ipaddress.IPv4Network(cidr)
        hit = next((what for what, other in used if net.overlaps(other)), None)
        if hit is not None:
            clashes.append(f"{cidr} ({hit})")
            continue
        if len(plan.nodes) > net.num_addresses - 12:
            raise LabError(f"upstream mode: {len(plan.nodes)} nodes do not fit {cidr}")
        nodes = tuple((n.name, str(net.network_address + 10 + n.index)) for n in plan.nodes)
        return Management(cidr, str(net.network_address + 1), nodes)
    raise LabError(
        "upstream mode: no management network is free of the scenario's addresses: "
        + ", ".join(clashes)
    )


def check(plan: Plan) -> None:
    """Refuse, before anything exists, what the real control plane cannot hold."""
    management(plan)
    faults = [f for f in plan.proxy.what_if if f in UNSUPPORTED_FAULTS]
    if faults:
        raise LabError(
            f"whatIf {', '.join(faults)} is a fault of the built-in renderer;"
            " the real kube-proxy cannot commit it (use --kube-proxy builtin)"
        )
    kubernetes_ip = str(ipaddress.IPv4Network(plan.network.service_cidr).network_address + 1)
    for svc in plan.services:
        if svc.cluster_ip == kubernetes_ip:
            raise LabError(
                f"service {svc.key}: clusterIP {kubernetes_ip} is the API server's own"
                " (default/kubernetes) in upstream mode; choose another"
            )


def node_port_range(plan: Plan) -> str:
    """The API server's NodePort range: the default, widened to every port the plan gives."""
    ports = [p.node_port for s in plan.services for p in s.ports if p.node_port]
    ports += [s.health_check_node_port for s in plan.services if s.health_check_node_port]
    low = min([DEFAULT_NODE_PORTS[0], *ports])
    high = max([DEFAULT_NODE_PORTS[1], *ports])
    return f"{low}-{high}"


# -- objects ---------------------------------------------------------------------


def namespaces(plan: Plan) -> list[dict]:
    names = sorted({s.namespace for s in plan.services} - {"default"})
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}} for name in names]


def node_manifest(node: NodePlan) -> dict:
    """A Node as kubelet registers it: labels, podCIDR and addresses (status kept on create)."""
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        **dict(node.labels),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels},
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.ip},
                {"type": "Hostname", "address": node.name},
            ],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def service_manifest(svc: ServicePlan) -> dict:
    """The Service with everything the plan decided given explicitly (no allocation)."""
    ports = []
    for port in svc.ports:
        item: dict = {"port": port.port, "protocol": port.protocol}
        if port.name:
            item["name"] = port.name
        item["targetPort"] = port.target_port or port.port
        if port.node_port and svc.type in ("NodePort", "LoadBalancer"):
            item["nodePort"] = port.node_port
        ports.append(item)
    spec: dict = {
        "type": svc.type,
        "ports": ports,
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": svc.internal_policy,
    }
    if svc.cluster_ip is None:
        spec["clusterIP"] = "None"
    else:
        spec["clusterIP"] = svc.cluster_ip
        spec["clusterIPs"] = [svc.cluster_ip]
    if svc.type in ("NodePort", "LoadBalancer"):
        spec["externalTrafficPolicy"] = svc.external_policy
    if svc.type == "LoadBalancer":
        spec["allocateLoadBalancerNodePorts"] = all(p.node_port for p in svc.ports)
        if svc.source_ranges:
            spec["loadBalancerSourceRanges"] = list(svc.source_ranges)
        if svc.external_policy == "Local" and svc.health_check_node_port:
            spec["healthCheckNodePort"] = svc.health_check_node_port
    if svc.external_ips:
        spec["externalIPs"] = list(svc.external_ips)
    if svc.affinity_timeout is not None:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": svc.affinity_timeout}}
    else:
        spec["sessionAffinity"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc.name, "namespace": svc.namespace},
        "spec": spec,
    }


def service_status(svc: ServicePlan) -> dict | None:
    """status.loadBalancer, as a cloud controller writes it (None: nothing to write)."""
    if svc.type != "LoadBalancer" or not svc.lb_ips:
        return None
    return {"status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in svc.lb_ips]}}}


def slice_manifests(svc: ServicePlan, plan: Plan) -> list[dict]:
    """One EndpointSlice per Service port (kube-proxy merges a Service's slices)."""
    zones = {n.name: dict(n.labels).get(ZONE_LABEL) for n in plan.nodes}
    pods = {p.name: p for p in plan.pods}
    out = []
    for k, port in enumerate(svc.ports):
        endpoints = []
        for ep in port.endpoints:
            item: dict = {
                "addresses": [ep.ip],
                "conditions": {
                    "ready": ep.ready,
                    "serving": ep.serving,
                    "terminating": ep.terminating,
                },
                "nodeName": ep.node,
            }
            if ep.pod:
                namespace = pods[ep.pod].namespace if ep.pod in pods else svc.namespace
                item["targetRef"] = {"kind": "Pod", "namespace": namespace, "name": ep.pod}
            if zones.get(ep.node):
                item["zone"] = zones[ep.node]
            endpoints.append(item)
        slice_port: dict = {"port": _endpoint_port(port), "protocol": port.protocol}
        slice_port["name"] = port.name
        out.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{svc.name}-{k}",
                    "namespace": svc.namespace,
                    "labels": {
                        "kubernetes.io/service-name": svc.name,
                        "endpointslice.kubernetes.io/managed-by": MANAGER,
                    },
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": [slice_port],
            }
        )
    return out


def _endpoint_port(port) -> int:
    """The port the slice lists: every endpoint of one plan port shares it (or the target)."""
    if port.endpoints:
        return port.endpoints[0].port
    return port.target_port if isinstance(port.target_port, int) and port.target_port else port.port


def service_objects(plan: Plan) -> list[dict]:
    """Namespaces, Services and EndpointSlices, in the order they can be created."""
    out = namespaces(plan)
    for svc in plan.services:
        out.append(service_manifest(svc))
        out += slice_manifests(svc, plan)
    return out


def key(obj: dict) -> tuple[str, str, str]:
    """(kind, namespace, name): what identifies an object across two plans."""
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def as_list(objects: list[dict]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


# -- files of the processes --------------------------------------------------------


def tokens_csv(admin: str, proxy: str) -> str:
    """Static tokens: the admin (system:masters) and kube-proxy (system:node-proxier by RBAC)."""
    return f'{admin},admin,admin-uid,"system:masters"\n{proxy},system:kube-proxy,kube-proxy-uid\n'


def kubeconfig(server: str, user: str, token: str) -> str:
    """A kubeconfig with a static token; the lab owns both ends, so no CA is checked."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "lab", "cluster": {"server": server, "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": user}}],
            "current-context": "lab",
        },
        indent=1,
    )


def kube_proxy_config(node: NodePlan, plan: Plan, kubeconfig_path: str) -> str:
    """kube-proxy's config file for one node.

    bindAddress and nodePortAddresses pin kube-proxy to the fabric address: the node also
    has a management address, and with the default nodePortAddresses kube-proxy would
    accept NodePorts there too and could take it as its node IP.
    """
    proxy = plan.proxy
    config: dict = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig_path},
        "hostnameOverride": node.name,
        "bindAddress": node.ip,
        "nodePortAddresses": [
            f"{node.ip}/32" if entry == "primary" else entry
            for entry in proxy.node_port_addresses or ("primary",)
        ],
        "mode": proxy.mode,
        "healthzBindAddress": f"{node.ip}:{HEALTHZ_PORT}",
        "metricsBindAddress": f"{node.ip}:{METRICS_PORT}",
        "conntrack": {"maxPerCore": 0},  # nf_conntrack_max is read-only outside the first ns
    }
    if proxy.tcp_be_liberal:  # kube-proxy sets nf_conntrack_tcp_be_liberal in its netns
        config["conntrack"]["tcpBeLiberal"] = True
    if proxy.detect_local_mode == "None":
        config["detectLocalMode"] = "ClusterCIDR"  # with no clusterCIDR: nothing is local
        config["clusterCIDR"] = ""
    else:
        config["detectLocalMode"] = proxy.detect_local_mode
        config["clusterCIDR"] = proxy.cluster_cidr
    # masqueradeAll lives under the mode's own section (KubeProxyIPTablesConfiguration,
    # KubeProxyNFTablesConfiguration); a top-level key would only be warned about
    config[proxy.mode] = {"masqueradeAll": proxy.masquerade_all}
    if proxy.mode == "iptables":
        config["iptables"]["localhostNodePorts"] = proxy.localhost_nodeports
    return json.dumps(config, indent=1)
