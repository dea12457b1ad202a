"""Build a lab in code: small functions that write the scenario's documents for you.

A script that wants three nodes, a NodePort Service and a pod should not need a
YAML file. These functions return the very documents a scenario file holds
(plain dicts, Kubernetes field names), and `build` hands them to the same
loader the files go through. So nothing is checked twice and nothing is checked
differently: a bad argument fails with the loader's one-line `ScenarioError`,
and `documents(...)` dumped with `yaml.safe_dump_all` is a scenario file that
`testbed run` accepts.

    import testbed

    with testbed.build(
        nodes=3,
        services=[testbed.service("web", type="NodePort", policy="Local", node_port=30080)],
        pods=[testbed.pod("web-0", node="node-1", app="web", port=8080)],
        clients=["client"],
    ) as lab:
        print(lab.probe(source="client", service="web", via="nodePort", node="node-2").observed)

Only what is asked for is written, so defaults stay the loader's (and therefore
the contract's) defaults rather than a second copy of them here. Nothing heavy
is imported until a lab is actually made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.core.scenario import LAB_API  # the scenario format's apiVersion

if TYPE_CHECKING:
    from testbed.core.model import Expectation
    from testbed.live.lab import Lab

Doc = dict[str, Any]
"""One YAML document (or one entry of a list inside the Lab document) as plain data."""

HOSTNAME = "kubernetes.io/hostname"
CONTAINER = "main"  # the container name the builders give every pod


def _meta(name: str, namespace: str | None, labels: Mapping[str, str] | None = None) -> Doc:
    meta: Doc = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    return meta


def _labels(app: str | None, labels: Mapping[str, str] | None, default: str) -> dict[str, str]:
    """`app` is the one label most labs need; explicit labels win when both are given."""
    out = {"app": app or default}
    out.update(labels or {})
    return out


def _container(ports: int | Sequence[int] | None, protocol: str) -> Doc:
    numbers = [ports] if isinstance(ports, int) else list(ports or ())
    container: Doc = {"name": CONTAINER}
    if numbers:
        container["ports"] = [
            {"containerPort": p, **({"protocol": protocol} if protocol != "TCP" else {})}
            for p in numbers
        ]
    return container


# -- Kubernetes objects ---------------------------------------------------------------


def service(
    name: str,
    *,
    type: str = "ClusterIP",
    port: int = 80,
    target: int | str | None = None,
    node_port: int | None = None,
    protocol: str = "TCP",
    policy: str | None = None,
    internal_policy: str | None = None,
    app: str | None = None,
    selector: Mapping[str, str] | None = None,
    namespace: str | None = None,
    session_affinity: str | None = None,
    affinity_timeout: int | None = None,
    source_ranges: Sequence[str] = (),
    external_ips: Sequence[str] = (),
    health_check_node_port: int | None = None,
    cluster_ip: str | None = None,
    ports: Sequence[Mapping[str, Any]] | None = None,
) -> Doc:
    """A `v1 Service`. `policy` is externalTrafficPolicy, the field this lab is about.

    The selector defaults to `{app: <app or name>}`, the convention `pod` and
    `deployment` follow, so a service finds its pods without repeating labels.
    `ports` (Kubernetes port dicts) replaces `port/target/node_port/protocol`
    for a multi-port service.
    """
    if ports is None:
        one: Doc = {"port": port}
        if target is not None:
            one["targetPort"] = target
        if node_port is not None:
            one["nodePort"] = node_port
        if protocol != "TCP":
            one["protocol"] = protocol
        port_list = [one]
    else:
        port_list = [dict(p) for p in ports]
    spec: Doc = {"type": type, "selector": dict(selector or {"app": app or name})}
    spec["ports"] = port_list
    optional = {
        "externalTrafficPolicy": policy,
        "internalTrafficPolicy": internal_policy,
        "sessionAffinity": session_affinity,
        "healthCheckNodePort": health_check_node_port,
        "clusterIP": cluster_ip,
    }
    spec.update({k: v for k, v in optional.items() if v is not None})
    if affinity_timeout is not None:
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": affinity_timeout}}
    if source_ranges:
        spec["loadBalancerSourceRanges"] = list(source_ranges)
    if external_ips:
        spec["externalIPs"] = list(external_ips)
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, namespace), "spec": spec}


def pod(
    name: str,
    *,
    node: str | None = None,
    app: str | None = None,
    port: int | Sequence[int] | None = None,
    protocol: str = "TCP",
    labels: Mapping[str, str] | None = None,
    namespace: str | None = None,
    ip: str | None = None,
) -> Doc:
    """A `v1 Pod`; `node` pins it (spec.nodeName), as the stories need pods on known nodes.

    Without `port` the pod still answers on every port a Service targets; a
    declared port matters for named targetPorts and for probing the pod directly.
    """
    spec: Doc = {"containers": [_container(port, protocol)]}
    if node is not None:
        spec["nodeName"] = node
    doc: Doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(name, namespace, _labels(app, labels, name)),
        "spec": spec,
    }
    if ip is not None:
        doc["status"] = {"podIP": ip}
    return doc


def deployment(
    name: str,
    *,
    replicas: int = 1,
    app: str | None = None,
    port: int | Sequence[int] | None = None,
    protocol: str = "TCP",
    spread: bool = False,
    node: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    namespace: str | None = None,
) -> Doc:
    """An `apps/v1 Deployment` whose replicas are named `<name>-0`, `<name>-1`, ...

    `spread=True` adds the required podAntiAffinity on the hostname that a real
    cluster needs to guarantee one replica per node (the lab's scheduler spreads
    evenly anyway, a real one need not). `node` packs every replica on one node.
    """
    labels = {"app": app or name}
    pod_spec: Doc = {"containers": [_container(port, protocol)]}
    if node is not None:
        pod_spec["nodeName"] = node
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if spread:
        term = {"labelSelector": {"matchLabels": dict(labels)}, "topologyKey": HOSTNAME}
        pod_spec["affinity"] = {
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, namespace),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


# -- entries of the Lab object --------------------------------------------------------


def client(name: str, ip: str | None = None) -> Doc:
    """An external client behind the edge router; without `ip` it gets the next free one."""
    return {"name": name} if ip is None else {"name": name, "ip": ip}


def _expect_doc(expect: Expectation | Mapping[str, Any]) -> Doc:
    if isinstance(expect, Mapping):
        return dict(expect)
    fields = {
        "outcome": expect.outcome,
        "sourceIP": expect.source_ip,
        "pods": list(expect.pods) if expect.pods is not None else None,
        "returnPath": expect.return_path,
        "share": dict(expect.share) if expect.share is not None else None,
    }
    return {k: v for k, v in fields.items() if v is not None}


def probe_spec(
    name: str,
    *,
    source: str,
    service: str | None = None,
    via: str | None = None,
    node: str | None = None,
    port: int | str | None = None,
    address: str | None = None,
    protocol: str | None = None,
    count: int | None = None,
    expect: Expectation | Mapping[str, Any] | None = None,
    measure_latency: bool | None = None,
) -> Doc:
    """A probe of the scenario (an entry of spec.probes), run by `lab.verdicts()`.

    For a one-off probe of a running lab use `lab.probe(...)` instead. `expect`
    is an `Expectation` or the YAML mapping (`{"outcome": "dropped"}`); left
    out, the oracle's prediction is the expectation.
    """
    to: Doc = {}
    for key, value in (
        ("service", service),
        ("address", address),
        ("port", port),
        ("via", via),
        ("node", node),
    ):
        if value is not None:
            to[key] = value
    doc: Doc = {"name": name, "from": source, "to": to}
    if protocol is not None:
        doc["protocol"] = protocol
    if count is not None:
        doc["count"] = count
    if expect is not None:
        doc["expect"] = _expect_doc(expect)
    if measure_latency is not None:
        doc["measureLatency"] = measure_latency
    return doc


# -- the whole scenario -----------------------------------------------------------------


def _names(items: Sequence[str | Mapping[str, Any]]) -> list[Doc]:
    return [{"name": i} if isinstance(i, str) else dict(i) for i in items]


def documents(
    *,
    name: str = "lab",
    description: str | None = None,
    nodes: int | Sequence[str | Mapping[str, Any]] = 1,
    clients: Sequence[str | Mapping[str, Any]] = (),
    services: Sequence[Mapping[str, Any]] = (),
    deployments: Sequence[Mapping[str, Any]] = (),
    pods: Sequence[Mapping[str, Any]] = (),
    probes: Sequence[Mapping[str, Any]] = (),
    steps: Sequence[Mapping[str, Any]] = (),
    objects: Sequence[Mapping[str, Any]] = (),
    proxy_mode: str | None = None,
    what_if: Sequence[str] = (),
    kube_proxy: Mapping[str, Any] | None = None,
    load_balancer: Mapping[str, Any] | None = None,
    network: Mapping[str, Any] | None = None,
) -> list[Doc]:
    """The scenario as YAML documents: the Lab object first, then the Kubernetes objects.

    `nodes` is a count (node-1..node-N) or names; `clients` are names or
    `client(...)` entries. `objects` takes any other document the format
    accepts (EndpointSlice, Node). `what_if` lists deliberate faults
    (kubeProxy.whatIf, e.g. ["no-snat"]); `kube_proxy`, `load_balancer`,
    `network` and `steps` are the Lab's fields of the same names, in YAML
    spelling (steps run after the probes under `testbed run`).
    """
    metadata: Doc = {"name": name}
    if description is not None:
        metadata["description"] = description
    spec: Doc = {} if proxy_mode is None else {"proxyMode": proxy_mode}
    spec["nodes"] = nodes if isinstance(nodes, int) else _names(nodes)
    if network is not None:
        spec["network"] = dict(network)
    if clients:
        spec["clients"] = _names(clients)
    if load_balancer is not None:
        spec["loadBalancer"] = dict(load_balancer)
    proxy = dict(kube_proxy or {})
    if what_if:
        proxy["whatIf"] = list(what_if)
    if proxy:
        spec["kubeProxy"] = proxy
    if probes:
        spec["probes"] = [dict(p) for p in probes]
    if steps:
        spec["steps"] = [dict(st) for st in steps]
    lab: Doc = {"apiVersion": LAB_API, "kind": "Lab", "metadata": metadata, "spec": spec}
    rest = [*services, *deployments, *pods, *objects]
    return [lab, *(dict(d) for d in rest)]


def _where(doc: Any) -> str:
    """`Kind/name` of a document, for errors that can only give its number."""
    if not isinstance(doc, Mapping):
        return "document"
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return f"{doc.get('kind', 'document')}/{name}" if name else str(doc.get("kind", "document"))


def from_documents(
    docs: Sequence[Mapping[str, Any]], proxy_mode: str | None = None, kube_proxy: str | None = None
) -> Lab:
    """`Lab.from_docs`, with errors that name the object and not only its number.

    Inline documents have no lines, so the loader's "line" is the document's
    number; the object's kind and name say which one that is.
    """
    from testbed.core.scenario import ScenarioError
    from testbed.live.lab import Lab

    plain = [dict(d) for d in docs]
    try:
        return Lab.from_docs(plain, proxy_mode, kube_proxy)
    except ScenarioError as exc:
        if not 1 <= exc.line <= len(plain):
            raise
        where = _where(plain[exc.line - 1])
        path = f"{where} {exc.path}" if exc.path else where
        raise ScenarioError("<testbed.build>", exc.line, exc.reason, path) from None


def build(
    *,
    name: str = "lab",
    description: str | None = None,
    nodes: int | Sequence[str | Mapping[str, Any]] = 1,
    clients: Sequence[str | Mapping[str, Any]] = (),
    services: Sequence[Mapping[str, Any]] = (),
    deployments: Sequence[Mapping[str, Any]] = (),
    pods: Sequence[Mapping[str, Any]] = (),
    probes: Sequence[Mapping[str, Any]] = (),
    steps: Sequence[Mapping[str, Any]] = (),
    objects: Sequence[Mapping[str, Any]] = (),
    proxy_mode: str | None = None,
    what_if: Sequence[str] = (),
    kube_proxy: Mapping[str, Any] | None = None,
    load_balancer: Mapping[str, Any] | None = None,
    network: Mapping[str, Any] | None = None,
) -> Lab:
    """A Lab (not yet up) from the arguments of `documents`; use it as `with build(...) as lab:`.

    It is validated and planned here, so a mistake fails before any namespace
    exists; only entering the `with` block (or `lab.up()`) needs root.
    """
    docs = documents(
        name=name,
        description=description,
        nodes=nodes,
        clients=clients,
        services=services,
        deployments=deployments,
        pods=pods,
        probes=probes,
        steps=steps,
        objects=objects,
        proxy_mode=proxy_mode,
        what_if=what_if,
        kube_proxy=kube_proxy,
        load_balancer=load_balancer,
        network=network,
    )
    return from_documents(docs)


def load(
    source: str | Path | Sequence[Mapping[str, Any]],
    proxy_mode: str | None = None,
    kube_proxy: str | None = None,
) -> Lab:
    """A Lab (not yet up) from a scenario file, a built-in scenario name, or documents.

    `proxy_mode` overrides the scenario's proxyMode, as `testbed run --proxy-mode` does;
    `kube_proxy` (builtin | upstream[@VERSION]) its kube-proxy, as `--kube-proxy` does.
    """
    if not isinstance(source, (str, Path)):
        return from_documents(source, proxy_mode, kube_proxy)
    from testbed.core.errors import NotFound
    from testbed.core.library import resolve
    from testbed.live.lab import Lab

    try:
        path = resolve(str(source))
    except NotFound:
        path = Path(source)  # not found: the loader's error says so, with the file name
    return Lab.from_file(str(path), proxy_mode, kube_proxy)
