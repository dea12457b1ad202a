"""Reading the Lab object (nodes, network, clients, kube-proxy, load balancer) and Node objects."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from testbed.core.model import (
    HealthCheckConfig,
    LoadBalancerConfig,
)
from testbed.core.scenario.types import (
    IMPLEMENTATIONS,
    KNOWN_FAULTS,
    MAX_NODES,
    MIN_CHECK_INTERVAL,
    MIN_CHECK_TIMEOUT,
    RESERVED_NAMES,
    VERSION,
    ClientSpec,
    KubeProxySpec,
    LabNode,
    LabSpec,
    Loc,
    NetworkSpec,
    NodeObject,
    Taint,
)
from testbed.core.scenario.values import (
    _LABEL_VALUE,
    _V,
    _check_label_key,
    _few,
    _kind,
    _node_name,
    _pairs,
    _seconds,
    _source_clash,
    _special_range,
    _taken,
    _words,
)
from testbed.core.topology import IFNAME_MAX
from testbed.core.yamlsrc import YMap, one_line, show


class LabReading:
    """The Lab object (nodes, network, clients, kube-proxy, load balancer) and Node objects.

    One part of the reader: `self` is the `_Reader` this class is mixed into.
    """

    def _read_lab(self, obj: _V, order: int) -> None:
        obj.mapping(("apiVersion", "kind", "metadata", "spec"))
        meta = obj.need("metadata").mapping(("name", "description"), ("labels", "annotations"))
        name = meta.need("name").dns_label(what="lab name")
        description_v = meta.get("description")
        # printed on the user's terminal: control characters are shown, never sent
        description = (
            one_line(" ".join(description_v.string(empty=True).split())) if description_v else ""
        )
        spec = obj.get("spec") or _V(YMap(obj.loc.line), obj.key_loc("spec"))
        spec.mapping(
            (
                "proxyMode",
                "nodes",
                "network",
                "clients",
                "loadBalancer",
                "kubeProxy",
                "probes",
                "steps",
            )
        )
        locs: dict[str, Loc] = {"lab": obj.loc}
        proxy_v = spec.get("proxyMode")
        proxy_mode = proxy_v.enum("iptables", "nftables") if proxy_v else "iptables"
        nodes = self._lab_nodes(spec, locs)
        network = self._network(spec, locs)
        kube_proxy = self._kube_proxy(spec.get("kubeProxy"))
        load_balancer = self._load_balancer(spec.get("loadBalancer"), nodes)
        self.lab = LabSpec(
            name=name,
            description=description,
            proxy_mode=proxy_mode,
            nodes=nodes,
            network=network,
            load_balancer=load_balancer,
            kube_proxy=kube_proxy,
            locs=locs,
        )
        for node in nodes:
            self.seen.claim("source", node.name, node.loc, _source_clash(node.name))
        self.lab = replace(self.lab, clients=self._clients(spec.get("clients")))
        self.lab_probes = spec.get("probes")
        self.lab_steps = spec.get("steps")

    def _lab_nodes(self, spec: _V, locs: dict[str, Loc]) -> tuple[LabNode, ...]:
        nodes_v = spec.get("nodes")
        if nodes_v is None:
            locs["nodes"] = spec.loc
            return (LabNode("node-1", loc=spec.loc),)
        locs["nodes"] = nodes_v.loc
        if isinstance(nodes_v.value, int) and not isinstance(nodes_v.value, bool):
            count = nodes_v.integer(1, MAX_NODES, f"{nodes_v.value} nodes: must be 1-{MAX_NODES}")
            return tuple(LabNode(f"node-{k}", loc=nodes_v.loc) for k in range(1, count + 1))
        if not isinstance(nodes_v.value, list):
            nodes_v.fail(f"must be a count or a list of {{name: ...}}, not {_kind(nodes_v.value)}")
        items = nodes_v.items()
        if not items:
            nodes_v.fail("must list at least one node")
        if len(items) > MAX_NODES:
            nodes_v.fail(f"{len(items)} nodes: must be 1-{MAX_NODES}")
        out = []
        for item in items:
            item.mapping(("name", "labels", "zone"))
            name_v = item.need("name")
            name = _node_name(name_v)
            if name in RESERVED_NAMES:
                name_v.fail(f"{name!r} is reserved for the lab's router")
            labels_v = item.get("labels")
            labels = labels_v.string_map() if labels_v else {}
            zone = None
            if (zone_v := item.get("zone")) is not None:
                zone = zone_v.string()
                if len(zone) > 63 or not _LABEL_VALUE.fullmatch(zone):
                    zone_v.fail(f"{show(zone)} is not a valid label value")
            self.seen.claim("node", name, name_v.loc, _taken("node", name))
            out.append(LabNode(name, _pairs(labels), name_v.loc, zone))
        return tuple(out)

    def _network(self, spec: _V, locs: dict[str, Loc]) -> NetworkSpec:
        defaults = NetworkSpec()
        net_v = spec.get("network")
        keys = ("nodeCIDR", "podCIDR", "serviceCIDR", "externalCIDR")
        if net_v is not None:
            net_v.mapping(keys)
        lb_v = spec.get("loadBalancer")
        values: dict[str, str] = {}
        declared: list[tuple[str, ipaddress.IPv4Network, Loc, bool]] = []
        attrs = ("node_cidr", "pod_cidr", "service_cidr", "external_cidr", "vip_cidr")
        for key, attr in zip(keys + ("vipCIDR",), attrs, strict=True):
            holder = lb_v if key == "vipCIDR" else net_v
            value_v = (
                holder.get(key) if holder is not None and isinstance(holder.value, dict) else None
            )
            if value_v is not None:
                net = value_v.cidr()
                if net.prefixlen > 30:
                    value_v.fail(f"{net} is too small; use a /30 or larger")
                if (special := _special_range(net)) is not None:
                    value_v.fail(
                        f"{net} overlaps {special}: the lab needs usable unicast addresses"
                    )
                loc, explicit = value_v.loc, True
            else:
                net = ipaddress.IPv4Network(getattr(defaults, attr))
                loc, explicit = spec.loc, False
            prefix = "loadBalancer." if key == "vipCIDR" else "network."
            locs[key] = loc
            values[attr] = str(net)
            self.nets[key] = net
            declared.append((prefix + key, net, loc, explicit))
        for i, one in enumerate(declared):
            for other in declared[:i]:
                if one[1].overlaps(other[1]):
                    # blame what the user wrote: the later line when both were written
                    mine, theirs = sorted((one, other), key=lambda d: (d[3], d[2].line))[::-1]
                    default = "" if theirs[3] else " (the default)"
                    raise mine[2].error(f"{mine[1]} overlaps {theirs[0]} {theirs[1]}{default}")
        return NetworkSpec(**values)

    def _clients(self, clients_v: _V | None) -> tuple[ClientSpec, ...]:
        if clients_v is None:
            return ()
        external = self.nets["externalCIDR"]
        out = []
        for item in clients_v.items():
            item.mapping(("name", "ip"))
            name_v = item.need("name")
            name = name_v.dns_label(IFNAME_MAX, "client name")
            if name in RESERVED_NAMES:
                name_v.fail(f"{name!r} is reserved for the lab's router")
            self.seen.claim("source", name, name_v.loc, _source_clash(name))
            ip_v = item.get("ip")
            ip = None
            if ip_v is not None:
                ip = ip_v.ipv4()
                address = ipaddress.IPv4Address(ip)
                if address not in external:
                    ip_v.fail(f"{ip} is outside externalCIDR {external}, where clients live")
                if address in (external.network_address, external.broadcast_address):
                    ip_v.fail(f"{ip} is the network or broadcast address of {external}")
                if address == external.network_address + 1:
                    ip_v.fail(f"{ip} is the edge router's address on {external}")
                self.seen.claim("client-ip", ip, ip_v.loc, _taken("client address", ip))
            out.append(ClientSpec(name, ip, name_v.loc))
        return tuple(out)

    def _kube_proxy(self, kp_v: _V | None) -> KubeProxySpec:
        if kp_v is None:
            return KubeProxySpec()
        kp_v.mapping(
            (
                "masqueradeAll",
                "detectLocalMode",
                "localhostNodePorts",
                "whatIf",
                "nodePortAddresses",
                "implementation",
                "version",
                "conntrack",
            )
        )
        out = KubeProxySpec()
        if (v := kp_v.get("implementation")) is not None:
            out = replace(out, implementation=v.enum(*IMPLEMENTATIONS))
        if (v := kp_v.get("version")) is not None:
            text = v.string()
            if not VERSION.fullmatch(text):
                v.fail(f"{show(text)} is not a Kubernetes version like v1.37.2")
            out = replace(out, version="v" + text.removeprefix("v"))
        if (v := kp_v.get("conntrack")) is not None:
            v.mapping(("tcpBeLiberal",))
            if (liberal := v.get("tcpBeLiberal")) is not None:
                out = replace(out, tcp_be_liberal=liberal.boolean())
        if (v := kp_v.get("masqueradeAll")) is not None:
            out = replace(out, masquerade_all=v.boolean())
        if (v := kp_v.get("detectLocalMode")) is not None:
            out = replace(out, detect_local_mode=v.enum("ClusterCIDR", "NodeCIDR", "None"))
        if (v := kp_v.get("localhostNodePorts")) is not None:
            out = replace(out, localhost_nodeports=v.boolean())
        if (v := kp_v.get("nodePortAddresses")) is not None:
            entries: list[str] = []
            for item in v.items():
                entry = "primary" if item.value == "primary" else str(item.cidr(strict=True))
                if entry not in entries:
                    entries.append(entry)
            out = replace(out, node_port_addresses=tuple(entries))
        if (v := kp_v.get("whatIf")) is not None:
            faults = []
            for item in v.items():
                fault = item.string()
                if fault not in KNOWN_FAULTS:
                    item.fail(
                        f"unknown fault {show(fault)} (known: {', '.join(sorted(KNOWN_FAULTS))})"
                    )
                if fault not in faults:
                    faults.append(fault)
            out = replace(out, what_if=tuple(faults))
        return out

    def _load_balancer(self, lb_v: _V | None, nodes: tuple[LabNode, ...]) -> LoadBalancerConfig:
        if lb_v is None:
            return LoadBalancerConfig()
        lb_v.mapping(("vipCIDR", "mode", "node", "healthChecks", "healthCheck"))
        mode_v = lb_v.get("mode")
        mode = mode_v.enum("ecmp", "single") if mode_v else "ecmp"
        node = None
        if (node_v := lb_v.get("node")) is not None:
            node = node_v.string()
            if node not in {n.name for n in nodes}:
                node_v.fail(f"no node named {show(node)} in the lab")
        checks_v = lb_v.get("healthChecks")
        health = HealthCheckConfig()
        if (hc_v := lb_v.get("healthCheck")) is not None:
            hc_v.mapping(
                ("intervalSeconds", "timeoutSeconds", "healthyThreshold", "unhealthyThreshold")
            )
            if (v := hc_v.get("intervalSeconds")) is not None:
                health = replace(health, interval=_seconds(v, MIN_CHECK_INTERVAL))
            if (v := hc_v.get("timeoutSeconds")) is not None:
                health = replace(health, timeout=_seconds(v, MIN_CHECK_TIMEOUT))
            if (v := hc_v.get("healthyThreshold")) is not None:
                health = replace(health, healthy_threshold=v.integer(1, 10))
            if (v := hc_v.get("unhealthyThreshold")) is not None:
                health = replace(health, unhealthy_threshold=v.integer(1, 10))
        return LoadBalancerConfig(
            mode=mode,
            node=node,
            health_checks=checks_v.boolean() if checks_v else True,
            health=health,
        )

    # Node

    def _read_node(self, obj: _V, order: int) -> None:
        obj.mapping(("apiVersion", "kind", "metadata", "spec", "status"))
        assert self.lab is not None
        name, _, labels, meta = self._metadata(obj, namespaced=False)
        names = [n.name for n in self.lab.nodes]
        if name not in names:
            meta.need("name").fail(
                f"Node {show(name)} is not one of the lab's nodes ({_few(names)})"
            )
        self.seen.claim("Node", name, meta.key_loc("name"), _taken("Node object", name))
        pod_cidr = ip = None
        cidr_loc = ip_loc = obj.loc
        taints: list[Taint] = []
        if (spec := obj.get("spec")) is not None:
            spec.mapping(
                ("podCIDR", "podCIDRs", "taints", "unschedulable"),
                ("providerID", "externalID", "configSource"),
            )
            for item in spec.get("taints").items() if spec.get("taints") else ():
                item.mapping(("key", "value", "effect"), ("timeAdded",))
                key_v = item.need("key")
                _check_label_key(key_v, key_v.string(), "taint")
                value_v = item.get("value")
                effect = item.need("effect").enum("NoSchedule", "PreferNoSchedule", "NoExecute")
                taints.append(
                    Taint(key_v.value, value_v.string(empty=True) if value_v else "", effect)
                )
            if (unsched_v := spec.get("unschedulable")) is not None and unsched_v.boolean():
                taints.append(Taint("node.kubernetes.io/unschedulable", "", "NoSchedule"))
            cidr_v = spec.get("podCIDR")
            cidrs_v = spec.get("podCIDRs")
            if cidrs_v is not None:
                cidrs = cidrs_v.items()
                if len(cidrs) > 1:
                    cidrs_v.fail("dual-stack pod CIDRs are not modelled; give one IPv4 CIDR")
                if cidrs:
                    first = str(cidrs[0].cidr())
                    if cidr_v is not None and str(cidr_v.cidr()) != first:
                        cidrs[0].fail(f"{first} must match podCIDR {cidr_v.value}")
                    cidr_v = cidr_v or cidrs[0]
            if cidr_v is not None:
                net = cidr_v.cidr()
                cluster = self.nets["podCIDR"]
                if not net.subnet_of(cluster):
                    cidr_v.fail(f"{net} is not inside the lab's podCIDR {cluster}")
                if net.prefixlen > 30:
                    cidr_v.fail(f"{net} is too small for a node's pods; use a /30 or larger")
                pod_cidr, cidr_loc = str(net), cidr_v.loc
        if (status := obj.get("status")) is not None:
            status.mapping(
                ("addresses",),
                _words(
                    "capacity allocatable conditions daemonEndpoints nodeInfo images phase "
                    "volumesInUse volumesAttached config runtimeHandlers features"
                ),
            )
            for item in status.get("addresses").items() if status.get("addresses") else ():
                item.mapping(("type", "address"))
                if item.need("type").string() != "InternalIP" or ip is not None:
                    continue
                addr_v = item.need("address")
                ip, ip_loc = self._fabric_ip(addr_v), addr_v.loc
                self.seen.claim("node-ip", ip, addr_v.loc, _taken("node address", ip))
        self.node_objects[name] = NodeObject(
            name, _pairs(labels), pod_cidr, ip, obj.loc, cidr_loc, ip_loc, tuple(taints)
        )

    def _fabric_ip(self, v: _V) -> str:
        ip = v.ipv4()
        fabric = self.nets["nodeCIDR"]
        address = ipaddress.IPv4Address(ip)
        if address not in fabric:
            v.fail(f"{ip} is outside the lab's nodeCIDR {fabric}")
        if address in (fabric.network_address, fabric.broadcast_address):
            v.fail(f"{ip} is the network or broadcast address of {fabric}")
        if address == fabric.network_address + 1:
            v.fail(f"{ip} is the edge router's address on {fabric}")
        return ip

    # Service
