"""The seam between the lab and kube-proxy: program nodes, answer health checks, stop.

`Proxy` is all the Lab asks of kube-proxy. `RenderedProxy` is its first implementation:
it renders kube-proxy's rules itself (kubeproxy/), loads them into each node in one
batch (kernel/rules.py), and answers the health checks from the lab's server hub with
counts taken from the EndpointSlices it programmed (kubeproxy/endpoints.py), never
from the oracle, so the model and the system under test can disagree.
"""

from __future__ import annotations

from typing import Protocol

from testbed.core.model import NodePlan, Plan, ServicePlan
from testbed.core.topology import Wiring
from testbed.kernel import conntrack
from testbed.kernel import rules as rules_sync
from testbed.kernel.servers import ServerHub
from testbed.kernel.shell import run_in
from testbed.kubeproxy.conntrack import cleans_conntrack, has_udp, stale
from testbed.kubeproxy.endpoints import local_ready
from testbed.kubeproxy.sync import render


class Proxy(Protocol):
    """kube-proxy on every node of one lab, as the Lab drives it."""

    def program(self, ns: str, node: NodePlan, previous: Plan | None, current: Plan) -> str:
        """Bring one node to `current`'s Services and EndpointSlices.

        `previous` is what the node holds (None: nothing yet, load in full). Says how:
        "full", "delta" (only what changed) or "fallback" (a delta failed; loaded in full).
        """
        ...

    def health_count(self, svc: ServicePlan, node: str) -> int:
        """The local endpoints a node's healthCheckNodePort reports for `svc` (200 if > 0)."""
        ...

    def answer_health(self, plan: Plan, wiring: Wiring) -> None:
        """Make every node's health checks answer as `plan` says."""
        ...

    def set_healthy(self, node: str, healthy: bool) -> None:
        """Mark a node's kube-proxy (un)healthy the way production does: the Node tainted
        ToBeDeletedByClusterAutoscaler, so /healthz answers 503 (healthCheckNodePorts do not
        change: they follow local endpoints)."""
        ...

    def taint(self, node: str, key: str, value: str, effect: str) -> None:
        """Put a taint on the node's Node object, where kube-proxy would see it (only
        ToBeDeletedByClusterAutoscaler matters to kube-proxy: `set_healthy` makes it)."""
        ...

    def rules(self, ns: str, mode: str) -> str:
        """What a node holds now, as the kernel reports it."""
        ...

    def stop(self) -> None:
        """Stop answering; rules go with the namespaces."""
        ...


class RenderedProxy:
    """Our own renderer and loader, with health answers served by the lab's hub.

    `run` carries each loader to its namespace (kernel/shell.py's `run_in`; a test passes
    one that records what would be loaded).
    """

    def __init__(self, hub: ServerHub | None = None, run: rules_sync.Runner = run_in) -> None:
        self.hub = hub  # None: a lab without servers answers no health checks
        self.run = run
        self._health: set[tuple[str, int]] = set()  # (namespace, port) answering now
        self._unhealthy: set[str] = set()

    def program(self, ns: str, node: NodePlan, previous: Plan | None, current: Plan) -> str:
        how = self._load(ns, node, previous, current)
        if how != "delta" and current.proxy.tcp_be_liberal:  # as kube-proxy at its start
            conntrack.set_be_liberal(ns, True, run=self.run)
        # after the rules, as kube-proxy's sync ends: UDP entries DNATed to an endpoint
        # that no longer serves would keep their clients on it
        if cleans_conntrack(current.proxy) and has_udp(current.services):
            found = conntrack.entries(ns, "udp", run=self.run)
            conntrack.delete(ns, stale(current.services, found), run=self.run)
        return how

    def _load(self, ns: str, node: NodePlan, previous: Plan | None, current: Plan) -> str:
        if previous is not None and previous.proxy == current.proxy:
            try:
                rules_sync.apply_delta(
                    ns,
                    current.proxy.mode,
                    previous.services,
                    current.services,
                    node,
                    current.proxy,
                    run=self.run,
                )
                return "delta"
            except Exception:  # the full load below is always right
                text = render(node, current.services, current.proxy)
                rules_sync.load(ns, current.proxy.mode, text, run=self.run)
                return "fallback"
        text = render(node, current.services, current.proxy)
        rules_sync.load(ns, current.proxy.mode, text, run=self.run)
        return "full"

    def health_count(self, svc: ServicePlan, node: str) -> int:
        return local_ready(svc, node)

    def answer_health(self, plan: Plan, wiring: Wiring) -> None:
        if self.hub is None:
            return
        wanted: set[tuple[str, int]] = set()
        for node in plan.nodes:
            ns = wiring.ns(node.name)
            # unhealthy as production makes it: the Node is tainted for deletion (KEP-3836),
            # so /healthz answers 503 (nodeEligible false) while kube-proxy itself is fine
            # and every healthCheckNodePort still answers by its local endpoints
            eligible = node.name not in self._unhealthy
            self.hub.set_proxy_health(ns, node.ip, True, node_eligible=eligible)
            for svc in plan.services:
                if svc.external_local and svc.health_check_node_port:
                    port = svc.health_check_node_port
                    count = self.health_count(svc, node.name)
                    self.hub.set_health(ns, node.ip, port, svc.namespace, svc.name, count)
                    wanted.add((ns, port))
        for ns, port in self._health - wanted:
            self.hub.drop_health(ns, port)
        self._health = wanted

    def set_healthy(self, node: str, healthy: bool) -> None:
        self._unhealthy = (self._unhealthy - {node}) | (set() if healthy else {node})

    def taint(self, node: str, key: str, value: str, effect: str) -> None:
        """Nothing to write: this kube-proxy reads no Node; the lab's scheduler reads the
        taint from the scenario, and set_healthy stands for ToBeDeletedByClusterAutoscaler."""

    def rules(self, ns: str, mode: str) -> str:
        return rules_sync.dump(ns, mode, run=self.run)

    def stop(self) -> None:
        self.hub = None  # the hub is the lab's: it stops it with the pods' servers
        self._health = set()
