"""The live lab: namespaces, rules and servers for one Plan, torn down always.

`Lab` is the imperative shell around the pure plan/topology/render functions.
Use it as a context manager; teardown also runs on SIGINT/SIGTERM when the
caller wraps it in `signals.handled()` (the CLI and the pytest plugin do).
"""

from __future__ import annotations

import os
import pickle
import secrets
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from testbed.core import limits, topology
from testbed.core import scenario as loader
from testbed.core.errors import LabError
from testbed.core.load import replan
from testbed.core.model import (
    DEFAULT_PROBE_COUNT,
    Expectation,
    LoadPlan,
    NodePlan,
    Plan,
    ProbePlan,
)
from testbed.core.records import Observation
from testbed.core.scenario import Drain, Rollout, Scenario, Taint
from testbed.kernel import netns, procs, signals, state
from testbed.kernel.capture import Capture, Point
from testbed.kernel.checkpoint import reached
from testbed.kernel.edge import EdgeBalancer
from testbed.kernel.lbview import read_routes
from testbed.kernel.probe import capture_points
from testbed.kernel.probe import run as run_probe
from testbed.kernel.servers import ServerHub
from testbed.kubeproxy import objects
from testbed.live import changes, lifecycle, steps
from testbed.live.described import described_probe
from testbed.live.flows import FlowBook, after_probe
from testbed.live.host import Host, NetnsHost
from testbed.live.load import RunningLoad
from testbed.live.proxy import Proxy, RenderedProxy
from testbed.live.upstream import UpstreamProxy
from testbed.verdict import judge, oracle
from testbed.verdict.judge import Verdict

ID_TRIES = 100  # fresh ids tried before giving up (a clash is 1 in 65,536 per pair)


def new_id(name: str) -> str:
    """A candidate id; `Lab.up` makes it unique by creating its state file with O_EXCL."""
    return f"{name[:16].rstrip('-')}-{secrets.token_hex(2)}"


class Lab:
    def __init__(
        self,
        plan: Plan,
        lab_id: str | None = None,
        serve: bool = True,
        scenario: Scenario | None = None,
    ) -> None:
        self.plan = plan
        self.scenario = scenario  # needed only for changes that re-plan (scale, policy)
        self.removed: frozenset[str] = frozenset()
        self.id = lab_id or new_id(plan.name)
        self._fixed_id = lab_id is not None
        self._made: list[str] = []  # the namespaces this instance created (and only removes)
        self.seen_limit: int | None = None  # what each pod's server remembers (None: default)
        self.wiring = topology.wire(plan, self.id)
        self.serve = serve
        self.hub = None
        self.host: Host = NetnsHost()  # the namespaces on this machine, behind one seam
        self._state: state.LabState | None = None
        self.proxy: Proxy = RenderedProxy()  # kube-proxy on every node, behind one seam
        self.edge = None
        self._capture = None
        self.keep_raw_frames = False
        self.attached = False  # a handle on a lab that another process owns
        self._loaded: Plan | None = None  # the plan whose rules the nodes hold
        self.loads = {"full": 0, "delta": 0, "fallback": 0}  # per node and sync
        self.flows = FlowBook()  # sourcePort flows across probes (live/flows.py)

    @classmethod
    def from_scenario(
        cls,
        scenario: Scenario,
        proxy_mode: str | None = None,
        kube_proxy: str | None = None,
        **kw,
    ) -> Lab:
        """`kube_proxy` (builtin | upstream[@VERSION]) overrides spec.kubeProxy.implementation."""
        planned = replan(scenario, None, mode=proxy_mode, kube_proxy=kube_proxy)
        return cls(planned, scenario=scenario, **kw)

    @classmethod
    def from_file(
        cls, path: str, proxy_mode: str | None = None, kube_proxy: str | None = None, **kw
    ) -> Lab:
        """A lab (not yet up) from a scenario file."""
        return cls.from_scenario(loader.load(path), proxy_mode, kube_proxy, **kw)

    @classmethod
    def from_docs(
        cls, docs: list[dict], proxy_mode: str | None = None, kube_proxy: str | None = None, **kw
    ) -> Lab:
        """A lab (not yet up) from YAML documents given as dicts."""
        return cls.from_scenario(loader.load_dict(docs, "<inline>"), proxy_mode, kube_proxy, **kw)

    @classmethod
    def attach(cls, found: state.LabState) -> Lab:
        """A handle on a lab another process keeps up (`testbed up`): probe, look, not own.

        It reads the scenario and plan the lab keeps in its state directory (what the lab
        runs), never the scenario file, which may have changed or gone since.
        """
        try:
            scenario, planned, removed = state.load_copy(found.id)
        except FileNotFoundError:
            raise LabError(
                f"lab {found.id} keeps no copy of what it was built from (is it still building?)"
            ) from None
        except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError) as exc:
            text = f"lab {found.id}: its copy of the scenario is unreadable: {exc}"
            raise LabError(text) from None
        attached = cls(planned, lab_id=found.id, serve=False, scenario=scenario)
        attached.removed = removed
        attached.attached = True
        if planned.proxy.implementation == "upstream":
            attached.proxy = UpstreamProxy.attach(planned, attached.wiring)
        return attached

    @property
    def upstream(self) -> bool:
        """Does the real kube-proxy run in this lab (upstream mode)?"""
        return self.plan.proxy.implementation == "upstream"

    def _namespaces(self, wiring: topology.Wiring) -> list[str]:
        """Every namespace the lab makes: the wiring's, and the control plane's in upstream mode."""
        names = [wiring.ns(s) for s in wiring.namespaces]
        if self.upstream:
            names.append(wiring.ns(objects.CONTROL_PLANE_NS))
        return names

    @property
    def processes(self) -> list[dict]:
        """The processes this lab started outside its pods (upstream mode: etcd,
        kube-apiserver, every kube-proxy), as recorded: pid, start time, name."""
        return list(self._state.processes) if self._state is not None else []

    def _record(self, proc: procs.Proc) -> None:
        """Name a process the lab started in its record, the moment it starts."""
        if self._state is not None:
            self._state.processes.append({"pid": proc.pid, "start": proc.start, "name": proc.name})
            state.save(self._state)

    # -- life cycle -------------------------------------------------------

    def _claim(self) -> state.LabState:
        """Create this lab's state file under an id nobody holds (O_EXCL decides)."""
        owner = procs.me()
        for _ in range(ID_TRIES):
            names = self._namespaces(self.wiring)
            record = state.LabState(
                id=self.id,
                name=self.plan.name,
                file=os.path.abspath(self.plan.file) if self.plan.file else "",
                proxy_mode=self.plan.proxy.mode,
                namespaces=names,
                pid=owner.pid,
                start=owner.start,
                kube_proxy=(f"upstream@{self.plan.proxy.version}" if self.upstream else "builtin"),
            )
            # under the lock `down` and `clean` hold while they remove a lab, so an id they
            # are freeing is never reused before its namespaces are gone
            with state.locked():
                free = not any(os.path.lexists(netns.path(n)) for n in names)
                with signals.shielded():  # a record made is a record this lab will remove
                    if free and state.create(record):
                        self._state = record
                        return record
            if self._fixed_id:
                raise LabError(f"lab id {self.id} is taken (testbed ls lists the labs)")
            self.id = new_id(self.plan.name)
            self.wiring = topology.wire(self.plan, self.id)
        raise LabError(f"no free lab id for {self.plan.name} after {ID_TRIES} tries")

    def up(self) -> Lab:
        limits.check(self.plan)  # refuse what the machine cannot hold, before anything exists
        if self.upstream:  # a bad scenario or an unbuilt version is refused here too
            upstream = UpstreamProxy(self.plan, on_started=self._record)
            # the version that runs, and the NodePort addresses its config file gives (the
            # node IP, unless the scenario says): the renderer, the oracle and `rules
            # --diff` then describe exactly the kube-proxy that runs
            proxy = replace(self.plan.proxy, version=upstream.version)
            if not proxy.node_port_addresses:  # not on 127.0.0.1 either, as in kube-proxy
                proxy = replace(proxy, node_port_addresses=("primary",), localhost_nodeports=False)
            self.plan = replace(self.plan, proxy=proxy)
            self.proxy = upstream
        try:
            self._claim()
            state.save_copy(self.id, self.scenario, self.plan, self.removed)
            reached("state-saved")
            self.host.make(self.wiring, on_made=self._made.append)
            if isinstance(self.proxy, UpstreamProxy):
                self.proxy.bind(self.wiring).start(self.plan, self.host.make, self._made.append)
            if self.serve:
                self.hub = ServerHub() if self.seen_limit is None else ServerHub(self.seen_limit)
                self.hub.start()
                self.proxy.hub = self.hub
                self._start_pod_servers()
            reached("servers")
            self.sync()
            reached("rules")
            if self.serve:
                self.edge = EdgeBalancer(self.plan, self.wiring).start()
            self._state.status = "up"
            state.save(self._state)
            reached("up")
        except BaseException:
            self.down()
            raise
        return self

    def close(self) -> None:
        """Let go of an attached lab (captures, sockets) without tearing it down."""
        if self._capture is not None:
            self._capture.stop()
            self._capture = None
        self.host.close()

    def down(self) -> list[str]:
        """Tear everything down; safe to call twice and after a failed build.

        Each part is stopped on its own: a part that fails to stop must not keep the
        namespaces and the state file alive. The first failure is raised at the end.
        Only what this instance made is removed, and every process living in those
        namespaces (`testbed exec` children too) is ended first. SIGINT/SIGTERM are
        held back until the teardown is complete.
        """
        with signals.shielded():
            return self._down()

    def _down(self) -> list[str]:
        failures: list[BaseException] = []
        self.proxy.stop()
        for attr in ("_capture", "edge", "hub"):
            part = getattr(self, attr)
            setattr(self, attr, None)
            if part is not None:
                try:
                    part.stop()
                except Exception as exc:  # keep tearing down
                    failures.append(exc)
        self.close()
        made, self._made = self._made, []
        removed = self.host.remove(made)
        if self._state is not None and state.still_mine(self.id, procs.me()):
            state.forget(self.id)
        self._state = None
        if failures:
            raise failures[0]
        return removed

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- names --------------------------------------------------------------

    def ns(self, name: str) -> str:
        if name not in self.wiring.namespaces:
            known = ", ".join(self.wiring.namespaces)
            raise LabError(f"no namespace named {name!r} in lab {self.id} (known: {known})")
        return self.wiring.ns(name)

    # -- rules and servers -----------------------------------------------------

    def sync(self, plan: Plan | None = None) -> None:
        """Bring every node's rules (and health servers) to the plan.

        After the first full load, a change is loaded as a delta of only the services
        that changed, the way kube-proxy syncs; any trouble falls back to a full load.
        """
        previous = self._loaded
        if plan is not None:
            if {n.name for n in plan.nodes} != {n.name for n in self.plan.nodes}:
                raise LabError("sync cannot add or remove nodes")
            self.plan = plan
            if self.edge is not None:
                self.edge.plan = plan
        self._loaded = None
        current = self.plan

        def load(node: NodePlan) -> str:
            return self.proxy.program(self.wiring.ns(node.name), node, previous, current)

        # one loader process per node; they run side by side, as each node's kube-proxy would
        with ThreadPoolExecutor(max_workers=min(8, len(current.nodes))) as pool:
            for how in pool.map(load, current.nodes):
                self.loads[how] += 1
        self._loaded = current
        if self.hub is not None:
            self._sync_health()

    def change(self, plan: Plan) -> None:
        """Move the running lab to `plan`: pods come and go, rules and health follow.

        Nodes and clients stay; a pod that exists in both plans must keep its node and IP.
        """
        if [(n.name, n.ip) for n in plan.nodes] != [(n.name, n.ip) for n in self.plan.nodes]:
            raise LabError("a running lab cannot add, remove or readdress nodes")
        if [(c.name, c.ip) for c in plan.clients] != [(c.name, c.ip) for c in self.plan.clients]:
            raise LabError("a running lab cannot add, remove or readdress clients")
        old = {p.name: p for p in self.plan.pods}
        new = {p.name: p for p in plan.pods}
        moved = [
            n
            for n in old.keys() & new.keys()
            if (old[n].node, old[n].ip) != (new[n].node, new[n].ip)
        ]
        if moved:
            raise LabError(f"pods cannot move in a running lab: {', '.join(sorted(moved))}")
        gone, added = old.keys() - new.keys(), new.keys() - old.keys()
        wiring = topology.wire(plan, self.id)
        final = self._namespaces(wiring)
        if self._state is not None:  # record before creating, so a crash leaves a full record
            self._state.namespaces = sorted(set(self._state.namespaces) | set(final))
            state.save(self._state)
        for name in sorted(gone):
            if self.hub is not None:
                self.hub.remove(self.wiring.ns(name))
            self.host.unplug([self.wiring.ns(name)])  # its route goes now (CNI DEL)
            self.host.remove([self.wiring.ns(name)])
            if self.wiring.ns(name) in self._made:
                self._made.remove(self.wiring.ns(name))
        self.wiring = wiring
        if added:
            only = topology.only_pods(wiring, plan, added)
            self.host.make(only, on_made=self._made.append)
        if self._capture is not None:  # capture points follow the pods
            self._capture.stop()
            self._capture = None
        if self.hub is not None:  # a new pod listens before any rule sends it traffic,
            for name in sorted(added):  # as a ready pod does before it is an endpoint
                pod = plan.pod(name)
                for port, proto in self._pod_ports(name, plan):
                    self.hub.add_echo(wiring.ns(name), name, pod.ip, port, proto)
        self.sync(plan)
        if self._state is not None:
            self._state.namespaces = final
            state.save(self._state)
            state.save_copy(self.id, self.scenario, self.plan, self.removed)

    # -- changes that re-plan ----------------------------------------------------

    def _replan(self, scenario: Scenario) -> None:
        planned = replan(scenario, self.plan, self.removed, mode=self.plan.proxy.mode)
        # the kube-proxy in place stays (a --kube-proxy override and the version it resolved)
        planned = replace(planned, probes=self.plan.probes, proxy=self.plan.proxy)
        self.change(planned)
        self.scenario = scenario
        if self._state is not None:
            state.save_copy(self.id, self.scenario, self.plan, self.removed)

    def apply(self, scenario: Scenario, removed: frozenset[str] | None = None) -> None:
        """Move the running lab to an edited scenario (and set of pods deleted for good):
        the steps that play controllers over time (live/lifecycle.py) change it this way."""
        if removed is not None:
            self.removed = removed
        self._replan(scenario)

    def _need_scenario(self) -> Scenario:
        if self.scenario is None:
            raise LabError("this lab was built from a plan alone; build it from a scenario")
        return self.scenario

    def set_policy(
        self, service: str, external: str | None = None, internal: str | None = None
    ) -> None:
        """Flip a Service's traffic policies; rules and health checks follow at once."""
        self._replan(changes.set_policy(self._need_scenario(), service, external, internal))

    def scale(self, deployment: str, replicas: int) -> None:
        self._replan(changes.scale(self._need_scenario(), deployment, replicas))

    def delete_pod(self, name: str) -> None:
        """Delete a pod for good (the lab has no controller to bring it back)."""
        self.removed = changes.delete_pod(self.plan, self.removed, name)
        if self.scenario is None:
            pods = tuple(p for p in self.plan.pods if p.name != name)
            services = tuple(
                replace(
                    svc,
                    ports=tuple(
                        replace(port, endpoints=tuple(e for e in port.endpoints if e.pod != name))
                        for port in svc.ports
                    ),
                )
                for svc in self.plan.services
            )
            self.change(replace(self.plan, pods=pods, services=services))
        else:
            self._replan(self.scenario)

    def rollout(self, deployment: str, spec: Rollout | None = None, on_event=None) -> float:
        """Replace a Deployment's pods as a rolling update does (live/lifecycle.py); returns
        the seconds it took, once every new pod is ready and every old one is gone.
        `on_event(at, events)` runs after each instant's change is in place."""
        return lifecycle.rollout(self, deployment, spec or Rollout(), on_event)

    def drain_node(self, node: str, spec: Drain | None = None, on_event=None) -> float:
        """Cordon, taint ToBeDeletedByClusterAutoscaler, evict: a node's scale-down."""
        return lifecycle.drain(self, node, spec or Drain(), on_event)

    def taint_node(self, node: str, key: str, value: str = "", effect: str = "NoSchedule") -> None:
        lifecycle.taint_node(self, node, Taint(key, value, effect))

    def set_edge_health_checks(self, on: bool) -> None:
        """Turn the edge's health checks on (it converges before this returns) or off."""
        self._replan(changes.set_edge_health_checks(self._need_scenario(), on))
        if self.edge is not None:
            self.edge.follow_plan()

    def set_proxy_health(self, node: str, healthy: bool) -> None:
        """Mark a node's kube-proxy unhealthy as production does (the Node tainted for
        deletion, KEP-3836): /healthz says 503; healthCheckNodePorts follow endpoints."""
        self.plan.node(node)
        self.proxy.set_healthy(node, healthy)
        if self.hub is not None:
            self._sync_health()

    def _start_pod_servers(self) -> None:
        for pod in self.plan.pods:
            for port, proto in self._pod_ports(pod.name):
                self.hub.add_echo(self.wiring.ns(pod.name), pod.name, pod.ip, port, proto)

    def _pod_ports(self, pod_name: str, plan: Plan | None = None) -> list[tuple[int, str]]:
        plan = plan or self.plan
        pod = plan.pod(pod_name)
        ports = {(p.port, p.protocol) for p in pod.ports}
        for svc in plan.services:
            for port in svc.ports:
                for ep in port.endpoints:
                    if ep.pod == pod_name:
                        ports.add((ep.port, port.protocol))
        return sorted(ports)

    def _sync_health(self) -> None:
        self.proxy.answer_health(self.plan, self.wiring)

    # -- the edge load balancer -------------------------------------------------

    def lb_nodes(self) -> dict[str, tuple[str, ...]]:
        """VIP -> the nodes the edge sends it to right now."""
        if self.edge is not None:
            return self.edge.eligible()
        if self.attached:  # the owner's edge decides: read its routes from the kernel
            by_ip = {n.ip: n.name for n in self.plan.nodes}
            routes = read_routes(self.wiring.ns(topology.EDGE))
            vips = topology.default_vip_nodes(self.plan)
            return {
                vip: tuple(by_ip[g] for g in routes.get(f"{vip}", ()) if g in by_ip) for vip in vips
            }
        return topology.default_vip_nodes(self.plan)

    def wait_for_edge(self, rounds: int | None = None) -> None:
        """Let health checks see the current state (after a sync) before probing."""
        if self.edge is not None:
            cfg = self.plan.load_balancer.health
            self.edge.wait_rounds(rounds or max(cfg.healthy_threshold, cfg.unhealthy_threshold))

    # -- probing ----------------------------------------------------------------

    @property
    def captures(self):
        """The probes' captures at every hop, started on first use and kept until teardown."""
        if self._capture is None:
            points = capture_points(self.plan, self.wiring)
            self._capture = Capture(points, keep_raw=self.keep_raw_frames).start()
        return self._capture

    def capture(self, names: Sequence[str] | None = None, ifname: str = "eth0"):
        """An ad-hoc capture on `ifname` of these namespaces (default: every node and pod).

        Use it as a context manager; `.frames()` gives what was seen, and
        `testbed.kernel.capture.write_pcap(path, frames)` writes a pcap Wireshark opens.
        """
        chosen = names or [n.name for n in self.plan.nodes] + [p.name for p in self.plan.pods]
        points = [Point(self.ns(n), ifname, f"{n}/{ifname}") for n in chosen]
        return Capture(points, keep_raw=True)

    def send(
        self, probe: ProbePlan, timeout: float | None = None, plan: Plan | None = None
    ) -> Observation:
        """Send one probe's attempts and explain what the captures saw (no judgement).

        `plan`: the world to send in (upstream mode: as the API server holds it)."""
        extra = {} if timeout is None else {"timeout": timeout}
        observed = run_probe(plan or self.plan, self.wiring, self.captures, probe, **extra)
        if not self.keep_raw_frames:  # frames are explained; keep memory flat over many probes
            self.captures.clear()  # (kept for pcaps: the runner clears once it wrote them)
        return observed

    def observe(self, probe: ProbePlan):
        """Run one probe and return (Observation, Verdict): what happened and the judgement."""
        plan = self.plan
        if isinstance(self.proxy, UpstreamProxy):  # the API server is the truth
            plan = self.proxy.api_plan(self.plan)
        observed = self.send(probe, plan=plan)
        pin = self.flows.pin(plan, probe)
        predicted = oracle.predict(plan, probe, lb_nodes=self.lb_nodes(), pin=pin)
        verdict = judge.judge(probe, observed, predicted, plan)
        return observed, after_probe(self, plan, probe, observed, verdict, predicted.notes)

    def probe(
        self,
        name: str | None = None,
        *,
        source: str | None = None,
        service: str | None = None,
        via: str = "clusterIP",
        node: str | None = None,
        port: int | str | None = None,
        address: str | None = None,
        protocol: str | None = None,
        count: int = DEFAULT_PROBE_COUNT,
        expect: Expectation | None = None,
        mode: str = "connection",
    ):
        """Probe by the name of a scenario probe, or describe one; returns the Verdict.

        A described probe is checked as the scenario loader checks one: a bad source,
        service, port, address, path or count is a LabError naming it.
        """
        if name is not None:
            found = [p for p in self.plan.probes if p.name == name]
            if not found:
                raise LabError(f"no probe named {name!r} in scenario {self.plan.name}")
            chosen = found[0]
        else:
            chosen = described_probe(
                self.plan,
                self.wiring,
                self.id,
                source,
                service,
                via,
                node,
                port,
                address,
                protocol,
                count,
                mode,
            )
            chosen = replace(chosen, expect=expect)
        return self.observe(chosen)[1]

    def verdicts(self) -> list[Verdict]:
        """Run every probe and step of the scenario, as `testbed run` does; the verdicts."""
        return [verdict for _, verdict in steps.run_scenario(self)]

    def load(self, plan: LoadPlan) -> RunningLoad:
        """Start a steady load in the background, as a `load` step does:
        `with lab.load(plan) as running: <change the lab>`, then `running.verdict()`."""
        return RunningLoad(self, plan).start()

    # -- looking inside ------------------------------------------------------

    def exec(
        self, name: str, argv: Sequence[str], timeout: float | None = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside one of the lab's namespaces."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(name), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def rules(self, node: str) -> str:
        self.plan.node(node)
        return self.proxy.rules(self.ns(node), self.plan.proxy.mode)
