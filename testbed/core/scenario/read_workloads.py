"""Reading deployments, StatefulSets, DaemonSets and Pods, and the pods they own."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

from testbed.core.scenario.kinds import (
    _WORKLOAD_FIELDS,
    _loose,
)
from testbed.core.scenario.types import (
    DAEMON_TOLERATIONS,
    MAX_PODS,
    MAX_REPLICAS,
    RESERVED_NAMES,
    Deployment,
    Loc,
    Pod,
    PodTemplate,
    node_labels,
    tolerated,
)
from testbed.core.scenario.values import (
    _DNS1123_LABEL,
    _META_IGNORED,
    _POD_SPEC_IGNORED,
    _POD_SPEC_UNSUPPORTED,
    _V,
    _affinity_term,
    _container_ports,
    _few,
    _label_selector,
    _pairs,
    _source_clash,
    _taken,
    _toleration,
    _weighted_term,
    _words,
)
from testbed.core.yamlsrc import show


class WorkloadReading:
    """Deployments, StatefulSets, DaemonSets and Pods, and the pods they own.

    One part of the reader: `self` is the `_Reader` this class is mixed into.
    """

    def _read_deployment(self, obj: _V, order: int) -> None:
        self._read_workload(obj, order, "Deployment")

    def _read_statefulset(self, obj: _V, order: int) -> None:
        self._read_workload(obj, order, "StatefulSet")

    def _read_daemonset(self, obj: _V, order: int) -> None:
        self._read_workload(obj, order, "DaemonSet")

    def _host_network_skipped(self, obj: _V, kind: str, spec: Any, labels: Any) -> bool:
        """A hostNetwork pod or workload no Service selects cannot be an endpoint: skipped.

        (kube-system's kube-proxy and CNI DaemonSets in a `get all -A` dump.) One that a
        Service selects is read, and refused with the reason.
        """
        if _loose(spec, "hostNetwork") is not True:
            return False
        namespace = _loose(obj.value, "metadata", "namespace") or "default"
        labels = labels if isinstance(labels, dict) else {}
        for svc in self.services.values():
            selected = all(labels.get(k) == v for k, v in svc.selector)
            if svc.namespace == namespace and svc.selector and selected:
                return False
        name = _loose(obj.value, "metadata", "name")
        self.host_network.append(f"{kind} {namespace}/{name}")
        if self.host_network_loc is None:
            self.host_network_loc = obj.loc
        return True

    def _read_workload(self, obj: _V, order: int, kind: str) -> None:
        template = _loose(obj.value, "spec", "template")
        labels = _loose(template, "metadata", "labels")
        if self._host_network_skipped(obj, kind, _loose(template, "spec"), labels):
            return
        obj.mapping(("apiVersion", "kind", "metadata", "spec", "status"))
        name, namespace, _, meta = self._metadata(obj)
        key = f"{namespace}/{name}"
        self.seen.claim(kind, key, meta.key_loc("name"), _taken(kind, key))
        spec = obj.need("spec")
        known, ignored = _WORKLOAD_FIELDS[kind]
        spec.mapping(known, _words(ignored))
        replicas_v = spec.get("replicas")
        replicas = (
            replicas_v.integer(
                0, MAX_REPLICAS, f"{replicas_v.value} replicas: must be 0-{MAX_REPLICAS}"
            )
            if replicas_v
            else 1
        )
        start = 0
        if (ordinals_v := spec.get("ordinals")) is not None:
            ordinals_v.mapping(("start",))
            if (start_v := ordinals_v.get("start")) is not None:
                start = start_v.integer(0, MAX_REPLICAS, f"must be 0-{MAX_REPLICAS}")
        selector_v = spec.need("selector")
        selector = _label_selector(selector_v)
        if selector.empty:
            selector_v.fail(f"empty selector is invalid for {kind.lower()}")
        template_v = spec.need("template").mapping(("metadata", "spec"))
        labels: dict[str, str] = {}
        if (tmeta := template_v.get("metadata")) is not None:
            tmeta.mapping(("labels",), _META_IGNORED + ("name", "namespace"))
            if (labels_v := tmeta.get("labels")) is not None:
                labels = labels_v.string_map()
        if not selector.matches(labels):
            selector_v.fail("selector does not match template labels")
        template = self._pod_template(template_v.need("spec"), labels, namespace)
        workload = Deployment(
            name, namespace, replicas, selector, template, order, obj.loc, kind, start=start
        )
        owned = tuple(pod for pod, owner in self.pod_owner.items() if owner == workload.key)
        name_loc = meta.key_loc("name")
        if kind == "DaemonSet":
            workload = replace(workload, daemon_pods=self._daemon_pods(workload, name_loc))
        if owned:
            workload = replace(workload, owned=owned)
            wanted = len(workload.daemon_pods) if kind == "DaemonSet" else replicas
            if kind != "DaemonSet":
                workload = replace(workload, replicas=len(owned))
            if wanted != len(owned):
                self.warnings.append(
                    (replicas_v.loc if replicas_v and kind != "DaemonSet" else name_loc).warning(
                        f"{kind} {key} {'would run' if kind == 'DaemonSet' else 'asks for'} "
                        f"{wanted} pods but the file holds {len(owned)}: the lab runs the "
                        "file's, where the cluster had them"
                    )
                )
        made = workload.made()
        for pod_name in made:
            if len(pod_name) > 63:
                raise name_loc.error(
                    f"replica name {pod_name!r} would be over 63 characters; use a shorter name"
                )
            self._claim_pod(pod_name, name_loc)
        self._count_pods(len(made), obj.loc)
        self.deployments.append(workload)

    def _daemon_pods(self, ds: Deployment, loc: Loc) -> tuple[tuple[str, str], ...]:
        """One pod per node whose labels fit the nodeSelector and whose taints are tolerated."""
        assert self.lab is not None
        out: list[tuple[str, str]] = []
        names: set[str] = set()
        for k, node in enumerate(self.lab.nodes, 1):
            obj = self.node_objects.get(node.name)
            labels = node_labels(node, obj)
            if not all(labels.get(key) == v for key, v in ds.template.node_selector):
                continue
            tolerations = ds.template.tolerations + DAEMON_TOLERATIONS
            if obj is not None and tolerated(obj.taints, tolerations) is not None:
                continue
            pod = f"{ds.name}-{node.name.split('.')[0]}"
            if len(pod) > 63 or pod in names or not _DNS1123_LABEL.fullmatch(pod):
                pod = f"{ds.name}-{k}"
            names.add(pod)
            out.append((pod, node.name))
        if not out:
            self.warnings.append(
                loc.warning(
                    f"DaemonSet {ds.namespace}/{ds.name} fits no node "
                    "(nodeSelector or taints): it runs no pod"
                )
            )
        return tuple(out)

    def _read_pod(self, obj: _V, order: int) -> None:
        labels = _loose(obj.value, "metadata", "labels")
        if self._host_network_skipped(obj, "Pod", _loose(obj.value, "spec"), labels):
            return
        obj.mapping(("apiVersion", "kind", "metadata", "spec", "status"))
        name, namespace, labels, meta = self._metadata(obj)
        self._claim_pod(name, meta.key_loc("name"))
        template = self._pod_template(obj.need("spec"), labels, namespace)
        owner = self.pod_owner.get(name)
        if owner is not None and not any(d.key == owner for d in self.deployments):
            owner = None  # its workload is not in the file: a pod like any other
        pod = Pod(name, namespace, template, order=order, loc=obj.loc, owner=owner)
        deleting = meta.get("deletionTimestamp") is not None
        ready = True
        if (status := obj.get("status")) is not None:
            status.mapping(
                ("podIP", "podIPs", "phase", "conditions"),
                _words(
                    "hostIP hostIPs startTime containerStatuses initContainerStatuses "
                    "ephemeralContainerStatuses qosClass message reason nominatedNodeName resize "
                    "resourceClaimStatuses observedGeneration"
                ),
            )
            ip_v = status.get("podIP")
            if (ips_v := status.get("podIPs")) is not None:
                ips = ips_v.items()
                if ips:
                    ips[0].mapping(("ip",))
                    first = ips[0].need("ip")
                    if ip_v is not None and first.value != ip_v.value:
                        first.fail(f"{show(first.value)} must match podIP {show(ip_v.value)}")
                    ip_v = ip_v or first
                for extra in ips[1:]:
                    extra.mapping(("ip",))
            if ip_v is not None and ip_v.value != "":
                ip = self._pod_ip(ip_v, pod.template.node_name)
                self._claim_ip(ip, name, ip_v.loc)
                pod = replace(pod, ip=ip)
            if (phase_v := status.get("phase")) is not None:
                phase = phase_v.enum("Pending", "Running", "Succeeded", "Failed", "Unknown")
                pod = replace(pod, running=phase not in ("Succeeded", "Failed"))
            for cond in status.get("conditions").items() if status.get("conditions") else ():
                cond.mapping(
                    ("type", "status"),
                    _words("lastProbeTime lastTransitionTime message reason observedGeneration"),
                )
                if cond.need("type").string() == "Ready":
                    ready = cond.need("status").enum("True", "False", "Unknown") == "True"
        # as the EndpointSlice controller reports a pod: deleting pods are not ready
        pod = replace(pod, ready=ready and not deleting, serving=ready, terminating=deleting)
        self._count_pods(1, obj.loc)
        self.pods[name] = pod

    def _pod_ip(self, v: _V, node: str | None) -> str:
        ip = v.ipv4()
        cluster = self.nets["podCIDR"]
        if ipaddress.IPv4Address(ip) not in cluster:
            v.fail(f"{ip} is not inside the lab's podCIDR {cluster}")
        node_obj = self.node_objects.get(node or "")
        if node_obj is not None and node_obj.pod_cidr is not None:
            net = ipaddress.IPv4Network(node_obj.pod_cidr)
            if ipaddress.IPv4Address(ip) not in net:
                v.fail(f"{ip} is not inside {node}'s pod CIDR {net}")
        return ip

    def _claim_pod(self, name: str, loc: Loc) -> None:
        if name in RESERVED_NAMES:
            raise loc.error(f"pod name {name!r} is reserved for the lab's router")
        first = self.seen.owner("pod", name)
        if first is not None:
            raise loc.error(
                f"pod name {name!r} is already used (line {first.line}); "
                "pod names must be unique across namespaces in the lab"
            )
        self.seen.where[("pod", name)] = loc
        self.seen.claim("source", name, loc, _source_clash(name))

    def _count_pods(self, count: int, loc: Loc) -> None:
        self.pod_total += count
        if self.pod_total > MAX_PODS:
            raise loc.error(f"more than {MAX_PODS} pods in one lab")

    def _pod_template(self, spec: _V, labels: dict[str, str], namespace: str) -> PodTemplate:
        spec.mapping(
            (
                "containers",
                "nodeName",
                "nodeSelector",
                "affinity",
                "tolerations",
                "terminationGracePeriodSeconds",
            ),
            _POD_SPEC_IGNORED,
            _POD_SPEC_UNSUPPORTED,
        )
        assert self.lab is not None
        template = PodTemplate(labels=_pairs(labels), loc=spec.loc)
        if (node_v := spec.get("nodeName")) is not None:
            node = node_v.string()
            names = [n.name for n in self.lab.nodes]
            if node not in names:
                node_v.fail(f"no node named {show(node)} in the lab ({_few(names)})")
            template = replace(template, node_name=node)
        if (sel_v := spec.get("nodeSelector")) is not None:
            template = replace(
                template,
                node_selector=_pairs(sel_v.string_map("nodeSelector")),
                node_selector_loc=sel_v.loc,
            )
        template = replace(template, ports=_container_ports(spec.need("containers")))
        grace, pre_stop = self._termination(spec)
        template = replace(template, grace=grace, pre_stop=pre_stop)
        if (tol_v := spec.get("tolerations")) is not None:
            template = replace(template, tolerations=tuple(_toleration(t) for t in tol_v.items()))
        if (affinity_v := spec.get("affinity")) is not None:
            affinity_v.mapping(
                ("podAntiAffinity",),
                unsupported={
                    "nodeAffinity": "not modelled: use nodeSelector or nodeName",
                    "podAffinity": "not modelled: only podAntiAffinity steers placement",
                },
            )
            if (anti_v := affinity_v.get("podAntiAffinity")) is not None:
                anti_v.mapping(
                    _words(
                        "requiredDuringSchedulingIgnoredDuringExecution "
                        "preferredDuringSchedulingIgnoredDuringExecution"
                    )
                )
                required = anti_v.get("requiredDuringSchedulingIgnoredDuringExecution")
                preferred = anti_v.get("preferredDuringSchedulingIgnoredDuringExecution")
                template = replace(
                    template,
                    anti_required=tuple(
                        _affinity_term(item, namespace)
                        for item in (required.items() if required else ())
                    ),
                    anti_preferred=tuple(
                        _weighted_term(item, namespace)
                        for item in (preferred.items() if preferred else ())
                    ),
                    anti_loc=anti_v.loc,
                )
        return template

    # EndpointSlice
