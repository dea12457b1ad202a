"""Reading the Lab's probes and steps: targets, expectations, changes."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from testbed.core.model import (
    DEFAULT_LOAD_RATE,
    DEFAULT_LOAD_TIMEOUT,
    DEFAULT_LOAD_WINDOW,
    DEFAULT_PROBE_COUNT,
    LOAD_RATE_RANGE,
    LOAD_TIMEOUT_RANGE,
    LOAD_WINDOW_RANGE,
    TCP,
    Expectation,
    LoadPlan,
    ProbePlan,
    Target,
)
from testbed.core.scenario.types import (
    MAX_LOADS,
    MAX_PROBE_COUNT,
    MAX_REPLICAS,
    SHARE_TOLERANCE,
    STEP_ACTIONS,
    Step,
)
from testbed.core.scenario.values import (
    _V,
    PROBE_MODES,
    _few,
    _kind,
    _pick_port,
    _protocol,
)
from testbed.core.yamlsrc import show


class ProbeReading:
    """The Lab's probes and steps: targets, expectations, changes.

    One part of the reader: `self` is the `_Reader` this class is mixed into.
    """

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
            (
                "name",
                "from",
                "to",
                "protocol",
                "count",
                "expect",
                "measureLatency",
                "mode",
                "trace",
                "sourcePort",
            )
        )
        if step_name is None:
            name = self._claim_name(item.need("name"), "probe")
        else:
            name = step_name
            if (name_v := item.get("name")) is not None and name_v.value != step_name:
                name_v.fail(f"a step's probe is named by the step ({step_name!r}); leave it out")
        source, target, protocol = self._aim(item)
        count_v = item.get("count")
        count = (
            count_v.integer(1, MAX_PROBE_COUNT, f"{count_v.value} is outside 1-{MAX_PROBE_COUNT}")
            if count_v
            else DEFAULT_PROBE_COUNT
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
        if mode == "outOfWindow":
            self._out_of_window(mode_v, source, protocol, latency)
        trace_v = item.get("trace")
        trace = trace_v.boolean() if trace_v is not None else False
        port_v = item.get("sourcePort")
        source_port = None
        if port_v is not None:
            source_port = port_v.integer(1024, 65535, f"{port_v.value} is outside 1024-65535")
            if mode != "connection":
                port_v.fail(f"sourcePort is for mode: connection probes (this one is {mode})")
        return ProbePlan(
            name, source, target, protocol, count, expect, latency, mode, trace, source_port
        )

    def _out_of_window(self, mode_v: _V, source: str, protocol: str, latency: bool) -> None:
        """outOfWindow: a pod's TCP connection, whose server side sends one stray segment."""
        if protocol != TCP:
            mode_v.fail("outOfWindow is a TCP story: the pod's segment is out of the window")
        if self.seen.owner("pod", source) is None:
            mode_v.fail(
                "outOfWindow probes start at a pod: the stray segment must be forwarded "
                "by a node to reach it"
            )
        if latency:
            mode_v.fail("latency is measured on connections (mode: connection)")

    def _aim(self, item: _V) -> tuple[str, Target, str]:
        """A probe's or load's `from`, `to` and `protocol`, checked against the scenario."""
        source_v = item.need("from")
        source = source_v.string()
        if self.seen.owner("source", source) is None:
            self._cascade(source_v, "", "", source)
            source_v.fail(f"{show(source)} is not a client, pod or node of this scenario")
        protocol_v = item.get("protocol")
        protocol = _protocol(protocol_v) if protocol_v else None
        target, protocol = self._target(item.need("to"), protocol)
        return source, target, protocol

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
        elif action == "rollout":
            step = self._rollout_step(v, step, alive)
        elif action == "drainNode":
            step = self._drain_step(v, step, alive)
        elif action == "taintNode":
            step = self._taint_step(v, step)
        elif action == "load":
            step = replace(step, load=self._load(v, name, item))
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
            if action == "probeDuringConvergence" and probe.trace:
                v.get("trace").fail("trace is for spec.probes and probe steps, not batches")
            step = replace(step, probe=probe)
        return step

    def _load(self, v: _V, name: str, step_v: _V) -> LoadPlan:
        """A step's `load:`; `until` must name a step written after this one."""
        v.mapping(
            (
                "from",
                "to",
                "protocol",
                "ratePerSecond",
                "timeoutSeconds",
                "windowSeconds",
                "until",
                "expect",
            )
        )
        self._load_count = getattr(self, "_load_count", 0) + 1
        if self._load_count > MAX_LOADS:
            step_v.fail(f"at most {MAX_LOADS} load steps in one scenario")
        source, target, protocol = self._aim(v)
        rate = _in_range(v.get("ratePerSecond"), LOAD_RATE_RANGE, DEFAULT_LOAD_RATE, "per second")
        timeout = _in_range(
            v.get("timeoutSeconds"), LOAD_TIMEOUT_RANGE, DEFAULT_LOAD_TIMEOUT, "seconds"
        )
        window = _in_range(
            v.get("windowSeconds"), LOAD_WINDOW_RANGE, DEFAULT_LOAD_WINDOW, "seconds"
        )
        until = None
        if (until_v := v.get("until")) is not None:
            until = until_v.string()
            if until == name:
                until_v.fail("a load cannot run until its own step: name a later step")
            later = self._later_steps(step_v)
            if until not in later:
                where = "not a later step" if until in self.probe_names else "no such step"
                shown = _few(later) if later else "none: this is the last step"
                until_v.fail(f"{show(until)} is {where}; name a later step ({shown})")
        expect_v = v.need("expect")
        expect_v.mapping(("successRate",))
        rate_v = expect_v.need("successRate")
        success = rate_v.number()
        if not 0 <= success <= 1:
            rate_v.fail(f"{success:g} is outside [0, 1]: the least success rate of any window")
        return LoadPlan(name, source, target, protocol, rate, timeout, window, until, success)

    def _later_steps(self, step_v: _V) -> list[str]:
        """The names written on the steps after `step_v` (they are read after it)."""
        later: list[str] = []
        seen = False
        for other in self.lab_steps.items():
            if seen and isinstance(other.value, dict) and isinstance(other.value.get("name"), str):
                later.append(other.value["name"])
            seen = seen or other.value is step_v.value
        return later

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
        now = self._workload_now(found[0].key) or found[0]  # as a rollout left it
        alive -= set(now.pod_names())
        alive |= set(replace(now, replicas=replicas).pod_names()) - deleted
        self.step_workloads[now.key] = replace(now, replicas=replicas)
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


def _in_range(v: _V | None, bounds: tuple[float, float], default: float, unit: str) -> float:
    """A positive number within `bounds` (a load's rate, timeout or window)."""
    if v is None:
        return default
    value = v.number()
    low, high = bounds
    if not low <= value <= high:
        v.fail(f"{value:g} is outside {low:g}-{high:g} {unit}")
    return value
