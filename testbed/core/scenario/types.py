"""The scenario as the loader returns it: constants, errors, places in a file, and the
objects (Lab, Node, Service, workloads, Pod, EndpointSlice) as plain frozen data."""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from testbed.core.model import (
    TCP,
    ContainerPort,
    LoadBalancerConfig,
    LoadPlan,
    ProbePlan,
)
from testbed.core.yamlsrc import SourceError, one_line

LAB_API = "testbed/v1alpha1"
NODE_PORT_RANGE = (30000, 32767)
MAX_NODES = 1000
MAX_REPLICAS = 10_000
MAX_PODS = 100_000
MAX_PROBE_COUNT = 100_000
MAX_LOADS = 10  # load steps in one scenario (they may all run at once)
DEFAULT_AFFINITY_TIMEOUT = 10800
KNOWN_FAULTS = frozenset({"no-snat", "no-conntrack-cleanup", "no-invalid-drop"})
IMPLEMENTATIONS = ("builtin", "upstream")  # spec.kubeProxy.implementation
VERSION = re.compile(r"v?\d+\.\d+\.\d+")  # spec.kubeProxy.version
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
    node_port_addresses: tuple[str, ...] = ()  # CIDRs or "primary"; () = kube-proxy's default
    implementation: str = "builtin"  # builtin | upstream
    version: str = ""  # vX.Y.Z of upstream Kubernetes ("": the newest built)
    tcp_be_liberal: bool = False  # conntrack.tcpBeLiberal


# a pod's place in its life, as steps set it (Scenario.lifecycle; no entry: running, ready)
STARTING = "starting"  # created, not ready yet: ready false, serving false
TERMINATING = "terminating"  # deleted, preStop running: ready false, serving, terminating
ABSENT = "absent"  # a StatefulSet pod between its deletion and its re-creation

CHANGE_ACTIONS = (
    "deletePod",
    "scale",
    "setPolicy",
    "proxyHealthy",
    "edgeHealthChecks",
    "rollout",
    "drainNode",
    "taintNode",
)
STEP_ACTIONS = (
    *CHANGE_ACTIONS,
    "waitForHealthChecks",
    "probe",
    "probeDuringConvergence",
    "load",
)


@dataclass(frozen=True)
class Rollout:
    """A Deployment's rolling update: the strategy's fences, and how its pods start and end.

    `max_surge` and `max_unavailable` are as written (an int or a percentage string);
    core/lifecycle.py resolves them as the Deployment controller does.
    """

    max_surge: int | str = "25%"
    max_unavailable: int | str = "25%"
    readiness_delay: float = 0.0  # seconds a new pod is starting (not ready) before ready
    grace: int | None = None  # terminationGracePeriodSeconds override (None: the template's)
    pre_stop: float | None = None  # preStop sleep override, seconds (None: the template's)


@dataclass(frozen=True)
class Drain:
    """`kubectl drain` of one node as the cluster autoscaler's scale-down makes it."""

    readiness_delay: float = 0.0  # seconds each replacement pod is starting


@dataclass(frozen=True)
class Step:
    """One thing done to the running lab after spec.probes, in the order written.

    Changes (deletePod, scale, setPolicy, proxyHealthy) edit the world; the rest
    wait for the edge or probe it. A probe step's verdict carries the step's name; so
    does a load's, which runs in the background until its `until` step has ended.
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
    load: LoadPlan | None = None  # load: runs in the background until its `until` step ends
    loc: Loc = field(default=NOWHERE, compare=False)
    rollout: Rollout | None = None  # rollout (deployment names the Deployment)
    drain: Drain | None = None  # drainNode (node names the node)
    taint: Taint | None = None  # taintNode (node names the node)

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
    grace: int = 30  # terminationGracePeriodSeconds (Kubernetes' default)
    pre_stop: float = 0.0  # seconds the longest preStop hook sleeps (0: none)

    @property
    def serve_seconds(self) -> float:
        """How long a deleted pod keeps answering: its preStop sleep, cut at the grace
        period (the lab's echo server stops at SIGTERM, right after preStop)."""
        return min(self.pre_stop, float(self.grace))


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


def next_index(name: str, pods: Iterable[str]) -> int:
    """One past the highest index among pods named NAME-INDEX (0 when none is)."""
    prefix = f"{name}-"
    found = [
        int(p[len(prefix) :]) for p in pods if p.startswith(prefix) and p[len(prefix) :].isdigit()
    ]
    return max(found) + 1 if found else 0


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
    # the pods a rollout or an eviction left (they replace the owned and numbered ones):
    # the first `replicas` of them are its pods, more replicas are numbered on after them
    names: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    def pod_names(self) -> list[str]:
        """Its pods: the owned ones first, then replicas named like a StatefulSet's."""
        if self.kind == "DaemonSet":
            return list(self.owned) if self.owned else [pod for pod, _ in self.daemon_pods]
        first = self.names or self.owned
        names = list(first[: self.replicas])
        taken = set(first)
        i = self.start if not self.names else next_index(self.name, self.names)
        while len(names) < self.replicas:
            candidate = f"{self.name}-{i}"
            i += 1
            if candidate not in taken:
                names.append(candidate)
        return names

    def next_names(self, count: int) -> list[str]:
        """`count` fresh pod names, numbered on from the highest it has (web-3 after web-2)."""
        have = self.pod_names()
        taken = set(have) | set(self.owned)
        i = max(self.start, next_index(self.name, have))
        out: list[str] = []
        while len(out) < count:
            candidate = f"{self.name}-{i}"
            i += 1
            if candidate not in taken:
                out.append(candidate)
        return out

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
    # pods a step has put in a lifecycle state: (pod, "starting" | "terminating")
    lifecycle: tuple[tuple[str, str], ...] = ()

    def service(self, key: str) -> Service:
        if "/" not in key:
            key = f"default/{key}"
        return next(s for s in self.services if s.key == key)

    def workload(self, key: str) -> Deployment | None:
        return next((d for d in self.deployments if d.key == key), None)
