"""Scenario YAML -> validated `Scenario`: the Lab object plus the Kubernetes objects.

The contract is the scenario format, v1alpha1. Validation mirrors the
Kubernetes API server where it applies, so a scenario that loads here is one a
real cluster would also accept; where the lab models less than Kubernetes, the
error says so instead of silently ignoring the field. Every error is a
`ScenarioError` whose text is one line, `FILE:LINE: FIELD.PATH: reason`.

Reading order is Lab, Nodes, Services, Deployments, Pods, EndpointSlices, then
the Lab's probes and steps, so each part can check its references against the
ones before.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import platform
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

from netaddr import IPSet

from testbed.core import yamlsrc
from testbed.core.model import (
    TCP,
    UDP,
    ContainerPort,
    Expectation,
    HealthCheckConfig,
    LoadBalancerConfig,
    ProbePlan,
    Target,
)
from testbed.core.yamlsrc import SourceError, YList, YMap, one_line, show

LAB_API = "testbed/v1alpha1"
NODE_PORT_RANGE = (30000, 32767)
MAX_NODES = 1000
MAX_REPLICAS = 10_000
MAX_PODS = 100_000
MAX_PROBE_COUNT = 100_000
IFNAME_MAX = 15  # Linux IFNAMSIZ - 1: node and client names become interface names
DEFAULT_AFFINITY_TIMEOUT = 10800
KNOWN_FAULTS = frozenset({"no-snat"})
RESERVED_NAMES = frozenset({"edge"})  # the lab's router
SHARE_TOLERANCE = 0.02
HOSTNAME_LABEL = "kubernetes.io/hostname"
OS_LABEL = "kubernetes.io/os"
ARCH_LABEL = "kubernetes.io/arch"
ZONE_LABEL = "topology.kubernetes.io/zone"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
POD_TEMPLATE_HASH = "pod-template-hash"
EXCLUDE_FROM_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
NODE_NAME_MAX = 200  # DNS subdomain (253), less room for the lab id in namespace names
MAX_PROBLEMS = 20  # errors listed for one file; the rest are counted
MIN_CHECK_INTERVAL = 0.1  # seconds: lower keeps a core busy for as long as the lab lives
MIN_CHECK_TIMEOUT = 0.05
# Kinds a `kubectl get all,cm,ing,sa,ns -o yaml` dump holds that kube-proxy never reads:
# skipped, and counted in one warning. ReplicaSets still tell which Deployment owns a pod.
SKIPPED_KINDS = frozenset(
    {
        "ConfigMap",
        "Secret",
        "Namespace",
        "ServiceAccount",
        "Ingress",
        "IngressClass",
        "ReplicaSet",
        "ControllerRevision",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Job",
        "CronJob",
        "PersistentVolumeClaim",
        "PersistentVolume",
        "StorageClass",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "Event",
        "LimitRange",
        "ResourceQuota",
        "Lease",
        "PriorityClass",
    }
)
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}
NODE_ARCH = _ARCHES.get(platform.machine(), platform.machine().lower() or "amd64")


def well_known_labels(name: str, zone: str | None = None) -> dict[str, str]:
    """The labels the kubelet puts on every node, so Helm charts' nodeSelectors fit."""
    labels = {HOSTNAME_LABEL: name, OS_LABEL: "linux", ARCH_LABEL: NODE_ARCH}
    if zone is not None:
        labels[ZONE_LABEL] = zone
    return labels


class ScenarioError(SourceError):
    """A scenario that cannot be built; str() names the file, line and field.

    One error is one line. A file with several problems raises the first, with all of
    them (up to MAX_PROBLEMS) in `problems` and the number left out in `more`.
    """

    problems: tuple[SourceError, ...] = ()
    more: int = 0

    def lines(self) -> list[str]:
        """Every problem, one line each, as a person should see them."""
        found = [str(p) for p in self.problems] or [str(self)]
        if self.more:
            found.append(f"{one_line(self.file)}: {self.more} more problems not shown")
        return found


class _Cascade(ScenarioError):
    """An error that only repeats an earlier one (a reference to an object that failed)."""


@dataclass(frozen=True)
class Loc:
    """Where a value was written, so a later check can still point at it."""

    file: str
    line: int
    path: str = ""

    def error(self, reason: str) -> ScenarioError:
        return ScenarioError(self.file, self.line, reason, self.path)

    def warning(self, reason: str) -> str:
        return str(self.error(reason))


NOWHERE = Loc("<inline>", 0)

# -- the scenario ---------------------------------------------------------------


@dataclass(frozen=True)
class LabNode:
    name: str
    labels: tuple[tuple[str, str], ...] = ()
    loc: Loc = field(default=NOWHERE, compare=False)
    zone: str | None = None  # topology.kubernetes.io/zone


@dataclass(frozen=True)
class NetworkSpec:
    node_cidr: str = "172.18.0.0/24"
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/16"
    external_cidr: str = "203.0.113.0/24"
    vip_cidr: str = "198.51.100.0/24"


@dataclass(frozen=True)
class ClientSpec:
    name: str
    ip: str | None = None  # None: the next free external address
    loc: Loc = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class KubeProxySpec:
    masquerade_all: bool = False
    detect_local_mode: str = "ClusterCIDR"
    localhost_nodeports: bool = True
    what_if: tuple[str, ...] = ()


CHANGE_ACTIONS = ("deletePod", "scale", "setPolicy", "proxyHealthy", "edgeHealthChecks")
STEP_ACTIONS = (*CHANGE_ACTIONS, "waitForHealthChecks", "probe", "probeDuringConvergence")


@dataclass(frozen=True)
class Step:
    """One thing done to the running lab after spec.probes, in the order written.

    Changes (deletePod, scale, setPolicy, proxyHealthy) edit the world; the rest
    wait for the edge or probe it. A probe step's verdict carries the step's name.
    """

    name: str
    action: str  # one of STEP_ACTIONS
    pod: str | None = None  # deletePod
    deployment: str | None = None  # scale: namespace/name
    replicas: int = 0
    service: str | None = None  # setPolicy: namespace/name
    external_policy: str | None = None
    internal_policy: str | None = None
    node: str | None = None  # proxyHealthy
    healthy: bool = True  # proxyHealthy; edgeHealthChecks: whether the edge checks
    probe: ProbePlan | None = None  # probe, probeDuringConvergence
    loc: Loc = field(default=NOWHERE, compare=False)

    @property
    def changes_lab(self) -> bool:
        return self.action in CHANGE_ACTIONS


@dataclass(frozen=True)
class LabSpec:
    name: str
    description: str = ""
    proxy_mode: str = "iptables"
    nodes: tuple[LabNode, ...] = (LabNode("node-1"),)
    network: NetworkSpec = field(default_factory=NetworkSpec)
    clients: tuple[ClientSpec, ...] = ()
    load_balancer: LoadBalancerConfig = field(default_factory=LoadBalancerConfig)
    kube_proxy: KubeProxySpec = field(default_factory=KubeProxySpec)
    probes: tuple[ProbePlan, ...] = ()
    steps: tuple[Step, ...] = ()  # run after the probes, in order
    # where each network setting was written (or the Lab's line for defaults)
    locs: Mapping[str, Loc] = field(default_factory=dict, compare=False, hash=False)

    def loc(self, key: str) -> Loc:
        return self.locs.get(key, NOWHERE)


@dataclass(frozen=True)
class Requirement:
    """One matchExpressions entry of a label selector."""

    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions


@dataclass(frozen=True)
class AffinityTerm:
    """A podAntiAffinity term: keep away from pods the selector matches."""

    selector: LabelSelector | None  # None matches no pod, as in Kubernetes
    topology_key: str
    namespaces: tuple[str, ...]  # where the selected pods live
    weight: int = 0  # preferred terms only

    def selects(self, labels: Mapping[str, str], namespace: str) -> bool:
        return (
            self.selector is not None
            and namespace in self.namespaces
            and self.selector.matches(labels)
        )


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"  # NoSchedule | PreferNoSchedule | NoExecute


@dataclass(frozen=True)
class Toleration:
    key: str = ""  # empty with Exists: tolerates every taint
    operator: str = "Equal"  # Equal | Exists
    value: str = ""
    effect: str = ""  # empty: every effect

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


# What the DaemonSet controller adds to every DaemonSet pod: it runs on cordoned,
# not-ready and pressured nodes, but not on a control plane it does not tolerate.
DAEMON_TOLERATIONS = tuple(
    Toleration(f"node.kubernetes.io/{key}", "Exists", "", effect)
    for key, effect in (
        ("not-ready", "NoExecute"),
        ("unreachable", "NoExecute"),
        ("disk-pressure", "NoSchedule"),
        ("memory-pressure", "NoSchedule"),
        ("pid-pressure", "NoSchedule"),
        ("unschedulable", "NoSchedule"),
    )
)


def tolerated(taints: Iterable[Taint], tolerations: Iterable[Toleration]) -> Taint | None:
    """The first taint that keeps a pod off a node (NoSchedule, NoExecute); None if none."""
    tolerations = tuple(tolerations)
    for taint in taints:
        if taint.effect == "PreferNoSchedule":
            continue
        if not any(t.tolerates(taint) for t in tolerations):
            return taint
    return None


@dataclass(frozen=True)
class PodTemplate:
    """What a Pod, or a Deployment's template, says about the pods it makes."""

    labels: tuple[tuple[str, str], ...] = ()
    node_name: str | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    anti_required: tuple[AffinityTerm, ...] = ()
    anti_preferred: tuple[AffinityTerm, ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    loc: Loc = field(default=NOWHERE, compare=False)  # the pod spec
    node_selector_loc: Loc = field(default=NOWHERE, compare=False)
    anti_loc: Loc = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    template: PodTemplate
    ip: str | None = None  # status.podIP, or the address an EndpointSlice gave
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    running: bool = True  # phase neither Succeeded nor Failed
    from_slice: bool = False  # made for an EndpointSlice address no Pod had
    order: int = 0  # document order; placement follows it
    loc: Loc = field(default=NOWHERE, compare=False)
    owner: str | None = None  # the workload (Kind/namespace/name) in the file that owns it


@dataclass(frozen=True)
class Deployment:
    """A Deployment, StatefulSet or DaemonSet: a template and the pods made from it.

    Pods of the file that the workload owns (ownerReferences, directly or through a
    ReplicaSet) are its pods, as the cluster placed them; the lab makes only the rest.
    """

    name: str
    namespace: str
    replicas: int
    selector: LabelSelector
    template: PodTemplate
    order: int = 0
    loc: Loc = field(default=NOWHERE, compare=False)
    kind: str = "Deployment"  # Deployment | StatefulSet | DaemonSet
    owned: tuple[str, ...] = ()  # Pod objects of the file it owns, in file order
    daemon_pods: tuple[tuple[str, str], ...] = ()  # DaemonSet: (pod, node) per eligible node
    start: int = 0  # StatefulSet spec.ordinals.start

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    def pod_names(self) -> list[str]:
        """Its pods: the owned ones first, then replicas named like a StatefulSet's."""
        if self.kind == "DaemonSet":
            return list(self.owned) if self.owned else [pod for pod, _ in self.daemon_pods]
        names = list(self.owned[: self.replicas])
        taken = set(self.owned)
        i = self.start
        while len(names) < self.replicas:
            candidate = f"{self.name}-{i}"
            i += 1
            if candidate not in taken:
                names.append(candidate)
        return names

    def made(self) -> list[str]:
        """The pods the lab makes from the template (those the file does not hold)."""
        owned = set(self.owned)
        return [name for name in self.pod_names() if name not in owned]

    def node_of(self, pod: str) -> str | None:
        """A DaemonSet pod's node."""
        return dict(self.daemon_pods).get(pod)


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    protocol: str = TCP
    target_port: int | str = 0  # 0: same as port
    node_port: int | None = None
    loc: Loc = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str = "default"
    type: str = "ClusterIP"
    cluster_ip: str | None = None  # None: allocate (unless headless)
    headless: bool = False
    ports: tuple[ServicePort, ...] = ()
    selector: tuple[tuple[str, str], ...] = ()  # empty: endpoints only from EndpointSlices
    external_ips: tuple[str, ...] = ()
    lb_ingress: tuple[str, ...] = ()  # status.loadBalancer.ingress[].ip
    load_balancer_ip: str | None = None  # spec.loadBalancerIP (deprecated but honoured)
    external_policy: str = "Cluster"
    internal_policy: str = "Cluster"
    health_check_node_port: int | None = None
    session_affinity: str = "None"
    affinity_timeout: int | None = None  # seconds, ClientIP only
    source_ranges: tuple[str, ...] = ()
    allocate_lb_node_ports: bool = True
    publish_not_ready: bool = False
    loc: Loc = field(default=NOWHERE, compare=False)
    selector_loc: Loc = field(default=NOWHERE, compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def external(self) -> bool:
        return self.type in ("NodePort", "LoadBalancer")

    def has_node_port(self, port: ServicePort) -> bool:
        """Whether this port ends up with a nodePort once planning allocates them."""
        if port.node_port is not None:
            return True
        return self.type == "NodePort" or (
            self.type == "LoadBalancer" and self.allocate_lb_node_ports
        )


@dataclass(frozen=True)
class SlicePort:
    name: str
    port: int | None
    protocol: str = TCP


@dataclass(frozen=True)
class SliceEndpoint:
    ip: str
    pod: str  # the Pod that has this address (maybe one made for it)
    node: str | None = None
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    loc: Loc = field(default=NOWHERE, compare=False)


@dataclass(frozen=True)
class EndpointSlice:
    name: str
    namespace: str
    service: str  # name, same namespace
    ports: tuple[SlicePort, ...] = ()
    endpoints: tuple[SliceEndpoint, ...] = ()
    loc: Loc = field(default=NOWHERE, compare=False)

    @property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.service}"


@dataclass(frozen=True)
class NodeObject:
    """A `v1 Node`: its labels, pod CIDR and InternalIP replace the planned ones."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()
    pod_cidr: str | None = None
    ip: str | None = None
    loc: Loc = field(default=NOWHERE, compare=False)
    pod_cidr_loc: Loc = field(default=NOWHERE, compare=False)
    ip_loc: Loc = field(default=NOWHERE, compare=False)
    taints: tuple[Taint, ...] = ()  # spec.taints, and unschedulable as Kubernetes taints it


def node_labels(node: LabNode, obj: NodeObject | None) -> dict[str, str]:
    """A node's labels: the well-known ones, then the Lab's, then its Node object's."""
    labels = {**well_known_labels(node.name, node.zone), **dict(node.labels)}
    if obj is not None:
        labels.update(obj.labels)
    return labels


@dataclass(frozen=True)
class Scenario:
    file: str
    lab: LabSpec
    services: tuple[Service, ...] = ()
    deployments: tuple[Deployment, ...] = ()
    pods: tuple[Pod, ...] = ()  # Pod objects and pods made for EndpointSlice addresses
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    node_objects: tuple[NodeObject, ...] = ()
    warnings: tuple[str, ...] = ()

    def service(self, key: str) -> Service:
        if "/" not in key:
            key = f"default/{key}"
        return next(s for s in self.services if s.key == key)

    def workload(self, key: str) -> Deployment | None:
        return next((d for d in self.deployments if d.key == key), None)


# -- public entry points ----------------------------------------------------------


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    name = str(path)
    return _checked(name, lambda: yamlsrc.parse(yamlsrc.read(name), name))


def loads(text: str | bytes, filename: str = "<string>") -> Scenario:
    """Validate scenario text; `filename` is only used in messages."""
    return _checked(filename, lambda: yamlsrc.parse(text, filename))


def load_dict(obj_list: Iterable[Any], filename: str = "<inline>") -> Scenario:
    """Validate documents given as Python data; an error's line is the document number."""
    return _checked(
        filename,
        lambda: [yamlsrc.from_plain(doc, filename, i + 1) for i, doc in enumerate(obj_list)],
    )


def _checked(filename: str, documents: Callable[[], list[Any]]) -> Scenario:
    """Every failure, of the YAML or of the scenario, comes out as one ScenarioError."""
    try:
        docs = documents()
        return _Reader(filename).scenario(
            [(i + 1, doc) for i, doc in enumerate(docs) if doc is not None]
        )
    except ScenarioError:
        raise
    except SourceError as exc:
        raise ScenarioError(exc.file, exc.line, exc.reason, exc.path) from None


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
    "securityContext terminationGracePeriodSeconds activeDeadlineSeconds serviceAccount "
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
    "restartPolicy volumeMounts volumeDevices livenessProbe readinessProbe startupProbe lifecycle "
    "terminationMessagePath terminationMessagePolicy securityContext stdin stdinOnce tty"
)
_SERVICE_SPEC_UNSUPPORTED = {
    "externalName": "ExternalName services are not modelled (kube-proxy writes no rules for them)",
    "trafficDistribution": "not modelled: the lab does not do topology-aware routing",
    "topologyKeys": "not modelled (and removed from Kubernetes in 1.22)",
}


# -- the reader -----------------------------------------------------------------------


@dataclass
class _Seen:
    """Names, addresses and ports already taken, with where they were first written."""

    where: dict[tuple[str, Any], Loc] = field(default_factory=dict)

    def claim(self, kind: str, value: Any, loc: Loc, message: Callable[[Loc], str]) -> None:
        first = self.where.get((kind, value))
        if first is not None:
            raise loc.error(message(first))
        self.where[(kind, value)] = loc

    def owner(self, kind: str, value: Any) -> Loc | None:
        return self.where.get((kind, value))


_KINDS = {
    "Lab": LAB_API,
    "Service": "v1",
    "Pod": "v1",
    "Node": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "EndpointSlice": "discovery.k8s.io/v1",
    "Endpoints": "v1",
}
_ORDER = (
    "Lab",
    "Node",
    "Service",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Pod",
    "EndpointSlice",
    "Endpoints",
)
_WORKLOAD_FIELDS = {
    "Deployment": (
        ("replicas", "selector", "template"),
        "strategy revisionHistoryLimit progressDeadlineSeconds minReadySeconds paused",
    ),
    "StatefulSet": (
        ("replicas", "selector", "template", "ordinals"),
        "serviceName podManagementPolicy updateStrategy revisionHistoryLimit minReadySeconds "
        "persistentVolumeClaimRetentionPolicy volumeClaimTemplates",
    ),
    "DaemonSet": (("selector", "template"), "updateStrategy revisionHistoryLimit minReadySeconds"),
}


def _loose(value: Any, *keys: str) -> Any:
    """A nested value read without validation (None when absent or of another shape)."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _controller_ref(meta: Any) -> tuple[str, str] | None:
    """(kind, name) of the controller in metadata.ownerReferences, loosely read."""
    refs = _loose(meta, "ownerReferences")
    if not isinstance(refs, list):
        return None
    entries = [r for r in refs if isinstance(r, dict)]
    chosen = [r for r in entries if r.get("controller") is True] or entries[:1]
    for ref in chosen:
        kind, name = ref.get("kind"), ref.get("name")
        if isinstance(kind, str) and isinstance(name, str):
            return kind, name
    return None


class _Reader:
    """Reads one file's documents; keeps what earlier objects claimed for later checks."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.seen = _Seen()
        self.warnings: list[str] = []
        self.lab: LabSpec | None = None
        self.lab_probes: _V | None = None
        self.lab_steps: _V | None = None
        self.probe_names: dict[str, Loc] = {}  # probes and steps share one name space
        self.nets: dict[str, ipaddress.IPv4Network] = {}
        self.node_objects: dict[str, NodeObject] = {}
        self.services: dict[str, Service] = {}
        self.deployments: list[Deployment] = []
        self.pods: dict[str, Pod] = {}  # by name: pod names are unique in the lab
        self.slices: list[EndpointSlice] = []
        self.pod_total = 0
        self.node_ports: dict[int, tuple[str, Loc]] = {}  # nodePort -> service key, where
        self.pod_by_ip: dict[str, str] = {}
        self.slice_pods: dict[str, int] = {}  # service -> pods made for its EndpointSlices
        self.pod_owner: dict[str, str] = {}  # pod name -> Kind/namespace/name, from the dump
        self.skipped: Counter[str] = Counter()
        self.skipped_loc: Loc | None = None
        self.host_network: list[str] = []  # hostNetwork objects no Service selects
        self.host_network_loc: Loc | None = None
        self.problems: list[ScenarioError] = []
        self.broken: set[tuple[str, str]] = set()  # objects whose reading failed

    # documents

    def scenario(self, docs: list[tuple[int, Any]]) -> Scenario:
        objects = self._objects(docs)
        labs = [obj for kind, obj in objects if kind == "Lab"]
        if not labs:
            self._raise_problems()
            raise ScenarioError(
                self.file,
                1,
                f"no Lab object: a scenario needs one (apiVersion: {LAB_API}, kind: Lab)",
            )
        if len(labs) > 1:
            raise (
                labs[1]
                .key_loc("kind")
                .error(f"a second Lab object (the first is at line {labs[0].loc.line})")
            )
        self._guard(lambda: self._read_lab(labs[0], 0))
        if self.lab is None:  # everything else is checked against it
            self._raise_problems()
        self._owners(objects)
        for kind in _ORDER[1:]:
            for order, (k, obj) in enumerate(objects):
                if k == kind:
                    read = getattr(self, f"_read_{kind.lower()}")
                    self._guard(lambda: read(obj, order), kind, obj)  # noqa: B023
        assert self.lab is not None
        probes: tuple[ProbePlan, ...] = ()
        steps: tuple[Step, ...] = ()
        if self.lab_probes is not None:
            probes = self._probes(self.lab_probes)
        if self.lab_steps is not None:
            steps = self._steps(self.lab_steps)
        self._raise_problems()
        self._warn_skipped()
        self._warn_empty_services()
        self._warn_excluded_nodes()
        return Scenario(
            file=self.file,
            lab=replace(self.lab, probes=probes, steps=steps),
            services=tuple(self.services.values()),
            deployments=tuple(self.deployments),
            pods=tuple(self.pods.values()),
            endpoint_slices=tuple(self.slices),
            node_objects=tuple(self.node_objects.values()),
            warnings=tuple(self.warnings),
        )

    def _guard(self, read: Callable[[], Any], kind: str = "", obj: _V | None = None) -> Any:
        """Read one part; on an error note it, remember the part as broken, and go on."""
        try:
            return read()
        except _Cascade:
            return None
        except ScenarioError as exc:
            self.problems.append(exc)
            if obj is not None:
                meta = obj.value.get("metadata") if isinstance(obj.value, dict) else None
                name = _loose(meta, "name")
                namespace = _loose(meta, "namespace")
                if isinstance(name, str):
                    namespace = namespace if isinstance(namespace, str) else "default"
                    self.broken.add((kind, f"{namespace}/{name}"))
                    self.broken.add(("name", name))
            return None

    def _raise_problems(self) -> None:
        if not self.problems:
            return
        first = self.problems[0]
        error = ScenarioError(first.file, first.line, first.reason, first.path)
        error.problems = tuple(self.problems[:MAX_PROBLEMS])
        error.more = max(0, len(self.problems) - MAX_PROBLEMS)
        raise error

    def _cascade(self, v: _V, kind: str, key: str, name: str | None = None) -> None:
        """Stay silent about a reference to an object whose own error is already listed."""
        if (kind, key) in self.broken or (name is not None and ("name", name) in self.broken):
            raise _Cascade(v.loc.file, v.loc.line, "follows an earlier error", v.loc.path)
        if name is not None and any(
            k == "name" and name.startswith(f"{broken}-") for k, broken in self.broken
        ):
            raise _Cascade(v.loc.file, v.loc.line, "follows an earlier error", v.loc.path)

    def _owners(self, objects: list[tuple[str, _V]]) -> None:
        """Which workload of the file owns each Pod, read loosely before anything is placed.

        A Deployment owns its pods through a ReplicaSet: named by the ReplicaSet object's
        own ownerReference when the file has it, else by the pod-template-hash suffix.
        """
        replica_sets: dict[tuple[str, str], tuple[str, str]] = {}
        for kind, obj in objects:
            if kind == "ReplicaSet":
                meta = _loose(obj.value, "metadata")
                ref = _controller_ref(meta)
                name, namespace = _loose(meta, "name"), _loose(meta, "namespace") or "default"
                if ref is not None and isinstance(name, str) and isinstance(namespace, str):
                    replica_sets[namespace, name] = ref
        for kind, obj in objects:
            if kind != "Pod":
                continue
            meta = _loose(obj.value, "metadata")
            name, namespace = _loose(meta, "name"), _loose(meta, "namespace") or "default"
            ref = _controller_ref(meta)
            if ref is None or not isinstance(name, str) or not isinstance(namespace, str):
                continue
            owner_kind, owner = ref
            if owner_kind == "ReplicaSet":
                found = replica_sets.get((namespace, owner))
                if found is not None and found[0] == "Deployment":
                    owner_kind, owner = found
                else:
                    suffix = _loose(meta, "labels", POD_TEMPLATE_HASH)
                    if not isinstance(suffix, str) or not owner.endswith(f"-{suffix}"):
                        continue
                    owner_kind, owner = "Deployment", owner[: -len(suffix) - 1]
            if owner_kind in _WORKLOAD_FIELDS:
                self.pod_owner[name] = f"{owner_kind}/{namespace}/{owner}"

    def _objects(self, docs: list[tuple[int, Any]]) -> list[tuple[str, _V]]:
        out: list[tuple[str, _V]] = []
        for number, doc in docs:
            line = doc.line if isinstance(doc, (YMap, YList)) else number
            root = _V(doc, Loc(self.file, line))
            if not isinstance(doc, dict):
                root.fail(f"a document must be a mapping (an object), not {_kind(doc)}")
            kind = self._guard(lambda root=root: self._kind_of(root))
            if kind is None:
                continue
            if kind == "List":
                root.mapping(("apiVersion", "kind", "items", "metadata"))
                items = root.get("items")
                for item in items.items() if items is not None else ():
                    if not isinstance(item.value, dict):
                        item.fail(f"must be an object (a mapping), not {_kind(item.value)}")
                    sub_kind = self._guard(lambda item=item: self._kind_of(item))
                    if sub_kind == "List":
                        raise item.key_loc("kind").error("a List inside a List is not supported")
                    if sub_kind is not None:
                        out.append((sub_kind, item))
            else:
                out.append((kind, root))
        for kind, obj in out:
            if kind in SKIPPED_KINDS:
                self._skip(kind, obj.loc)
        return out

    def _skip(self, kind: str, loc: Loc) -> None:
        self.skipped[kind] += 1
        if self.skipped_loc is None:
            self.skipped_loc = loc

    def _kind_of(self, obj: _V) -> str:
        kind_v = obj.need("kind")
        kind = kind_v.string()
        api_v = obj.need("apiVersion")
        api = api_v.string()
        if kind == "List":
            if api != "v1":
                api_v.fail(f"List needs apiVersion v1, not {show(api)}")
            return kind
        if kind in SKIPPED_KINDS:
            return kind
        if kind == "NetworkPolicy":
            kind_v.fail("NetworkPolicy is not modelled: the lab has no network policy engine")
        if kind not in _KINDS:
            kinds = ", ".join(_KINDS)
            kind_v.fail(
                f"{show(kind)} is not a supported kind ({kinds}, List; objects outside "
                "Service traffic such as ConfigMap or Ingress are skipped)"
            )
        if api != _KINDS[kind]:
            api_v.fail(f"{kind} needs apiVersion {_KINDS[kind]}, not {show(api)}")
        return kind

    def _metadata(
        self, obj: _V, namespaced: bool = True, name_check: Callable[[_V], str] | None = None
    ) -> tuple[str, str, dict[str, str], _V]:
        meta = obj.need("metadata")
        ignored = _META_IGNORED + ("deletionTimestamp",)
        meta.mapping(("name", "namespace", "labels"), ignored)
        name_v = meta.need("name")
        name = name_check(name_v) if name_check else name_v.dns_label()
        namespace = "default"
        ns_v = meta.get("namespace")
        if ns_v is not None:
            if not namespaced:
                ns_v.fail("this kind of object has no namespace")
            namespace = ns_v.dns_label(what="namespace")
        labels_v = meta.get("labels")
        labels = labels_v.string_map() if labels_v is not None else {}
        return name, namespace, labels, meta

    # Lab

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
        kp_v.mapping(("masqueradeAll", "detectLocalMode", "localhostNodePorts", "whatIf"))
        out = KubeProxySpec()
        if (v := kp_v.get("masqueradeAll")) is not None:
            out = replace(out, masquerade_all=v.boolean())
        if (v := kp_v.get("detectLocalMode")) is not None:
            out = replace(out, detect_local_mode=v.enum("ClusterCIDR", "NodeCIDR", "None"))
        if (v := kp_v.get("localhostNodePorts")) is not None:
            out = replace(out, localhost_nodeports=v.boolean())
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
            ("containers", "nodeName", "nodeSelector", "affinity", "tolerations"),
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

    def _probes(self, probes_v: _V) -> tuple[ProbePlan, ...]:
        found = [self._guard(lambda item=item: self._probe(item)) for item in probes_v.items()]
        return tuple(p for p in found if p is not None)

    def _claim_name(self, name_v: _V, what: str) -> str:
        name = name_v.dns_label(what=f"{what} name")
        if name in self.probe_names:
            first = self.probe_names[name].line
            name_v.fail(f"duplicate {what} name {name!r} (first at line {first})")
        self.probe_names[name] = name_v.loc
        return name

    def _probe(self, item: _V, step_name: str | None = None) -> ProbePlan:
        """A spec.probes entry; inside a step the step's name names it."""
        item.mapping(
            ("name", "from", "to", "protocol", "count", "expect", "measureLatency", "mode")
        )
        if step_name is None:
            name = self._claim_name(item.need("name"), "probe")
        else:
            name = step_name
            if (name_v := item.get("name")) is not None and name_v.value != step_name:
                name_v.fail(f"a step's probe is named by the step ({step_name!r}); leave it out")
        source_v = item.need("from")
        source = source_v.string()
        if self.seen.owner("source", source) is None:
            self._cascade(source_v, "", "", source)
            source_v.fail(f"{show(source)} is not a client, pod or node of this scenario")
        protocol_v = item.get("protocol")
        protocol = _protocol(protocol_v) if protocol_v else None
        target, protocol = self._target(item.need("to"), protocol)
        count_v = item.get("count")
        count = (
            count_v.integer(1, MAX_PROBE_COUNT, f"{count_v.value} is outside 1-{MAX_PROBE_COUNT}")
            if count_v
            else 1
        )
        expect_v = item.get("expect")
        expect = self._expectation(expect_v) if expect_v is not None else None
        latency_v = item.get("measureLatency")
        latency = latency_v.boolean() if latency_v is not None else False
        if latency and protocol != TCP:
            latency_v.fail("latency is measured on TCP connections only")
        mode_v = item.get("mode")
        mode = mode_v.enum(*PROBE_MODES) if mode_v is not None else PROBE_MODES[0]
        if mode == "packet":
            assert self.lab is not None
            if source in {n.name for n in self.lab.nodes}:
                mode_v.fail(
                    "packet probes start at a client or a pod: a node's own packets are "
                    "NATed before any capture point can see them"
                )
            if latency:
                mode_v.fail("latency is measured on connections (mode: connection)")
        return ProbePlan(name, source, target, protocol, count, expect, latency, mode)

    # steps

    def _steps(self, steps_v: _V) -> tuple[Step, ...]:
        """Steps in order; each is checked against the world the steps before it leave."""
        alive = {p for p, pod in self.pods.items() if pod.owner is None}
        alive |= {p for d in self.deployments for p in d.pod_names()}
        deleted: set[str] = set()
        changed = False
        out = []
        for item in steps_v.items():
            step = self._guard(lambda item=item: self._step(item, alive, deleted, changed))  # noqa: B023
            if step is not None:
                changed = changed or step.changes_lab
                out.append(step)
        return tuple(out)

    def _step(self, item: _V, alive: set[str], deleted: set[str], changed: bool) -> Step:
        """One step; `alive` and `deleted` follow what it does to the pods."""
        item.mapping(("name", *STEP_ACTIONS))
        name = self._claim_name(item.need("name"), "step")
        actions = [a for a in STEP_ACTIONS if item.get(a) is not None]
        if not actions:
            item.fail(f"a step needs one action: {', '.join(STEP_ACTIONS)}")
        if len(actions) > 1:
            raise item.key_loc(actions[1]).error(
                f"one action per step: {actions[0]} and {actions[1]} are both given"
            )
        action = actions[0]
        v = item.need(action)
        step = Step(name, action, loc=item.loc)
        if action == "deletePod":
            pod = v.string()
            if pod not in alive:
                if pod not in deleted:
                    self._cascade(v, "", "", pod)
                why = "an earlier step deleted it" if pod in deleted else "no such pod"
                v.fail(f"cannot delete pod {show(pod)}: {why}")
            alive.discard(pod)
            deleted.add(pod)
            step = replace(step, pod=pod)
        elif action == "scale":
            step = self._scale_step(v, step, alive, deleted)
        elif action == "setPolicy":
            step = self._policy_step(v, step)
        elif action == "proxyHealthy":
            v.mapping(("node", "healthy"))
            node_v = v.need("node")
            node = node_v.string()
            assert self.lab is not None
            names = [n.name for n in self.lab.nodes]
            if node not in names:
                node_v.fail(f"no node named {show(node)} in the lab ({_few(names)})")
            step = replace(step, node=node, healthy=v.need("healthy").boolean())
        elif action == "edgeHealthChecks":
            if self.lab is not None and self.lab.load_balancer.mode != "ecmp":
                v.fail("the edge checks health only in loadBalancer mode ecmp")
            step = replace(step, healthy=v.boolean())
        elif action == "waitForHealthChecks":
            if v.boolean() is not True:
                v.fail("must be true (leave the step out not to wait)")
        else:
            if action == "probeDuringConvergence" and not changed:
                v.fail(
                    "probeDuringConvergence watches the edge converge after a change: "
                    "put a deletePod, scale, setPolicy or proxyHealthy step before it"
                )
            probe = self._probe(v, step_name=name)
            if action == "probeDuringConvergence" and probe.target.via not in (
                "loadBalancer",
                "externalIP",
            ):
                (v.get("to") or v).fail(
                    "probeDuringConvergence watches the edge: aim it at "
                    "via: loadBalancer or via: externalIP"
                )
            step = replace(step, probe=probe)
        return step

    def _scale_step(self, v: _V, step: Step, alive: set[str], deleted: set[str]) -> Step:
        v.mapping(("deployment", "replicas"))
        dep_v = v.need("deployment")
        ref = dep_v.string()
        key = ref if "/" in ref else f"default/{ref}"
        found = [
            d
            for d in self.deployments
            if f"{d.namespace}/{d.name}" == key and d.kind in ("Deployment", "StatefulSet")
        ]
        if not found:
            self._cascade(dep_v, "Deployment", key)
            self._cascade(dep_v, "StatefulSet", key)
            dep_v.fail(f"no Deployment {key} in the scenario")
        replicas_v = v.need("replicas")
        replicas = replicas_v.integer(0, MAX_REPLICAS, f"must be 0-{MAX_REPLICAS}")
        alive -= set(found[0].pod_names())
        alive |= set(replace(found[0], replicas=replicas).pod_names()) - deleted
        return replace(step, deployment=key, replicas=replicas)

    def _policy_step(self, v: _V, step: Step) -> Step:
        v.mapping(("service", "externalTrafficPolicy", "internalTrafficPolicy"))
        svc_v = v.need("service")
        ref = svc_v.string()
        key = ref if "/" in ref else f"default/{ref}"
        svc = self.services.get(key)
        if svc is None:
            self._cascade(svc_v, "Service", key)
            svc_v.fail(f"no Service {key} in the scenario")
        ext_v, int_v = v.get("externalTrafficPolicy"), v.get("internalTrafficPolicy")
        if ext_v is None and int_v is None:
            v.fail("give externalTrafficPolicy, internalTrafficPolicy or both")
        external = ext_v.enum("Cluster", "Local") if ext_v is not None else None
        internal = int_v.enum("Cluster", "Local") if int_v is not None else None
        if external == "Local" and not svc.external:
            assert ext_v is not None
            ext_v.fail(f"Service {key} is {svc.type}: Local needs NodePort or LoadBalancer")
        return replace(step, service=key, external_policy=external, internal_policy=internal)

    def _target(self, to_v: _V, protocol: str | None) -> tuple[Target, str]:
        to_v.mapping(("service", "port", "via", "node", "address"))
        service_v = to_v.get("service")
        address_v = to_v.get("address")
        if address_v is not None:
            if service_v is not None:
                service_v.fail("give either service or address, not both")
            for key in ("via", "node"):
                if (extra := to_v.get(key)) is not None:
                    extra.fail("only used with service")
            address = address_v.ipv4()
            port_v = to_v.need("port")
            port = port_v.integer(1, 65535, f"{port_v.value} is outside the port range 1-65535")
            return Target(address=address, port=port), protocol or TCP
        if service_v is None:
            to_v.fail("needs a service (with port and via) or an address (with port)")
        ref = service_v.string()
        key = ref if "/" in ref else f"default/{ref}"
        svc = self.services.get(key)
        if svc is None:
            self._cascade(service_v, "Service", key)
            service_v.fail(f"no Service {key} in the scenario")
        port_v = to_v.get("port")
        sport = _pick_port(svc, port_v, protocol, to_v)
        via_v = to_v.get("via")
        via = (
            via_v.enum("clusterIP", "nodePort", "loadBalancer", "externalIP")
            if via_v
            else "clusterIP"
        )
        where = via_v or to_v
        node = None
        node_v = to_v.get("node")
        if node_v is not None and via != "nodePort":
            node_v.fail("only used with via: nodePort")
        if via == "clusterIP" and svc.headless:
            where.fail(f"Service {key} is headless: it has no ClusterIP")
        if via == "nodePort":
            if not svc.external:
                where.fail(f"Service {key} is {svc.type}: it has no nodePort")
            if not svc.has_node_port(sport):
                where.fail(
                    f"port {sport.port} of Service {key} has no nodePort "
                    "(allocateLoadBalancerNodePorts is false)"
                )
            assert self.lab is not None
            names = [n.name for n in self.lab.nodes]
            node = names[0]
            if node_v is not None:
                node = node_v.string()
                if node not in names:
                    node_v.fail(f"no node named {show(node)} in the lab ({_few(names)})")
        if via == "loadBalancer" and svc.type != "LoadBalancer":
            where.fail(f"Service {key} is {svc.type}, not LoadBalancer")
        if via == "externalIP" and not svc.external_ips:
            where.fail(f"Service {key} has no externalIPs")
        port: int | str = sport.port if port_v is None else port_v.value
        target = Target(service=key, port=port, via=via, node=node)
        return target, sport.protocol

    def _expectation(self, v: _V) -> Expectation:
        v.mapping(("outcome", "outcomes", "completed", "sourceIP", "pods", "returnPath", "share"))
        out = Expectation()
        if (o := v.get("outcome")) is not None:
            out = replace(out, outcome=o.enum("delivered", "dropped", "rejected"))
        if (c := v.get("completed")) is not None:
            fraction = c.number()
            if not 0 <= fraction <= 1:
                c.fail(f"{fraction:g} is outside [0, 1]: the fraction of attempts that complete")
            out = replace(out, completed=fraction)
        if (oc := v.get("outcomes")) is not None:
            out = replace(out, outcomes=self._outcomes(oc, o))
        if (s := v.get("sourceIP")) is not None:
            source = s.string()
            if source not in ("client", "node"):
                try:
                    source = str(ipaddress.IPv4Address(source))
                except ValueError:
                    s.fail(f"{show(source)} is not client, node or an IPv4 address")
            out = replace(out, source_ip=source)
        if (p := v.get("pods")) is not None:
            pods = []
            for item in p.items():
                pod = self._known_pod(item)
                if pod in pods:
                    item.fail(f"{pod} is listed twice")
                pods.append(pod)
            out = replace(out, pods=tuple(pods))
        if (r := v.get("returnPath")) is not None:
            out = replace(out, return_path=r.enum("correct", "broken", "mixed", "none"))
        if (sh := v.get("share")) is not None:
            if not isinstance(sh.value, dict):
                sh.fail(f"must be a mapping of pod name to fraction, not {_kind(sh.value)}")
            shares = []
            for pod in sh.value:
                sub = _V(sh.value[pod], sh.key_loc(pod))
                self._known_pod(_V(pod, sub.loc))
                if out.pods is not None and pod not in out.pods:
                    sub.fail(f"{pod} is not in expect.pods")
                fraction = sub.number()
                if not 0 <= fraction <= 1:
                    sub.fail(f"{fraction} is outside [0, 1]")
                shares.append((pod, fraction))
            if not shares:
                sh.fail("must name at least one pod")
            total = sum(f for _, f in shares)
            if abs(total - 1) > SHARE_TOLERANCE:
                sh.fail(f"shares add up to {total:g}, not 1")
            out = replace(out, share=tuple(shares))
        return out

    def _outcomes(self, v: _V, outcome_v: _V | None) -> tuple[tuple[str, float], ...]:
        """expect.outcomes: {delivered: 0.333, dropped: 0.667}, fractions adding up to 1."""
        if outcome_v is not None:
            outcome_v.fail("give either outcome or outcomes, not both")
        if not isinstance(v.value, dict) or not v.value:
            v.fail(f"must map delivered, dropped or rejected to a fraction, not {_kind(v.value)}")
        found = []
        for name in v.value:
            sub = _V(v.value[name], v.key_loc(name))
            if name not in ("delivered", "dropped", "rejected"):
                _V(name, sub.loc).fail(
                    f"unknown outcome {show(name)} (expected: delivered, dropped, rejected)"
                )
            fraction = sub.number()
            if not 0 <= fraction <= 1:
                sub.fail(f"{fraction} is outside [0, 1]")
            found.append((name, fraction))
        total = sum(f for _, f in found)
        if abs(total - 1) > SHARE_TOLERANCE:
            v.fail(f"outcomes add up to {total:g}, not 1")
        return tuple(found)

    def _known_pod(self, v: _V) -> str:
        name = v.string()
        if self.seen.owner("pod", name) is None:
            self._cascade(v, "", "", name)
            v.fail(f"no pod named {show(name)} in the scenario")
        return name

    # warnings

    def _warn_skipped(self) -> None:
        if self.host_network and self.host_network_loc is not None:
            named = ", ".join(self.host_network[:3]) + (
                ", ..." if len(self.host_network) > 3 else ""
            )
            self.warnings.insert(
                0,
                self.host_network_loc.warning(
                    f"skipped {len(self.host_network)} hostNetwork object"
                    f"{'s' if len(self.host_network) != 1 else ''} no Service selects: {named}"
                ),
            )
        if not self.skipped or self.skipped_loc is None:
            return
        counts = ", ".join(f"{kind} x{n}" for kind, n in sorted(self.skipped.items()))
        total = sum(self.skipped.values())
        self.warnings.insert(
            0,
            f"{one_line(self.file)}:{self.skipped_loc.line}: skipped {total} "
            f"object{'s' if total != 1 else ''} kube-proxy does not read: {counts}",
        )

    def _warn_excluded_nodes(self) -> None:
        """The edge sends to every node; a cloud load balancer leaves these out."""
        assert self.lab is not None
        if not any(s.type == "LoadBalancer" or s.external_ips for s in self.services.values()):
            return
        for node in self.lab.nodes:
            obj = self.node_objects.get(node.name)
            if EXCLUDE_FROM_LB_LABEL in node_labels(node, obj):
                loc = obj.loc if obj is not None else node.loc
                self.warnings.append(
                    loc.warning(
                        f"node {node.name} is labelled exclude-from-external-load-balancers: "
                        "cloud load balancers skip it, the lab's edge does not"
                    )
                )

    def _warn_empty_services(self) -> None:
        sliced = {s.service_key for s in self.slices}
        templates: list[tuple[str, dict[str, str]]] = [
            (d.namespace, dict(d.template.labels)) for d in self.deployments if d.made()
        ]
        templates += [(p.namespace, dict(p.template.labels)) for p in self.pods.values()]
        for svc in self.services.values():
            if svc.key in sliced:
                continue
            if not svc.selector:
                self.warnings.append(
                    svc.loc.warning(
                        f"Service {svc.key} has no selector and no EndpointSlice in the "
                        "file: it has no endpoints"
                    )
                )
                continue
            wanted = dict(svc.selector)
            if not any(
                ns == svc.namespace and all(labels.get(k) == v for k, v in wanted.items())
                for ns, labels in templates
            ):
                self.warnings.append(
                    svc.selector_loc.warning(
                        f"Service {svc.key} selects no pod, so it has no endpoints"
                    )
                )


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


PROBE_MODES = ("connection", "packet")


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
        item.mapping(("name", "ports"), _CONTAINER_IGNORED)
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
