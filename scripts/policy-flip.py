"""The outage from the field: flip a NodePort Service from Cluster to Local, and back.

Run as root: sudo .venv/bin/python scripts/policy-flip.py
Every fact printed comes from the probes' verdicts (what the pods and captures saw).
"""

import sys

import testbed
from testbed.verdict.words import describe_ip

ENDS = ("completed", "broken", "dropped", "rejected")


def tell(lab, node):
    verdict = lab.probe(source="client", service="web", via="nodePort", node=node, count=10)
    o = verdict.observed
    facts = ", ".join(f"{k} {o[k]}/{o['sent']}" for k in ENDS if o[k])
    if o["delivered"]:
        pods = ", ".join(f"{p} x{n}" for p, n in o["pods"].items())
        seen = ", ".join(f"{ip} ({describe_ip(lab.plan, ip)})" for ip in o["sourceIPs"])
        facts += f", received by {pods}, pod saw {seen}"
    print(f"  via {node}: {facts}  [{'PASS' if verdict.passed else 'FAIL'}]")
    print(f"      {verdict.path}")
    return verdict


def phase(lab, policy):
    print(f"\nexternalTrafficPolicy: {policy}")
    return {n.name: tell(lab, n.name) for n in lab.plan.nodes}


with testbed.build(
    name="policy-flip",
    nodes=3,
    clients=["client"],
    services=[testbed.service("web", type="NodePort", port=80, target=8080, node_port=30080)],
    pods=[testbed.pod("web-0", node="node-1", app="web", port=8080)],
) as lab:
    plan = lab.plan
    print(f"lab {lab.id} ({plan.proxy.mode}): client {plan.clients[0].ip} calls NodePort 30080")
    for node in plan.nodes:
        pods = [p.name for p in plan.pods if p.node == node.name] or ["no pod"]
        print(f"  {node.name} {node.ip} runs {', '.join(pods)}")
    before = phase(lab, "Cluster")
    lab.set_policy("web", external="Local")  # rules and health checks follow at once
    after = phase(lab, "Local")
    lab.set_policy("web", external="Cluster")
    back = phase(lab, "Cluster")

    lost = [n for n, v in after.items() if v.observed["dropped"] == v.observed["sent"]]
    print(f"\nUnder Local, {len(lost)} of {len(after)} nodes dropped every connection in silence:")
    podless = [n.name for n in plan.nodes if all(p.node != n.name for p in plan.pods)]
    why = "exactly the nodes without a local pod" if lost == podless else "UNEXPECTED"
    print(f"  {', '.join(lost) or 'none'}: {why}; the client gets no answer and no error")
    for node, v in after.items():
        for ip in v.observed["sourceIPs"]:
            print(f"Through {node} the pod saw {ip}, {describe_ip(lab.plan, ip)}.")
    done = [n for n, v in back.items() if v.observed["completed"] == v.observed["sent"]]
    print(f"Back on Cluster, {len(done)} of {len(back)} nodes complete every connection again.")

ok = all(v.passed for v in [*before.values(), *after.values(), *back.values()])
print("every verdict agrees with kube-proxy's semantics" if ok else "SOME VERDICTS FAILED")
sys.exit(0 if ok else 1)
