"""The second `Proxy`: the real kube-proxy in every node, fed by a real API server.

The lab plays kubelet and the controllers: it writes Nodes, Services (with their
status) and EndpointSlices through kubectl (server-side apply, as one field manager),
and every node runs upstream kube-proxy from a config file of its own. After each
change it waits until every kube-proxy says, in its metrics, that it has synced since
(never a sleep). kube-proxy serves the health checks itself; the lab's hub serves only
the pods. In this mode the API server is the truth: `api_services` reads what it holds
when a probe runs, so a change made with `testbed kubectl` is what the oracle predicts.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, replace

from testbed.core.errors import LabError
from testbed.core.model import NodePlan, Plan, ServicePlan
from testbed.core.topology import Wiring
from testbed.kernel import procs, rules, state, upstreambin
from testbed.kernel.checkpoint import reached
from testbed.kernel.controlplane import ControlPlane, http_get, metrics
from testbed.kubeproxy import fromapi, objects
from testbed.kubeproxy.endpoints import local_ready

SYNC_TIMEOUT = 60.0  # seconds a kube-proxy may take to sync a change
LAST_SYNC = 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}'
LAST_QUEUED = 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="IPv4"}'
SYNC_COUNT = 'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"}'
SYNC_SUM = 'kubeproxy_sync_proxy_rules_duration_seconds_sum{ip_family="IPv4"}'
TO_BE_DELETED = "ToBeDeletedByClusterAutoscaler"  # KEP-3836: /healthz answers 503
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"  # a cordon
# kube-proxy runs a sync within minSyncPeriod (1 s) of any change it queued: with nothing
# queued after its last sync for twice that, nothing is pending
QUIET = 2.0
# kube-proxy stamps "queued" just after waking its sync loop, and a sync's end a little
# before its duration is taken: a sync that began this much before the stamp has the change
SLACK = 0.05


@dataclass(frozen=True)
class Sample:
    """What one scrape of kube-proxy's metrics says about its syncs."""

    count: float  # syncs so far
    total: float  # their summed duration, seconds
    synced: float  # wall time the last one ended
    queued: float  # wall time the last change was queued


def covered(now: Sample, began: float | None, since: float, fresh: bool, clock: float) -> bool:
    """Has a sync that includes every change up to `since` (and all queued) completed?

    `began`: when the last sync seen to complete began (None: not seen).
    """
    if now.synced <= since or now.synced < now.queued:
        return False
    if fresh:
        return True
    if began is not None and began + SLACK >= max(now.queued, since):
        return True
    # a change queued during a sync gets a sync of its own within minSyncPeriod: long after
    # the last one queued, every change has been synced
    return clock - now.queued > QUIET and clock - since > QUIET


def services_from_api(objects_json: dict, plan: Plan) -> tuple[ServicePlan, ...]:
    """The plan's Services as the API server holds them (`kubectl get svc,endpointslices
    -A -o json`): the oracle's truth in upstream mode, so a change made with kubectl is
    predicted as well as sent."""
    return fromapi.services(plan, objects_json)


class UpstreamProxy:
    """Control plane + one real kube-proxy per node, for one lab."""

    def __init__(self, plan: Plan, on_started=None) -> None:
        """Check the plan and find the binaries: a LabError before anything exists."""
        objects.check(plan)
        self.binaries = upstreambin.find(plan.proxy.version)
        self.mgmt = objects.management(plan)
        self.on_started = on_started or (lambda proc: None)
        self.cp: ControlPlane | None = None
        self.wiring: Wiring | None = None
        self.hub = None  # set by the Lab; kube-proxy answers the checks itself
        self.attached = False  # a handle on a lab another process owns
        self._lock = threading.Lock()
        self._applied: dict[tuple[str, str, str], dict] = {}
        self._status: dict[str, dict | None] = {}
        self._applied_plan: Plan | None = None
        self._changed = 0.0  # wall time just before the last change the lab made
        self._before: dict[str, Sample] = {}  # each node's sample from just before it
        self._touched = False  # did the last plan change any object kube-proxy reads?
        self._seen: dict[str, Sample] = {}  # each node's sample when last seen synced
        self._running: dict[str, procs.Proc] = {}
        self.first_sync: dict[str, float] = {}  # node -> seconds from start to first sync

    def bind(self, wiring: Wiring) -> UpstreamProxy:
        """Tie it to the lab's final wiring (its id is known once the lab has claimed it)."""
        self.wiring = wiring
        self.cp = ControlPlane(
            self.binaries, self.mgmt, wiring, state.data_dir(wiring.lab_id), self.on_started
        )
        return self

    @classmethod
    def attach(cls, plan: Plan, wiring: Wiring) -> UpstreamProxy:
        """A handle on a running lab's control plane: read, change, never start or stop."""
        found = cls(plan).bind(wiring)
        found.attached = True
        found._applied_plan = plan
        return found

    @property
    def version(self) -> str:
        return self.binaries.version

    # -- start --------------------------------------------------------------------

    def start(self, plan: Plan, make, on_made) -> None:
        """The management network (made by the lab's Host: `make(wiring, on_made=...)`),
        etcd and the API server, then every Node."""
        assert self.cp is not None, "bind() first"
        self._applied_plan = None
        self.cp.build_network(make, on_made)
        self.cp.start(plan.network.service_cidr, objects.node_port_range(plan))
        nodes = [objects.node_manifest(n) for n in plan.nodes]
        self.cp.kubectl(["create", "-f", "-"], stdin=objects.as_list(nodes))
        reached("nodes")

    # -- the Proxy seam ----------------------------------------------------------

    def program(self, ns: str, node: NodePlan, previous: Plan | None, current: Plan) -> str:
        with self._lock:
            if self._applied_plan is not current:
                self._apply(current)
                self._applied_plan = current
            how = "delta" if node.name in self._running else "full"
            if how == "full":
                config = objects.kube_proxy_config(node, current, self.cp.proxy_config)
                started = time.time()
                self._running[node.name] = self.cp.start_kube_proxy(node.name, config)
        if how == "full":
            self.wait_synced(node, started, fresh=True)
        elif self._touched:  # nothing kube-proxy reads changed: nothing to wait for
            self.wait_synced(node, self._changed, self._before.get(node.name))
        if how == "full":
            self.first_sync[node.name] = time.time() - started
            reached(f"kube-proxy-{node.index}")
        return how

    def _apply(self, plan: Plan) -> None:
        """Bring the API server's Services and EndpointSlices to `plan`."""
        wanted = {objects.key(o): o for o in objects.service_objects(plan)}
        changed = [o for k, o in wanted.items() if self._applied.get(k) != o]
        gone = [k for k in self._applied if k not in wanted]
        status = {s.key: objects.service_status(s) for s in plan.services}
        restated = [k for k, b in status.items() if b is not None and self._status.get(k) != b]
        self._touched = bool(changed or gone or restated)
        self._before = {}
        if self._touched:
            self._changed = time.time()  # before the first write: its event comes after
            for node in plan.nodes:
                if node.name in self._running:
                    with contextlib.suppress(OSError):
                        self._before[node.name] = self.sample(node)
        if changed:
            self.cp.kubectl(
                [
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager=testbed",
                    "-f",
                    "-",
                ],
                stdin=objects.as_list(changed),
            )
        for kind, namespace, name in sorted(gone, key=lambda k: k[0] == "Namespace"):
            args = ["delete", kind.lower(), name, "--ignore-not-found", "--wait=false"]
            self.cp.kubectl([*args, "-n", namespace] if namespace else args)
        for svc_key in restated:
            body = status[svc_key]
            namespace, name = svc_key.split("/", 1)
            self.cp.kubectl(
                ["patch", "service", name, "-n", namespace, "--subresource=status"]
                + ["--type=merge", "-p", json.dumps(body)]
            )
        self._applied, self._status = wanted, status

    def sample(self, node: NodePlan) -> Sample:
        found = metrics(self.wiring.ns(node.name), node.ip)
        return Sample(
            found.get(SYNC_COUNT, 0.0),
            found.get(SYNC_SUM, 0.0),
            found.get(LAST_SYNC, 0.0),
            found.get(LAST_QUEUED, 0.0),
        )

    def wait_synced(
        self, node: NodePlan, since: float, before: Sample | None = None, fresh: bool = False
    ) -> None:
        """Until `node`'s kube-proxy has run a sync that began after every change it queued.

        A sync's end is in its metrics; its start is that end less its duration, known
        exactly when the sync count grew by one between two samples (kube-proxy syncs at
        most once per minSyncPeriod, 1 s, and samples are 50 ms apart). A sync that began
        before the last queued change does not cover it: the next one does. `fresh`: a
        kube-proxy started after `since`, whose first sync covers everything.
        """
        deadline = time.monotonic() + SYNC_TIMEOUT
        prev, began, last = before, None, "no metrics yet"
        while True:
            proc = self._running.get(node.name)
            if proc is not None and not procs.alive(proc.pid, proc.start):
                log = self.cp.files.path(f"kube-proxy-{node.name}.log")
                raise LabError(f"kube-proxy on {node.name} exited (log: {log})")
            try:
                now = self.sample(node)
            except OSError as exc:
                now, last = None, str(exc)
            if now is not None:
                if prev is not None and now.count > prev.count:
                    began = now.synced - (now.total - prev.total)
                prev = now
                if covered(now, began, since, fresh, time.time()):
                    self._seen[node.name] = now
                    return
                last = f"last sync {now.synced:.2f}, queued {now.queued:.2f}, change {since:.2f}"
            if time.monotonic() > deadline:
                raise LabError(
                    f"kube-proxy on {node.name} did not sync within {SYNC_TIMEOUT:.0f} s ({last})"
                )
            time.sleep(0.05)

    def wait_all_synced(self, plan: Plan) -> None:
        """Every kube-proxy has synced whatever it was told last (a kubectl change too).

        A node with nothing queued since it was last seen synced is synced now; otherwise
        the wait starts from that sample, so the next sync's start is known.
        """
        for node in plan.nodes:
            if node.name not in self._running and not self.attached:
                continue
            last = self._seen.get(node.name)
            try:
                now = self.sample(node)
            except OSError:
                now = None
            fresh = last is not None and now is not None and now.queued <= last.queued
            if not (fresh and now.synced >= now.queued):
                self.wait_synced(node, 0.0, last)

    def api_objects(self) -> dict:
        return json.loads(self.cp.kubectl(["get", "svc,endpointslices", "-A", "-o", "json"]))

    def api_plan(self, plan: Plan) -> Plan:
        """`plan` with the Services the API server holds now, once every node has synced."""
        self.wait_all_synced(plan)
        return replace(plan, services=services_from_api(self.api_objects(), plan))

    def health_count(self, svc: ServicePlan, node: str) -> int:
        return local_ready(svc, node)

    def answer_health(self, plan: Plan, wiring: Wiring) -> None:
        """Nothing to do: kube-proxy serves :10256 and every healthCheckNodePort itself."""

    def taint(self, node: str, key: str, value: str, effect: str) -> None:
        """The taint on the real Node (a cordon for node.kubernetes.io/unschedulable, as
        `kubectl cordon` sets spec.unschedulable); ToBeDeletedByClusterAutoscaler is
        `set_healthy`'s, which also waits for /healthz to say 503."""
        if key == TO_BE_DELETED:
            return
        if key == UNSCHEDULABLE:
            self.cp.kubectl(["cordon", node])
            return
        text = f"{key}={value}:{effect}" if value else f"{key}:{effect}"
        self.cp.kubectl(["taint", "node", node, text, "--overwrite"])

    def set_healthy(self, node: str, healthy: bool) -> None:
        """Taint the Node the way the cluster autoscaler does before deleting it (KEP-3836):
        kube-proxy's /healthz then answers 503; wait until it does (or 200 again)."""
        if healthy:
            self.cp.kubectl(["taint", "node", node, f"{TO_BE_DELETED}-"])
        else:
            self.cp.kubectl(["taint", "node", node, f"{TO_BE_DELETED}=1:NoSchedule", "--overwrite"])
        want = 200 if healthy else 503
        ns = self.wiring.ns(node)
        ip = next(ip for name, ip in self._node_ips() if name == node)
        deadline = time.monotonic() + SYNC_TIMEOUT
        while True:
            try:
                status, _ = http_get(ns, ip, objects.HEALTHZ_PORT, "/healthz")
                if status == want:
                    return
            except OSError:
                status = 0
            if time.monotonic() > deadline:
                raise LabError(f"kube-proxy on {node}: /healthz says {status}, not {want}")
            time.sleep(0.05)

    def _node_ips(self) -> list[tuple[str, str]]:
        plan = self._applied_plan
        return [(n.name, n.ip) for n in plan.nodes] if plan is not None else []

    def rules(self, ns: str, mode: str) -> str:
        return rules.dump(ns, mode)

    def stop(self) -> None:
        """Every kube-proxy, the API server and etcd: SIGTERM, SIGKILL after a grace period."""
        if self.cp is not None and not self.attached:
            self.cp.stop()
        self.hub = None
