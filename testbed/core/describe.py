"""A plan as text, for `testbed plan`: nodes, pods, services and probes."""

from __future__ import annotations

from testbed.core.model import (
    Plan,
    ProbePlan,
    ServicePlan,
)
from testbed.core.scenario import (
    well_known_labels,
)
from testbed.core.yamlsrc import one_line

# -- describe ------------------------------------------------------------------------------


def describe(plan: Plan) -> str:
    """The plan as `testbed plan` prints it: what will exist, where, with which address."""
    net, proxy, lb = plan.network, plan.proxy, plan.load_balancer
    lines = [f"Lab {plan.name} ({one_line(plan.file)})"]
    if plan.description:
        lines.append(f"  {plan.description}")
    lines += [
        "",
        "Network",
        f"  fabric     {net.node_cidr}  edge {net.edge_fabric_ip}",
        f"  pods       {net.pod_cidr}",
        f"  services   {net.service_cidr}",
        f"  external   {net.external_cidr}  edge {net.edge_external_ip}",
        f"  LB VIPs    {net.vip_cidr}",
        "",
        "kube-proxy",
        f"  mode {proxy.mode}, masqueradeAll {_yes(proxy.masquerade_all)}, detectLocalMode "
        f"{proxy.detect_local_mode}, localhostNodePorts {_yes(proxy.localhost_nodeports)}"
        + (f", whatIf {', '.join(proxy.what_if)}" if proxy.what_if else ""),
        *(
            [f"  nodePortAddresses {', '.join(proxy.node_port_addresses)}"]
            if proxy.node_port_addresses
            else []
        ),
        "",
        "Load balancer (edge)",
        f"  mode {lb.mode}"
        + (f" (all traffic to {lb.node})" if lb.mode == "single" else " (per-flow hash)")
        + f", health checks {'on' if lb.health_checks else 'off'}",
        "",
        f"Nodes ({len(plan.nodes)})",
    ]
    width = max((len(n.name) for n in plan.nodes), default=4)
    for node in plan.nodes:
        usual = well_known_labels(node.name)  # every node has these: not repeated
        extra = [f"{k}={v}" for k, v in node.labels if usual.get(k) != v]
        lines.append(
            f"  {node.name:<{width}}  {node.ip:<15}  pods {node.pod_cidr:<18} "
            f"gateway {node.gateway}" + (f"  labels {', '.join(extra)}" if extra else "")
        )
    lines += ["", f"Pods ({len(plan.pods)})"]
    width = max((len(p.name) for p in plan.pods), default=4)
    node_width = max((len(n.name) for n in plan.nodes), default=4)
    for pod in plan.pods:
        ports = ", ".join(
            f"{p.port}/{p.protocol}" + (f" ({p.name})" if p.name else "") for p in pod.ports
        )
        state = _pod_state(pod.ready, pod.serving, pod.terminating)
        lines.append(
            f"  {pod.name:<{width}}  {pod.node:<{node_width}}  {pod.ip:<15} {ports or 'no ports'}"
            + (f"  [{state}]" if state else "")
            + ("" if pod.namespace == "default" else f"  namespace {pod.namespace}")
        )
    lines += ["", f"Services ({len(plan.services)})"]
    for svc in plan.services:
        lines += _describe_service(svc)
    lines += ["", f"Clients ({len(plan.clients)})"]
    lines += [f"  {c.name:<15}  {c.ip}" for c in plan.clients]
    lines += ["", f"Probes ({len(plan.probes)})"]
    lines += [f"  {_describe_probe(p)}" for p in plan.probes]
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "true" if flag else "false"


def _pod_state(ready: bool, serving: bool, terminating: bool) -> str:
    words = [] if ready else ["not ready"]
    if terminating:
        words.append("terminating" + (", serving" if serving else ""))
    return ", ".join(words)


def _describe_service(svc: ServicePlan) -> list[str]:
    head = f"  {svc.key}  {svc.type}  ClusterIP {svc.cluster_ip or 'None (headless)'}"
    lines = [head]
    facts = []
    if svc.type in ("NodePort", "LoadBalancer") or svc.external_ips:
        facts.append(f"externalTrafficPolicy {svc.external_policy}")
    facts.append(f"internalTrafficPolicy {svc.internal_policy}")
    if svc.affinity_timeout is not None:
        facts.append(f"sessionAffinity ClientIP ({svc.affinity_timeout}s)")
    if svc.health_check_node_port is not None:
        facts.append(f"healthCheckNodePort {svc.health_check_node_port}")
    lines.append("    " + ", ".join(facts))
    if svc.lb_ips:
        lines.append(f"    LB IPs {', '.join(svc.lb_ips)}")
    if svc.external_ips:
        lines.append(f"    externalIPs {', '.join(svc.external_ips)}")
    if svc.source_ranges:
        lines.append(f"    loadBalancerSourceRanges {', '.join(svc.source_ranges)}")
    for port in svc.ports:
        name = f"{port.name} " if port.name else ""
        node_port = f"  nodePort {port.node_port}" if port.node_port else ""
        lines.append(
            f"    port {name}{port.port}/{port.protocol} -> {port.target_port or port.port}"
            f"{node_port}  ({len(port.endpoints)} endpoints)"
        )
        for ep in port.endpoints:
            state = _pod_state(ep.ready, ep.serving, ep.terminating)
            lines.append(
                f"      {ep.ip}:{ep.port}  {ep.pod or '-'} on {ep.node}"
                + (f"  [{state}]" if state else "")
            )
    return lines


def _describe_probe(probe: ProbePlan) -> str:
    t = probe.target
    if t.address is not None:
        where = f"{t.address}:{t.port}"
    else:
        where = f"{t.service} port {t.port} via {t.via}" + (f" of {t.node}" if t.node else "")
    text = f"{probe.name}: {probe.source} -> {where}, {probe.protocol} x{probe.count}"
    if probe.source_port is not None:
        text += f" from port {probe.source_port}"
    if probe.mode != "connection":
        text += f" ({probe.mode})"
    e = probe.expect
    if e is None:
        return text + "; expect what the oracle predicts"
    parts = []
    if e.outcome:
        parts.append(e.outcome)
    if e.outcomes:
        parts.append("outcomes " + ", ".join(f"{k} {v:g}" for k, v in e.outcomes))
    if e.completed is not None:
        parts.append(f"completed {e.completed:g}")
    if e.source_ip:
        parts.append(f"sourceIP {e.source_ip}")
    if e.pods is not None:
        parts.append(f"pods {', '.join(e.pods) or 'none'}")
    if e.return_path:
        parts.append(f"returnPath {e.return_path}")
    if e.share:
        parts.append("share " + ", ".join(f"{pod} {share:g}" for pod, share in e.share))
    return text + "; expect " + (", ".join(parts) or "nothing in particular")
