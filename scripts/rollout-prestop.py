"""A rolling update behind externalTrafficPolicy: Local, watched between its events.

Run as root: sudo .venv/bin/python scripts/rollout-prestop.py [GRACE]
The library's rollout-local-prestop world: web-0..web-2 on node-1..node-3, rolled with a
preStop sleep of 3 s (the scenario's own is 5 s). At every instant of the rollout this
prints the pods' states, and when an old pod starts terminating, what its node's
healthCheckNodePort answers and what happens to Local traffic sent to that node. GRACE
(seconds, e.g. 0) overrides the termination grace period: with 0 a deleted pod is gone
at once.
"""

import sys

import testbed
from testbed.core.scenario import Rollout
from testbed.kernel.controlplane import http_get

grace = int(sys.argv[1]) if len(sys.argv) > 1 else None
PRE_STOP = 3.0  # seconds; longer than the edge's 3 checks of 0.25 s
verdicts = []

with testbed.load("rollout-local-prestop") as lab:
    lab.wait_for_edge()
    health_port = lab.plan.service("web").health_check_node_port
    homes = {p.name: p.node for p in lab.plan.pods}
    mode = lab.plan.proxy.mode
    print(f"lab {lab.id} ({mode}): Local LoadBalancer web, preStop sleep {PRE_STOP:g} s")
    print("  " + ", ".join(f"{p.name} on {p.node}" for p in lab.plan.pods))

    def state(p):
        if p.terminating:
            return "terminating"
        return "ready" if p.ready else "starting"

    def watch(at, events):
        words = {"create": "made", "ready": "ready", "terminate": "deleted", "gone": "gone"}
        print(f"+{at:.0f} s: " + ", ".join(f"{e.pod} {words[e.what]}" for e in events))
        print("    " + ", ".join(f"{p.name} {state(p)} ({p.node})" for p in lab.plan.pods))
        for e in events:
            if e.what != "terminate":
                continue
            node = homes[e.pod]
            status = http_get(lab.ns("client"), lab.plan.node(node).ip, health_port, "/")[0]
            verdict = lab.probe(source="client", service="web", via="nodePort", node=node)
            verdicts.append(verdict)
            o = verdict.observed
            pods = ", ".join(f"{p} x{n}" for p, n in o["pods"].items()) or "no pod"
            print(
                f"    {node}: healthCheckNodePort says {status}; Local traffic to {node}: "
                f"{o['completed']}/{o['sent']} completed ({pods})  "
                f"[{'PASS' if verdict.passed else 'FAIL'}]"
            )
            for reason in verdict.lines:
                print(f"      {reason}")

    rollout = Rollout(1, 0, readiness_delay=1.0, grace=grace, pre_stop=PRE_STOP)
    took = lab.rollout("web", rollout, watch)
    print(f"done in {took:.1f} s: " + ", ".join(f"{p.name} on {p.node}" for p in lab.plan.pods))

ok = all(v.passed for v in verdicts)
print("every verdict agrees with kube-proxy's semantics" if ok else "SOME VERDICTS FAILED")
sys.exit(0 if ok else 1)
