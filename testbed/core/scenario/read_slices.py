"""Reading endpointSlices (and the Endpoints objects they replace)."""

from __future__ import annotations

from dataclasses import replace

from testbed.core.scenario.types import (
    SERVICE_NAME_LABEL,
    EndpointSlice,
    Loc,
    Pod,
    PodTemplate,
    SliceEndpoint,
    SlicePort,
    _Cascade,
)
from testbed.core.scenario.values import (
    _V,
    _add_ports,
    _few,
    _protocol,
    _taken,
)
from testbed.core.yamlsrc import show


class SliceReading:
    """EndpointSlices (and the Endpoints objects they replace).

    One part of the reader: `self` is the `_Reader` this class is mixed into.
    """

    def _read_endpointslice(self, obj: _V, order: int) -> None:
        obj.mapping(("apiVersion", "kind", "metadata", "addressType", "endpoints", "ports"))
        name, namespace, labels, meta = self._metadata(obj)
        key = f"{namespace}/{name}"
        self.seen.claim("EndpointSlice", key, meta.key_loc("name"), _taken("EndpointSlice", key))
        service = labels.get(SERVICE_NAME_LABEL)
        if service is None:
            meta.fail(f"an EndpointSlice needs the label {SERVICE_NAME_LABEL}: <service name>")
        labels_v = meta.need("labels")
        if f"{namespace}/{service}" not in self.services:
            self._cascade(labels_v, "Service", f"{namespace}/{service}")
            raise labels_v.key_loc(SERVICE_NAME_LABEL).error(
                f"names Service {namespace}/{service}, which the scenario does not define"
            )
        if (type_v := obj.get("addressType")) is not None and type_v.enum(
            "IPv4", "IPv6", "FQDN"
        ) != "IPv4":
            type_v.fail("only IPv4 EndpointSlices are modelled")
        ports: list[SlicePort] = []
        for item in obj.get("ports").items() if obj.get("ports") else ():
            item.mapping(("name", "port", "protocol"), ("appProtocol",))
            port_name = item.get("name")
            port_v = item.get("port")
            ports.append(
                SlicePort(
                    port_name.string(empty=True) if port_name else "",
                    port_v.integer(1, 65535) if port_v else None,
                    _protocol(item.get("protocol")),
                )
            )
        endpoints = tuple(
            self._slice_endpoint(item, namespace, service, tuple(ports))
            for item in (obj.get("endpoints").items() if obj.get("endpoints") else ())
        )
        self.slices.append(
            EndpointSlice(name, namespace, service, tuple(ports), endpoints, obj.loc)  # type: ignore[arg-type]
        )

    def _slice_endpoint(
        self, item: _V, namespace: str, service: str, ports: tuple[SlicePort, ...]
    ) -> SliceEndpoint:
        assert self.lab is not None
        item.mapping(
            ("addresses", "conditions", "nodeName", "targetRef"),
            ("zone", "hints", "hostname", "deprecatedTopology"),
        )
        addresses_v = item.need("addresses")
        addresses = addresses_v.items()
        if not addresses:
            addresses_v.fail("must list at least one address")
        address_v = addresses[0]  # kube-proxy uses the first address only
        ip = address_v.ipv4()
        for extra in addresses[1:]:
            extra.ipv4()
        ready = serving = True
        terminating = False
        if (cond_v := item.get("conditions")) is not None:
            cond_v.mapping(("ready", "serving", "terminating"))
            ready_v, serving_v, term_v = (
                cond_v.get(k) for k in ("ready", "serving", "terminating")
            )
            ready = ready_v.boolean() if ready_v else True  # unset means ready
            serving = serving_v.boolean() if serving_v else ready
            terminating = term_v.boolean() if term_v else False
        node = None
        if (node_v := item.get("nodeName")) is not None:
            node = node_v.string()
            names = [n.name for n in self.lab.nodes]
            if node not in names:
                node_v.fail(f"no node named {show(node)} in the lab ({_few(names)})")
        ref_name = None
        if (ref_v := item.get("targetRef")) is not None:
            ref_v.mapping(
                ("kind", "name", "namespace"), ("uid", "resourceVersion", "apiVersion", "fieldPath")
            )
            kind_v = ref_v.get("kind")
            if kind_v is None or kind_v.string() == "Pod":
                ref_name = ref_v.need("name").dns_label(what="pod name")
        conditions = {"ready": ready, "serving": serving, "terminating": terminating}
        name = self.pod_by_ip.get(ip)
        if name is None and ref_name is not None and ref_name in self.pods:
            name = self._give_address(self.pods[ref_name], ip, node, address_v, ref_v)
        if name is None:
            name = self._slice_pod(ip, ref_name, node, namespace, service, address_v)
            self.pods[name] = replace(self.pods[name], **conditions)
        if name not in self.pods:  # the Pod that has this address failed to read
            raise _Cascade(item.loc.file, item.loc.line, "follows an earlier error")
        pod = self.pods[name]
        if pod.from_slice:
            self.pods[name] = _add_ports(pod, ports)
        elif ref_name is not None and ref_name != name:
            ref_v.need("name").fail(f"address {ip} belongs to pod {name}, not {ref_name}")  # type: ignore[union-attr]
        if node is not None and pod.template.node_name not in (None, node):
            item.need("nodeName").fail(
                f"pod {name} (address {ip}) runs on {pod.template.node_name}"
            )
        if node is not None and pod.template.node_name is None:
            self.pods[name] = replace(pod, template=replace(pod.template, node_name=node))
        return SliceEndpoint(ip, name, node, loc=item.loc, **conditions)

    def _give_address(
        self, pod: Pod, ip: str, node: str | None, address_v: _V, ref_v: _V | None
    ) -> str:
        """A Pod object named by targetRef, written without status.podIP, takes the address."""
        if pod.ip is not None:
            assert ref_v is not None
            ref_v.need("name").fail(f"pod {pod.name} has podIP {pod.ip}, not {ip}")
        self._pod_ip(address_v, pod.template.node_name or node)
        self._claim_ip(ip, pod.name, address_v.loc)
        self.pods[pod.name] = replace(pod, ip=ip)
        return pod.name

    def _slice_pod(
        self,
        ip: str,
        ref_name: str | None,
        node: str | None,
        namespace: str,
        service: str,
        address_v: _V,
    ) -> str:
        """A pod for an EndpointSlice address that no Pod has: named by targetRef or numbered."""
        self._pod_ip(address_v, node)
        name = ref_name
        while name is None or (ref_name is None and self.seen.owner("pod", name) is not None):
            n = self.slice_pods.get(service, 0)
            self.slice_pods[service] = n + 1
            name = f"{service}-ep-{n}"
        if len(name) > 63:
            address_v.fail(f"the pod made for this address, {name!r}, would need a shorter name")
        self._claim_pod(name, address_v.loc)
        self._claim_ip(ip, name, address_v.loc)
        self._count_pods(1, address_v.loc)
        template = PodTemplate(node_name=node, loc=address_v.loc)
        order = len(self.pods) + 1_000_000  # after every Pod and Deployment
        self.pods[name] = Pod(
            name, namespace, template, ip, from_slice=True, order=order, loc=address_v.loc
        )
        return name

    def _claim_ip(self, ip: str, pod: str, loc: Loc) -> None:
        self.seen.claim("pod-ip", ip, loc, _taken("pod address", ip))
        self.pod_by_ip[ip] = pod

    def _read_endpoints(self, obj: _V, order: int) -> None:
        """Endpoints repeat what EndpointSlices or a selector already say: skipped then."""
        name, namespace, _, meta = self._metadata(obj)
        key = f"{namespace}/{name}"
        svc = self.services.get(key)
        sliced = any(s.service_key == key for s in self.slices)
        if svc is None or svc.selector or sliced:
            self._skip("Endpoints", obj.loc)
            return
        meta.need("name").fail(
            f"Service {key} has no selector and no EndpointSlice: the lab reads a selectorless "
            "Service's endpoints from EndpointSlices (kubectl get endpointslices -o yaml)"
        )

    # probes
