"""What if kube-proxy DNATed Cluster traffic without SNAT? The reply takes the wrong way home.

Run as root: sudo .venv/bin/python scripts/return-path.py
Loads the built-in scenario no-snat-broken-return (kubeProxy whatIf: [no-snat]) and
prints, hop by hop, what the captures saw for one connection of each probe.
"""

import sys

import testbed
from testbed.verdict.words import describe_ip


def addr(lab, ip_port):
    ip = ip_port.rsplit(":", 1)[0]
    return f"{ip_port} ({describe_ip(lab.plan, ip)})"


with testbed.load("no-snat-broken-return") as lab:
    print(f"lab {lab.id} ({lab.plan.proxy.mode}), kube-proxy faults: {lab.plan.proxy.what_if}")
    passed = []
    for probe in lab.plan.probes:
        observed, verdict = lab.observe(probe)
        passed.append(verdict.passed)
        first = observed.attempts[0]
        print(f"\n{probe.name}: {observed.source_address} -> {addr(lab, observed.target)}")
        print(f"  hop by hop, first of {observed.sent} attempts:")
        start = first.hops[0].at if first.hops else 0.0
        for hop in first.hops:
            ms = (hop.at - start) * 1000
            print(f"    {ms:7.3f} ms  {hop.point:<12} {hop.kind:<12} {hop.src} -> {hop.dst}")
        seen = sorted({h.src.rsplit(":", 1)[0] for h in first.hops} - {observed.source_address})
        print("  who is who: " + "; ".join(f"{ip} {describe_ip(lab.plan, ip)}" for ip in seen))
        print(f"  the pod that got it: {first.pod}, which saw {addr(lab, first.source_ip or '?')}")
        if first.reply_from:
            print(f"  the reply came from {addr(lab, first.reply_from)}")
        if first.reply_from and first.reply_from != observed.target:
            print(f"  but the client dialled {observed.target}: no such connection for its kernel")
        resets = sum(1 for a in observed.attempts if a.client_reset)
        print(f"  the client reset the reply in {resets} of {observed.sent} attempts")
        outcome = "PASS" if verdict.passed else "FAIL"
        print(f"  return path: {observed.return_path}; verdict: {outcome}")

sys.exit(0 if all(passed) else 1)
