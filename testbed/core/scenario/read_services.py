"""Reading service objects: addresses, ports, policies, load balancer fields."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from testbed.core.scenario.types import (
    DEFAULT_AFFINITY_TIMEOUT,
    NODE_PORT_RANGE,
    Loc,
    Service,
    ServicePort,
)
from testbed.core.scenario.values import (
    _SERVICE_SPEC_UNSUPPORTED,
    _V,
    _pairs,
    _protocol,
    _service_name,
    _special_ip,
    _taken,
    _target_port,
    _words,
)
from testbed.core.yamlsrc import show


class ServiceReading:
    """Service objects: addresses, ports, policies, load balancer fields.

    One part of the reader: `self` is the `_Reader` this class is mixed into.
    """

    def _read_service(self, obj: _V, order: int) -> None:
        obj.mapping(("apiVersion", "kind", "metadata", "spec", "status"))
        name, namespace, _, meta = self._metadata(obj, name_check=_service_name)
        key = f"{namespace}/{name}"
        self.seen.claim("Service", key, meta.key_loc("name"), _taken("Service", key))
        spec = obj.need("spec")
        spec.mapping(
            _words(
                "type selector ports clusterIP clusterIPs externalIPs externalTrafficPolicy "
                "internalTrafficPolicy healthCheckNodePort sessionAffinity sessionAffinityConfig "
                "loadBalancerSourceRanges loadBalancerIP allocateLoadBalancerNodePorts "
                "loadBalancerClass ipFamilies ipFamilyPolicy publishNotReadyAddresses"
            ),
            unsupported=_SERVICE_SPEC_UNSUPPORTED,
        )
        type_v = spec.get("type")
        if type_v is not None and type_v.value == "ExternalName":
            type_v.fail(_SERVICE_SPEC_UNSUPPORTED["externalName"])
        svc_type = type_v.enum("ClusterIP", "NodePort", "LoadBalancer") if type_v else "ClusterIP"
        svc = Service(name=name, namespace=namespace, type=svc_type, loc=obj.loc)
        svc = self._service_ips(spec, svc)
        svc = replace(svc, ports=self._service_ports(spec, svc))
        svc = self._service_policies(spec, svc)
        svc = self._service_lb(spec, obj.get("status"), svc)
        if (sel_v := spec.get("selector")) is not None:
            svc = replace(
                svc, selector=_pairs(sel_v.string_map("selector")), selector_loc=sel_v.loc
            )
        if (v := spec.get("publishNotReadyAddresses")) is not None:
            svc = replace(svc, publish_not_ready=v.boolean())
        self.services[key] = svc

    def _service_ips(self, spec: _V, svc: Service) -> Service:
        ip_v = spec.get("clusterIP")
        ips_v = spec.get("clusterIPs")
        if ips_v is not None:
            items = ips_v.items()
            if len(items) > 1:
                ips_v.fail("dual-stack services are not modelled; give one IPv4 ClusterIP")
            if items:
                first = items[0].string(empty=True)
                if ip_v is not None and ip_v.value != first:
                    items[0].fail(f"{show(first)} must match clusterIP {show(ip_v.value)}")
                ip_v = ip_v or items[0]
        for field_name, allowed in (("ipFamilies", ("IPv4",)), ("ipFamilyPolicy", None)):
            fam_v = spec.get(field_name)
            if fam_v is None:
                continue
            if allowed:
                for item in fam_v.items():
                    if item.enum("IPv4", "IPv6") != "IPv4":
                        item.fail("IPv6 is not modelled; the lab is IPv4 only")
            elif (
                fam_v.enum("SingleStack", "PreferDualStack", "RequireDualStack")
                == "RequireDualStack"
            ):
                fam_v.fail("dual-stack services are not modelled; the lab is IPv4 only")
        if ip_v is None or ip_v.string(empty=True) == "":
            return svc
        if ip_v.value == "None":
            if svc.type != "ClusterIP":
                ip_v.fail(f"may not be 'None' for type {svc.type}")
            return replace(svc, headless=True)
        ip = ip_v.ipv4()
        net = self.nets["serviceCIDR"]
        if ipaddress.IPv4Address(ip) not in net:
            ip_v.fail(f"{ip} is not inside the lab's serviceCIDR {net}")
        if ipaddress.IPv4Address(ip) in (net.network_address, net.broadcast_address):
            ip_v.fail(f"{ip} is the network or broadcast address of serviceCIDR {net}")
        self.seen.claim("cluster-ip", ip, ip_v.loc, _taken("ClusterIP", ip))
        return replace(svc, cluster_ip=ip)

    def _service_ports(self, spec: _V, svc: Service) -> tuple[ServicePort, ...]:
        ports_v = spec.get("ports")
        items = ports_v.items() if ports_v is not None else []
        if not items and not svc.headless:
            raise (ports_v.loc if ports_v else spec.key_loc("ports")).error(
                "a Service needs at least one port"
            )
        out: list[ServicePort] = []
        names: dict[str, Loc] = {}
        seen: dict[tuple[int, str], Loc] = {}
        node_ports: dict[tuple[int, str], Loc] = {}
        for item in items:
            item.mapping(("name", "port", "targetPort", "nodePort", "protocol"), ("appProtocol",))
            name_v = item.get("name")
            name = name_v.dns_label(what="port name") if name_v and name_v.value != "" else ""
            if not name and len(items) > 1:
                raise (name_v.loc if name_v else item.key_loc("name")).error(
                    "each port needs a name when a Service has more than one"
                )
            if name in names:
                raise item.key_loc("name").error(
                    f"duplicate port name {name!r} (first at line {names[name].line})"
                )
            names[name] = item.loc
            port_v = item.need("port")
            port = port_v.integer(1, 65535, f"{port_v.value} is outside the port range 1-65535")
            protocol = _protocol(item.get("protocol"))
            if (port, protocol) in seen:
                first = seen[port, protocol].line
                port_v.fail(f"duplicate port {port}/{protocol} (first at line {first})")
            seen[port, protocol] = item.loc
            target_v = item.get("targetPort")
            target = _target_port(target_v) if target_v is not None else port
            node_port = None
            if (np_v := item.get("nodePort")) is not None:
                node_port = self._node_port(np_v, svc)
                # one service may use a nodePort for both TCP and UDP, as Kubernetes allows
                if (node_port, protocol) in node_ports:
                    first = node_ports[node_port, protocol].line
                    np_v.fail(f"duplicate nodePort {node_port} (first at line {first})")
                node_ports[node_port, protocol] = np_v.loc
            out.append(ServicePort(name, port, protocol, target, node_port, item.loc))
        for (node_port, _), loc in node_ports.items():
            self.node_ports.setdefault(node_port, (svc.key, loc))
        return tuple(out)

    def _node_port(self, v: _V, svc: Service) -> int:
        """A nodePort or healthCheckNodePort: in range, and no other service's."""
        if svc.type == "ClusterIP":
            v.fail("may not be used when `type` is 'ClusterIP'")
        low, high = NODE_PORT_RANGE
        value = v.integer(-(2**63), 2**63)
        if not low <= value <= high:
            v.fail(f"{value} is outside the NodePort range {low}-{high}")
        owner = self.node_ports.get(value)
        if owner is not None and owner[0] != svc.key:
            v.fail(f"{value} is already allocated to Service {owner[0]} (line {owner[1].line})")
        return value

    def _service_policies(self, spec: _V, svc: Service) -> Service:
        etp_v = spec.get("externalTrafficPolicy")
        etp = etp_v.enum("Cluster", "Local") if etp_v else "Cluster"
        ext_ips_v = spec.get("externalIPs")
        external_ips: list[str] = []
        for item in ext_ips_v.items() if ext_ips_v else ():
            ip = item.ipv4()
            if (special := _special_ip(ip)) is not None:
                item.fail(f"{ip} is a {special} address")
            for key in ("nodeCIDR", "podCIDR", "serviceCIDR", "externalCIDR"):
                if ipaddress.IPv4Address(ip) in self.nets[key]:
                    item.fail(f"{ip} is inside the lab's {key} {self.nets[key]}")
            if ip in external_ips:
                item.fail(f"duplicate externalIP {ip}")
            external_ips.append(ip)
        if etp == "Local" and not svc.external:
            assert etp_v is not None
            if external_ips:
                etp_v.fail(
                    "Local on a ClusterIP service with externalIPs is not modelled; "
                    "use type NodePort or LoadBalancer"
                )
            etp_v.fail(
                "may only be set for externally-accessible services (NodePort, LoadBalancer)"
            )
        itp_v = spec.get("internalTrafficPolicy")
        itp = itp_v.enum("Cluster", "Local") if itp_v else "Cluster"
        hc_port = None
        if (hc_v := spec.get("healthCheckNodePort")) is not None:
            if svc.type != "LoadBalancer" or etp != "Local":
                hc_v.fail(
                    "may only be set when `type` is 'LoadBalancer' and "
                    "`externalTrafficPolicy` is 'Local'"
                )
            hc_port = self._node_port(hc_v, svc)
            if any(p.node_port == hc_port for p in svc.ports):
                hc_v.fail(f"{hc_port} is also one of this service's nodePorts")
            self.node_ports[hc_port] = (svc.key, hc_v.loc)
        affinity_v = spec.get("sessionAffinity")
        affinity = affinity_v.enum("None", "ClientIP") if affinity_v else "None"
        timeout = None
        config_v = spec.get("sessionAffinityConfig")
        if config_v is not None:
            if affinity != "ClientIP":
                config_v.fail("must not be set when sessionAffinity is None")
            config_v.mapping(("clientIP",))
            if (client_v := config_v.get("clientIP")) is not None:
                client_v.mapping(("timeoutSeconds",))
                if (t_v := client_v.get("timeoutSeconds")) is not None:
                    timeout = t_v.integer(1, 86400, f"{t_v.value} must be 1-86400 seconds")
        if affinity == "ClientIP" and timeout is None:
            timeout = DEFAULT_AFFINITY_TIMEOUT
        return replace(
            svc,
            external_ips=tuple(external_ips),
            external_policy=etp,
            internal_policy=itp,
            health_check_node_port=hc_port,
            session_affinity=affinity,
            affinity_timeout=timeout,
        )

    def _service_lb(self, spec: _V, status: _V | None, svc: Service) -> Service:
        lb_only = "may only be used when `type` is 'LoadBalancer'"
        is_lb = svc.type == "LoadBalancer"
        ranges: list[str] = []
        if (ranges_v := spec.get("loadBalancerSourceRanges")) is not None:
            items = ranges_v.items()
            if items and not is_lb:
                ranges_v.fail(lb_only)
            ranges = [str(item.cidr(strict=False)) for item in items]
        lb_ip = None
        if (ip_v := spec.get("loadBalancerIP")) is not None and ip_v.value != "":
            if not is_lb:
                ip_v.fail(lb_only)
            lb_ip = self._lb_address(ip_v)
        allocate = True
        if (alloc_v := spec.get("allocateLoadBalancerNodePorts")) is not None:
            if not is_lb:
                alloc_v.fail(lb_only)
            allocate = alloc_v.boolean()
        if (class_v := spec.get("loadBalancerClass")) is not None:
            if not is_lb:
                class_v.fail(lb_only)
            class_v.string()
        ingress: list[str] = []
        if status is not None:
            status.mapping(("loadBalancer",), ("conditions",))
            lb_status = status.get("loadBalancer")
            if lb_status is not None:
                lb_status.mapping(("ingress",))
                entries = lb_status.get("ingress")
                for item in entries.items() if entries is not None else ():
                    item.mapping(("ip", "ipMode"), ("hostname", "ports"))
                    mode_v = item.get("ipMode")
                    if mode_v is not None and mode_v.enum("VIP", "Proxy") == "Proxy":
                        mode_v.fail(
                            "ipMode Proxy is not modelled: the lab's edge is a pass-through "
                            "load balancer (ipMode VIP); with Proxy, kube-proxy writes no rules "
                            "for this IP and the load balancer proxies to the nodes"
                        )
                    if (addr_v := item.get("ip")) is None:
                        continue
                    if not is_lb:
                        addr_v.fail("only a LoadBalancer service has load-balancer ingress")
                    address = self._lb_address(addr_v)
                    if address not in ingress:
                        ingress.append(address)
        return replace(
            svc,
            source_ranges=tuple(ranges),
            load_balancer_ip=lb_ip,
            allocate_lb_node_ports=allocate,
            lb_ingress=tuple(ingress),
        )

    def _lb_address(self, v: _V) -> str:
        ip = v.ipv4()
        if (special := _special_ip(ip)) is not None:
            v.fail(f"{ip} is a {special} address")
        for key in ("nodeCIDR", "podCIDR", "serviceCIDR", "externalCIDR"):
            if ipaddress.IPv4Address(ip) in self.nets[key]:
                v.fail(f"{ip} is inside the lab's {key} {self.nets[key]}")
        return ip

    # Deployment and Pod
