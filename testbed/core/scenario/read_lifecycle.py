"""Reading pod lifecycle: a pod's termination (grace period, preStop) and the steps that
start and end pods over time (rollout, drainNode, taintNode)."""

from __future__ import annotations

import re
from dataclasses import replace

from testbed.core.scenario.types import (
    Deployment,
    Drain,
    Rollout,
    Step,
    Taint,
)
from testbed.core.scenario.values import (
    _LABEL_VALUE,
    _V,
    _check_label_key,
    _few,
    _kind,
)
from testbed.core.yamlsrc import show

MAX_GRACE = 3600  # seconds: terminationGracePeriodSeconds the lab waits out
MAX_READINESS_DELAY = 600
DEFAULT_GRACE = 30
_PERCENT = re.compile(r"(0|[1-9][0-9]*)%")
_SLEEP = re.compile(r"sleep +([0-9]+(\.[0-9]+)?)")
_SHELLS = ("sh", "/bin/sh", "bash", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash")
_SLEEPS = ("sleep", "/bin/sleep", "/usr/bin/sleep")
_HANDLERS = ("sleep", "exec", "httpGet", "tcpSocket")


def _int_or_percent(v: _V, what: str, cap_100: bool = False) -> int | str:
    """An IntOrString as a Deployment strategy takes it: a count, or "N%"."""
    value = v.value
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        v.fail(f"must be a whole number or a percentage like 25%, not {_kind(value)}")
    if isinstance(value, int):
        if value < 0:
            v.fail(f"{value}: {what} must be greater than or equal to 0")
        return value
    if not _PERCENT.fullmatch(value):
        v.fail(f"{show(value)} is not a whole number or a percentage like 25%")
    if cap_100 and int(value[:-1]) > 100:
        v.fail(f"{value}: {what} must not be greater than 100%")
    return value


def _zero(value: int | str) -> bool:
    return value in (0, "0%")


def _sleep_seconds(v: _V) -> float | None:
    """A preStop exec command the lab can run: sleep N, directly or through a shell
    (None: another command, which the lab's pods cannot run)."""
    words = [w.string(empty=True) for w in v.items()]
    if len(words) == 2 and words[0] in _SLEEPS:
        text = f"sleep {words[1]}"
    elif len(words) == 3 and words[0] in _SHELLS and words[1] == "-c":
        text = words[2].strip()
    else:
        text = ""
    found = _SLEEP.fullmatch(text)
    if found is None:
        return None
    seconds = float(found.group(1))
    if seconds > MAX_GRACE:
        v.fail(f"sleeps {seconds:g} s; the lab waits out at most {MAX_GRACE} s")
    return seconds


class LifecycleReading:
    """Termination fields of a pod spec, and the rollout / drainNode / taintNode steps.

    One part of the reader: `self` is the `_Reader` this class is mixed into.
    """

    def _termination(self, spec: _V) -> tuple[int, float]:
        """(terminationGracePeriodSeconds, the longest preStop sleep) of a pod spec."""
        grace = DEFAULT_GRACE
        if (grace_v := spec.get("terminationGracePeriodSeconds")) is not None:
            grace = grace_v.integer(0, MAX_GRACE, f"must be 0-{MAX_GRACE} (seconds)")
        longest = 0.0
        containers = spec.get("containers")
        for item in containers.items() if containers is not None else ():
            if not isinstance(item.value, dict) or (life_v := item.get("lifecycle")) is None:
                continue
            life_v.mapping(("preStop",), ("postStart", "stopSignal"))
            if (pre_v := life_v.get("preStop")) is None:
                continue
            pre_v.mapping(_HANDLERS)
            given = [k for k in _HANDLERS if pre_v.get(k) is not None]
            if len(given) != 1:
                pre_v.fail(f"give one handler: {', '.join(_HANDLERS)}")
            if given[0] in ("httpGet", "tcpSocket"):
                self._not_run(pre_v, f"a {given[0]} hook")
                continue
            if given[0] == "sleep":
                sleep_v = pre_v.need("sleep").mapping(("seconds",))
                seconds_v = sleep_v.need("seconds")
                seconds = float(
                    seconds_v.integer(
                        0,
                        grace,
                        "must be non-negative and less than terminationGracePeriodSeconds "
                        f"({grace})",
                    )
                )
            else:
                exec_v = pre_v.need("exec").mapping(("command",))
                command_v = exec_v.need("command")
                found = _sleep_seconds(command_v)
                if found is None:
                    words = " ".join(str(w) for w in command_v.value)
                    self._not_run(command_v, f"the command {show(words)}")
                    continue
                seconds = found
            longest = max(longest, seconds)
        return grace, longest

    def _not_run(self, v: _V, what: str) -> None:
        """A hook a dump may hold (ingress-nginx's /wait-shutdown): loaded, with a warning."""
        self.warnings.append(
            v.loc.warning(
                f"preStop runs {what}, which the lab's pods (an echo server) cannot run: a "
                "deleted pod stops answering at once; give sleep: {seconds: N} to model the "
                "time it keeps serving"
            )
        )

    # steps

    def _workload_now(self, key: str) -> Deployment | None:
        """A workload as the steps before this one left it (rollouts rename its pods)."""
        found = self.step_workloads.get(key)
        if found is None:
            found = next((d for d in self.deployments if d.key == key), None)
        return found

    def _claim_new_pods(self, names: list[str], v: _V, what: str) -> None:
        for name in names:
            first = self.seen.owner("pod", name)
            if first is not None and name not in self.step_pods:
                v.fail(
                    f"{what} would name a new pod {name}, a name already used (line "
                    f"{first.line}); rename that pod"
                )
            self.seen.where[("pod", name)] = v.loc
            self.step_pods.add(name)

    def _rollout_step(self, v: _V, step: Step, alive: set[str]) -> Step:
        v.mapping(
            (
                "deployment",
                "maxSurge",
                "maxUnavailable",
                "readinessDelaySeconds",
                "terminationGracePeriodSeconds",
                "preStopSeconds",
            )
        )
        dep_v = v.need("deployment")
        ref = dep_v.string()
        key = ref if "/" in ref else f"default/{ref}"
        dep = self._workload_now(f"Deployment/{key}")
        if dep is None:
            other = [d for d in self.deployments if f"{d.namespace}/{d.name}" == key]
            if other:
                dep_v.fail(
                    f"{other[0].kind} {key} does not roll out like a Deployment (not modelled): "
                    "rollout replaces a Deployment's pods"
                )
            self._cascade(dep_v, "Deployment", key)
            dep_v.fail(f"no Deployment {key} in the scenario")
        rollout = Rollout()
        if (s_v := v.get("maxSurge")) is not None:
            rollout = replace(rollout, max_surge=_int_or_percent(s_v, "maxSurge"))
        if (u_v := v.get("maxUnavailable")) is not None:
            rollout = replace(
                rollout, max_unavailable=_int_or_percent(u_v, "maxUnavailable", cap_100=True)
            )
        if _zero(rollout.max_surge) and _zero(rollout.max_unavailable):
            (u_v or s_v or v).fail("maxUnavailable may not be 0 when maxSurge is 0")
        if (d_v := v.get("readinessDelaySeconds")) is not None:
            delay = d_v.number()
            if not 0 <= delay <= MAX_READINESS_DELAY:
                d_v.fail(f"{delay:g} is outside 0-{MAX_READINESS_DELAY} (seconds)")
            rollout = replace(rollout, readiness_delay=delay)
        if (g_v := v.get("terminationGracePeriodSeconds")) is not None:
            rollout = replace(
                rollout, grace=g_v.integer(0, MAX_GRACE, f"must be 0-{MAX_GRACE} (seconds)")
            )
        if (p_v := v.get("preStopSeconds")) is not None:
            seconds = p_v.number()
            if not 0 <= seconds <= MAX_GRACE:
                p_v.fail(f"{seconds:g} is outside 0-{MAX_GRACE} (seconds)")
            rollout = replace(rollout, pre_stop=seconds)
        new = dep.next_names(dep.replicas)
        self._claim_new_pods(new, dep_v, f"the rollout of {key}")
        alive -= set(dep.pod_names())
        alive |= set(new)
        self.step_workloads[dep.key] = replace(dep, names=tuple(new), replicas=len(new))
        return replace(step, deployment=key, rollout=rollout)

    def _node_name(self, node_v: _V) -> str:
        node = node_v.string()
        assert self.lab is not None
        names = [n.name for n in self.lab.nodes]
        if node not in names:
            node_v.fail(f"no node named {show(node)} in the lab ({_few(names)})")
        return node

    def _drain_step(self, v: _V, step: Step, alive: set[str]) -> Step:
        """Which pods a drain moves is the scheduler's to say, known when it runs: every
        Deployment's possible replacements are named here, so later steps may use them."""
        v.mapping(("node", "readinessDelaySeconds"))
        node = self._node_name(v.need("node"))
        drain = Drain()
        if (d_v := v.get("readinessDelaySeconds")) is not None:
            delay = d_v.number()
            if not 0 <= delay <= MAX_READINESS_DELAY:
                d_v.fail(f"{delay:g} is outside 0-{MAX_READINESS_DELAY} (seconds)")
            drain = Drain(readiness_delay=delay)
        for dep in self.deployments:
            if dep.kind != "Deployment":
                continue
            now = self._workload_now(dep.key) or dep
            possible = [
                n
                for n in now.next_names(now.replicas)
                if self.seen.owner("pod", n) is None or n in self.step_pods
            ]
            for name in possible:
                self.seen.where[("pod", name)] = v.loc
                self.step_pods.add(name)
            alive |= set(possible)
        return replace(step, node=node, drain=drain)

    def _taint_step(self, v: _V, step: Step) -> Step:
        v.mapping(("node", "key", "value", "effect"))
        node = self._node_name(v.need("node"))
        key_v = v.need("key")
        key = key_v.string()
        _check_label_key(key_v, key, "taint")
        value = ""
        if (value_v := v.get("value")) is not None:
            value = value_v.string(empty=True)
            if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
                value_v.fail(f"{show(value)} is not a valid taint value")
        effect = v.need("effect").enum("NoSchedule", "PreferNoSchedule", "NoExecute")
        return replace(step, node=node, taint=Taint(key, value, effect))
