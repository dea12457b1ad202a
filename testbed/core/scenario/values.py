"""The validator toolkit: a value with its place in the file (`_V`) and the small readers
of fields that several kinds share (names, ports, protocols, selectors, tolerations)."""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from netaddr import IPSet

from testbed.core.model import (
    TCP,
    UDP,
    ContainerPort,
)
from testbed.core.scenario.types import (
    NODE_NAME_MAX,
    AffinityTerm,
    LabelSelector,
    Loc,
    Pod,
    Requirement,
    Service,
    ServicePort,
    SlicePort,
    Toleration,
)
from testbed.core.topology import IFNAME_MAX
from testbed.core.yamlsrc import YList, YMap, show

# -- reading values with their place ------------------------------------------------

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_PATH_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _join(path: str, key: str) -> str:
    if _PATH_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{show(key)}]"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {show(value)}"
    if isinstance(value, str):
        return f"the string {show(value)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__} value (quote it to make it a string)"


def _harmless(value: Any) -> bool:
    """Values that leave an unsupported field meaning nothing, as dumps often have."""
    return value is None or value is False or value == [] or value == {} or value == ""


@dataclass(frozen=True, slots=True)
class _V:
    """A value being read, and where it sits."""

    value: Any
    loc: Loc

    def fail(self, reason: str) -> NoReturn:
        raise self.loc.error(reason)

    def _line_of(self, key: str | int) -> int:
        data = self.value
        if isinstance(data, (YMap, YList)):
            return data.line_of(key)  # type: ignore[arg-type]
        return self.loc.line

    def key_loc(self, key: str) -> Loc:
        return Loc(self.loc.file, self._line_of(key), _join(self.loc.path, key))

    # mappings

    def mapping(
        self,
        known: Iterable[str],
        ignored: Iterable[str] = (),
        unsupported: Mapping[str, str] | None = None,
    ) -> _V:
        """Check this is a mapping with no field outside `known` and `ignored`."""
        if not isinstance(self.value, dict):
            self.fail(f"must be a mapping, not {_kind(self.value)}")
        known = tuple(known)
        ignored = frozenset(ignored)
        for key, value in self.value.items():
            if key in known or key in ignored:
                continue
            loc = self.key_loc(key)
            if unsupported and key in unsupported:
                if _harmless(value):
                    continue
                raise loc.error(unsupported[key])
            hint = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
            if hint:
                raise loc.error(f"unknown field; did you mean {hint[0]}?")
            expected = ", ".join(known) if known else "no fields"
            raise loc.error(f"unknown field (expected: {expected})")
        return self

    def get(self, key: str) -> _V | None:
        """A field's value; None when absent or null (as Kubernetes treats null)."""
        value = self.value.get(key)
        if value is None:
            return None
        return _V(value, self.key_loc(key))

    def need(self, key: str) -> _V:
        found = self.get(key)
        if found is None:
            raise Loc(self.loc.file, self.loc.line, _join(self.loc.path, key)).error(
                "required field is missing"
            )
        return found

    # sequences

    def items(self) -> list[_V]:
        if not isinstance(self.value, list):
            self.fail(f"must be a list, not {_kind(self.value)}")
        return [
            _V(item, Loc(self.loc.file, self._line_of(i), f"{self.loc.path}[{i}]"))
            for i, item in enumerate(self.value)
        ]

    # scalars

    def string(self, *, empty: bool = False) -> str:
        if not isinstance(self.value, str):
            self.fail(f"must be a string, not {_kind(self.value)}")
        if not empty and not self.value:
            self.fail("must not be empty")
        return self.value

    def integer(self, low: int, high: int, what: str = "") -> int:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"must be a whole number, not {_kind(value)}")
        if not low <= value <= high:
            self.fail(what or f"{value} is outside {low}-{high}")
        return value

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            self.fail(f"must be true or false, not {_kind(self.value)}")
        return self.value

    def number(self) -> float:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"must be a number, not {_kind(value)}")
        if not math.isfinite(value):
            self.fail(f"must be a finite number, not {value}")
        return float(value)

    def enum(self, *choices: str) -> str:
        value = self.string(empty=True)
        if value not in choices:
            self.fail(f"{show(value)} is not one of {' | '.join(choices)}")
        return value

    def dns_label(self, limit: int = 63, what: str = "name") -> str:
        value = self.string()
        if not _DNS1123_LABEL.fullmatch(value):
            self.fail(
                f"{show(value)} is not a valid {what}: lower-case letters, digits and '-', "
                "starting and ending with a letter or digit (RFC 1123 label)"
            )
        if len(value) > limit:
            reason = " (it becomes an interface name)" if limit == IFNAME_MAX else ""
            self.fail(f"{show(value)} is {len(value)} characters; the limit is {limit}{reason}")
        return value

    def ipv4(self) -> str:
        value = self.string()
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            self.fail(f"{show(value)} is not a valid IPv4 address")

    def cidr(self, strict: bool = True) -> ipaddress.IPv4Network:
        value = self.string().strip()
        try:
            return ipaddress.IPv4Network(value, strict=strict)
        except ValueError as exc:
            detail = "has host bits set" if "host bits" in str(exc) else "is not a valid IPv4 CIDR"
            self.fail(f"{show(value)} {detail}")

    def string_map(self, what: str = "label") -> dict[str, str]:
        """labels, selector, nodeSelector: Kubernetes label keys and values."""
        if not isinstance(self.value, dict):
            self.fail(f"must be a mapping, not {_kind(self.value)}")
        out: dict[str, str] = {}
        for key in self.value:
            sub = _V(self.value[key], self.key_loc(key))
            _check_label_key(sub, key, what)
            value = sub.value
            if not isinstance(value, str):
                sub.fail(f"{what} value must be a string, not {_kind(value)} (quote it)")
            if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
                sub.fail(f"{show(value)} is not a valid {what} value")
            out[key] = value
        return out


def _check_label_key(v: _V, key: str, what: str) -> None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        v.fail(f"{show(key)} is not a valid {what} key: bad prefix")
    if len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        v.fail(f"{show(key)} is not a valid {what} key")


def _port_name(v: _V) -> str:
    """IANA_SVC_NAME, as container port names and named targetPorts must be."""
    value = v.string()
    if (
        len(value) > 15
        or not _IANA_SVC_NAME.fullmatch(value)
        or "--" in value
        or not re.search("[a-z]", value)
    ):
        v.fail(
            f"{show(value)} is not a valid port name: at most 15 lower-case letters, digits "
            "and '-', with at least one letter"
        )
    return value


def _special_ip(ip: str) -> str | None:
    address = ipaddress.IPv4Address(ip)
    for test, what in (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
    ):
        if test:
            return what
    return None


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _pairs(mapping: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(mapping.items()))


# -- fields of Kubernetes objects ------------------------------------------------------

_META_IGNORED = _words(
    "uid resourceVersion creationTimestamp generation managedFields ownerReferences finalizers "
    "generateName deletionGracePeriodSeconds selfLink annotations clusterName"
)

_POD_SPEC_IGNORED = _words(
    "initContainers ephemeralContainers dnsPolicy dnsConfig restartPolicy schedulerName "
    "securityContext activeDeadlineSeconds serviceAccount "
    "serviceAccountName automountServiceAccountToken volumes imagePullSecrets "
    "enableServiceLinks priority priorityClassName preemptionPolicy hostname subdomain "
    "readinessGates runtimeClassName shareProcessNamespace overhead setHostnameAsFQDN os "
    "hostAliases hostPID hostIPC hostUsers resourceClaims resources"
)
_POD_SPEC_UNSUPPORTED = {
    "hostNetwork": "hostNetwork pods are not modelled: every pod gets its own namespace",
    "topologySpreadConstraints": (
        "not modelled: the lab spreads replicas evenly by itself (use podAntiAffinity, "
        "nodeSelector or nodeName to steer placement)"
    ),
    "schedulingGates": "not modelled: a gated pod would never be scheduled",
}
_CONTAINER_IGNORED = _words(
    "image imagePullPolicy command args workingDir env envFrom resources resizePolicy "
    "restartPolicy volumeMounts volumeDevices livenessProbe readinessProbe startupProbe "
    "terminationMessagePath terminationMessagePolicy securityContext stdin stdinOnce tty"
)
_SERVICE_SPEC_UNSUPPORTED = {
    "externalName": "ExternalName services are not modelled (kube-proxy writes no rules for them)",
    "trafficDistribution": "not modelled: the lab does not do topology-aware routing",
    "topologyKeys": "not modelled (and removed from Kubernetes in 1.22)",
}


# -- small readers ------------------------------------------------------------------


def _taken(what: str, value: Any) -> Callable[[Loc], str]:
    return lambda first: f"{what} {show(value)} is already defined (line {first.line})"


def _source_clash(name: str) -> Callable[[Loc], str]:
    return lambda first: (
        f"name {show(name)} is already used by another node, client or pod (line {first.line}); "
        "probes name their source by it"
    )


def _few(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 4 else f"{names[0]}..{names[-1]}"


def _service_name(v: _V) -> str:
    value = v.dns_label(what="Service name")
    if not _DNS1035_LABEL.fullmatch(value):
        v.fail(f"{show(value)} is not a valid Service name: it must start with a letter (RFC 1035)")
    return value


PROBE_MODES = ("connection", "packet", "outOfWindow")


def _protocol(v: _V | None) -> str:
    if v is None:
        return TCP
    if v.value == "SCTP":
        v.fail("SCTP is not modelled; use TCP or UDP")
    return v.enum(TCP, UDP)


def _target_port(v: _V) -> int | str:
    if isinstance(v.value, str):
        return _port_name(v)
    return v.integer(1, 65535, f"{v.value} is outside the port range 1-65535")


def _seconds(v: _V, floor: float) -> float:
    value = v.number()
    if not floor <= value <= 60:
        v.fail(
            f"{value:g} must be {floor:g}-60 seconds (a shorter period would keep a "
            "core busy for as long as the lab lives; cloud load balancers allow 1 s at least)"
        )
    return value


# Address ranges a lab segment may not touch: packets to or from them are not routed
# (0/8, loopback, link-local), are group traffic (multicast) or are reserved (240/4).
_SPECIAL_RANGES = (
    ("0.0.0.0/8", "0.0.0.0/8 (this network)"),
    ("127.0.0.0/8", "127.0.0.0/8 (loopback)"),
    ("169.254.0.0/16", "169.254.0.0/16 (link-local)"),
    ("224.0.0.0/4", "224.0.0.0/4 (multicast)"),
    ("240.0.0.0/4", "240.0.0.0/4 (reserved, and broadcast)"),
)


def _special_range(net: ipaddress.IPv4Network) -> str | None:
    """The first range of _SPECIAL_RANGES the network overlaps; None when it is usable."""
    wanted = IPSet([str(net)])
    for cidr, what in _SPECIAL_RANGES:
        if wanted & IPSet([cidr]):
            return what
    return None


def _node_name(v: _V) -> str:
    """A node's name as Kubernetes allows it (DNS subdomain, like ip-10-0-1-23.ec2.internal)."""
    value = v.string()
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        v.fail(
            f"{show(value)} is not a valid node name: lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit (RFC 1123 subdomain)"
        )
    if len(value) > NODE_NAME_MAX:
        v.fail(f"{show(value)} is {len(value)} characters; the lab's limit is {NODE_NAME_MAX}")
    return value


def _container_ports(containers_v: _V) -> tuple[ContainerPort, ...]:
    items = containers_v.items()
    if not items:
        containers_v.fail("a pod needs at least one container")
    names: set[str] = set()
    port_names: set[str] = set()
    ports: list[ContainerPort] = []
    for item in items:
        item.mapping(("name", "ports", "lifecycle"), _CONTAINER_IGNORED)  # lifecycle: preStop
        name_v = item.need("name")
        name = name_v.dns_label(what="container name")
        if name in names:
            name_v.fail(f"duplicate container name {name!r}")
        names.add(name)
        for port_v in item.get("ports").items() if item.get("ports") else ():
            port_v.mapping(
                ("containerPort", "protocol", "name"),
                ("hostIP",),
                {"hostPort": "hostPort is not modelled; expose the pod through a Service"},
            )
            number_v = port_v.need("containerPort")
            number = number_v.integer(
                1, 65535, f"{number_v.value} is outside the port range 1-65535"
            )
            protocol = _protocol(port_v.get("protocol"))
            port_name = ""
            if (pn_v := port_v.get("name")) is not None:
                port_name = _port_name(pn_v)
                if port_name in port_names:
                    pn_v.fail(f"duplicate port name {port_name!r} in this pod")
                port_names.add(port_name)
            port = ContainerPort(number, protocol, port_name)
            if all((p.port, p.protocol) != (number, protocol) for p in ports):
                ports.append(port)
    return tuple(ports)


def _toleration(v: _V) -> Toleration:
    v.mapping(("key", "operator", "value", "effect"), ("tolerationSeconds",))
    key = v.get("key")
    op_v = v.get("operator")
    operator = op_v.enum("Equal", "Exists") if op_v else "Equal"
    value = v.get("value")
    if operator == "Exists" and value is not None and value.value != "":
        value.fail("must be empty when operator is Exists")
    if operator == "Equal" and (key is None or key.value == ""):
        v.fail("a toleration with an empty key needs operator Exists")
    effect_v = v.get("effect")
    effect = effect_v.enum("", "NoSchedule", "PreferNoSchedule", "NoExecute") if effect_v else ""
    return Toleration(
        key.string(empty=True) if key else "",
        operator,
        value.string(empty=True) if value else "",
        effect,
    )


def _label_selector(v: _V) -> LabelSelector:
    v.mapping(("matchLabels", "matchExpressions"))
    labels_v = v.get("matchLabels")
    labels = labels_v.string_map("selector") if labels_v else {}
    requirements = []
    for item in v.get("matchExpressions").items() if v.get("matchExpressions") else ():
        item.mapping(("key", "operator", "values"))
        key_v = item.need("key")
        key = key_v.string()
        _check_label_key(key_v, key, "selector")
        op_v = item.need("operator")
        operator = op_v.enum("In", "NotIn", "Exists", "DoesNotExist")
        values_v = item.get("values")
        values = tuple(x.string(empty=True) for x in values_v.items()) if values_v else ()
        if operator in ("In", "NotIn") and not values:
            (values_v or op_v).fail(f"operator {operator} needs at least one value")
        if operator in ("Exists", "DoesNotExist") and values:
            values_v.fail(f"operator {operator} takes no values")  # type: ignore[union-attr]
        requirements.append(Requirement(key, operator, values))
    return LabelSelector(_pairs(labels), tuple(requirements))


def _affinity_term(v: _V, namespace: str) -> AffinityTerm:
    v.mapping(
        ("labelSelector", "topologyKey", "namespaces"),
        unsupported={
            "namespaceSelector": "namespaceSelector is not modelled; list namespaces instead",
            "matchLabelKeys": "matchLabelKeys is not modelled",
            "mismatchLabelKeys": "mismatchLabelKeys is not modelled",
        },
    )
    selector_v = v.get("labelSelector")
    selector = _label_selector(selector_v) if selector_v is not None else None
    key_v = v.need("topologyKey")
    key = key_v.string()
    _check_label_key(key_v, key, "topologyKey")
    namespaces = (namespace,)
    if (ns_v := v.get("namespaces")) is not None and ns_v.value:
        namespaces = tuple(item.dns_label(what="namespace") for item in ns_v.items())
    return AffinityTerm(selector, key, namespaces)


def _weighted_term(v: _V, namespace: str) -> AffinityTerm:
    v.mapping(("weight", "podAffinityTerm"))
    weight_v = v.need("weight")
    weight = weight_v.integer(1, 100, f"weight {weight_v.value} must be 1-100")
    term = _affinity_term(v.need("podAffinityTerm"), namespace)
    return replace(term, weight=weight)


def _add_ports(pod: Pod, ports: tuple[SlicePort, ...]) -> Pod:
    """An EndpointSlice's ports become container ports of the pod it lists."""
    known = {(p.port, p.protocol) for p in pod.template.ports}
    extra = tuple(
        ContainerPort(p.port, p.protocol, p.name if _is_port_name(p.name) else "")
        for p in ports
        if p.port is not None and (p.port, p.protocol) not in known
    )
    if not extra or not pod.from_slice:
        return pod
    names: set[str] = {p.name for p in pod.template.ports if p.name}
    unique = []
    for port in extra:
        if port.name in names:
            port = replace(port, name="")
        names.add(port.name)
        if (port.port, port.protocol) not in {(u.port, u.protocol) for u in unique}:
            unique.append(port)
    template = replace(pod.template, ports=pod.template.ports + tuple(unique))
    return replace(pod, template=template)


def _is_port_name(name: str) -> bool:
    return bool(name) and len(name) <= 15 and bool(_IANA_SVC_NAME.fullmatch(name))


def _pick_port(svc: Service, port_v: _V | None, protocol: str | None, to_v: _V) -> ServicePort:
    """The service port a probe means: by number or name; optional when there is one."""
    candidates = list(svc.ports)
    if port_v is not None:
        value = port_v.value
        if isinstance(value, str):
            candidates = [p for p in svc.ports if p.name == value]
            if not candidates:
                port_v.fail(f"Service {svc.key} has no port named {show(value)}")
        else:
            number = port_v.integer(1, 65535, f"{value} is outside the port range 1-65535")
            candidates = [p for p in svc.ports if p.port == number]
            if not candidates:
                port_v.fail(f"Service {svc.key} has no port {number}")
    if protocol is not None:
        matching = [p for p in candidates if p.protocol == protocol]
        if not matching:
            (port_v or to_v).fail(f"Service {svc.key} has no {protocol} port like that")
        candidates = matching
    if not candidates:
        to_v.fail(f"Service {svc.key} has no ports")
    if len(candidates) > 1:
        (port_v or to_v).fail(
            f"Service {svc.key} has {len(candidates)} such ports; name one with port"
        )
    return candidates[0]
