"""The reader of one scenario file: every document in order, each kind by its part
(read_lab, read_services, read_workloads, read_slices, read_probes), problems gathered
so one run reports them all; and the public entry points load, loads and load_dict."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from testbed.core import yamlsrc
from testbed.core.model import (
    ProbePlan,
)
from testbed.core.scenario.kinds import (
    _KINDS,
    _ORDER,
    _WORKLOAD_FIELDS,
    _controller_ref,
    _loose,
    _Seen,
)
from testbed.core.scenario.read_lab import LabReading
from testbed.core.scenario.read_lifecycle import LifecycleReading
from testbed.core.scenario.read_probes import ProbeReading
from testbed.core.scenario.read_services import ServiceReading
from testbed.core.scenario.read_slices import SliceReading
from testbed.core.scenario.read_workloads import WorkloadReading
from testbed.core.scenario.types import (
    EXCLUDE_FROM_LB_LABEL,
    LAB_API,
    MAX_PROBLEMS,
    POD_TEMPLATE_HASH,
    SKIPPED_KINDS,
    Deployment,
    EndpointSlice,
    LabSpec,
    Loc,
    NodeObject,
    Pod,
    Scenario,
    ScenarioError,
    Service,
    Step,
    _Cascade,
    node_labels,
)
from testbed.core.scenario.values import (
    _META_IGNORED,
    _V,
    _kind,
)
from testbed.core.yamlsrc import SourceError, YList, YMap, one_line, show


class _Reader(
    LabReading, ServiceReading, WorkloadReading, SliceReading, ProbeReading, LifecycleReading
):
    """Reads one file's documents; keeps what earlier objects claimed for later checks."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.seen = _Seen()
        # steps change workloads: each as the steps so far left it, and the pods they name
        self.step_workloads: dict[str, Deployment] = {}
        self.step_pods: set[str] = set()
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
