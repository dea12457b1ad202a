"""Packed versus spread pods behind the edge load balancer, with externalTrafficPolicy Local.

Run as root: sudo .venv/bin/python scripts/anti-affinity.py
The edge splits flows evenly over the nodes that pass its health check, and under
Local each node serves only its own pods: where the pods sit decides their share.
"""

import sys
from collections import Counter

import testbed
from testbed.verdict.words import describe_ip

COUNT = 300


def lb(name):
    return testbed.service(name, type="LoadBalancer", policy="Local", port=80, target=8080)


def shares(lab, service):
    """Probe the service's LB address and print each pod's share; returns (shares, verdict)."""
    vip = lab.plan.service(service).lb_ips[0]
    verdict = lab.probe(source="client", service=service, via="loadBalancer", count=COUNT)
    got, oracle = verdict.observed["pods"], verdict.oracle.get("share", {})
    pool = ", ".join(lab.lb_nodes()[vip])
    print(f"\n{service}: {COUNT} connections to {vip}; the edge sends them to {pool}")
    pods = [p for p in lab.plan.pods if dict(p.labels).get("app") == service]
    per_node = Counter({p.node: 0 for p in pods})
    for pod in pods:
        n = got.get(pod.name, 0)
        per_node[pod.node] += n
        want = f"(oracle {oracle.get(pod.name, 0.0):.1%})"
        print(f"  {pod.name:<9} on {pod.node}: {n:>3}/{COUNT} = {n / COUNT:5.1%}  {want}")
    print("  per node: " + ", ".join(f"{k} {n / COUNT:.0%}" for k, n in sorted(per_node.items())))
    seen = [f"{ip} ({describe_ip(lab.plan, ip)})" for ip in verdict.observed["sourceIPs"]]
    print(f"  pods saw: {', '.join(seen)}")
    print("  verdict: " + " ".join(["PASS" if verdict.passed else "FAIL", *verdict.reasons]))
    return {p.name: got.get(p.name, 0) / COUNT for p in pods}, verdict


with testbed.build(
    name="anti-affinity",
    nodes=3,
    clients=["client"],
    services=[lb("packed"), lb("spread")],
    deployments=[
        testbed.deployment("packed", replicas=3, port=8080, node="node-1"),  # no anti-affinity
        testbed.deployment("spread", replicas=3, port=8080, spread=True),  # one per node
    ],
    pods=[testbed.pod("lone", node="node-2", app="packed", port=8080)],
) as lab:
    print(f"lab {lab.id} ({lab.plan.proxy.mode})")
    (packed, v1), (spread, v2) = shares(lab, "packed"), shares(lab, "spread")

top, bottom = max(packed, key=packed.get), min(packed, key=packed.get)
ratio = packed[top] / packed[bottom]
print(f"\npacked: {top} got {packed[top]:.0%}, {ratio:.1f}x the share of {bottom}")
print(f"spread: shares from {min(spread.values()):.0%} to {max(spread.values()):.0%}")
ok = v1.passed and v2.passed
print("the shares fit kube-proxy's semantics (chi-square)" if ok else "SOME VERDICTS FAILED")
sys.exit(0 if ok else 1)
