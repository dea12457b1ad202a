"""A lab built entirely in code: your own nodes, clients and objects, your own tools inside.

Run as root: sudo .venv/bin/python scripts/custom-topology.py
Shows testbed.build (no YAML), lab.exec (curl from a client) and an ad-hoc capture
written as a pcap file for Wireshark.
"""

import sys
import tempfile

import testbed
from testbed.kernel.capture import write_pcap

lab = testbed.build(
    name="custom",
    nodes=["worker-a", "worker-b"],
    clients=[testbed.client("alice", ip="203.0.113.20"), "bob"],
    services=[
        testbed.service("api", type="NodePort", policy="Local", port=80, target=8080),
        testbed.service("api-internal", app="api", port=80, target=8080),
    ],
    deployments=[testbed.deployment("api", replicas=2, port=8080, spread=True)],
    pods=[testbed.pod("caller", node="worker-b")],
    proxy_mode="nftables",
)
with lab:
    plan = lab.plan
    node_port = plan.service("api").ports[0].node_port
    print(f"lab {lab.id} ({plan.proxy.mode}); Service api has nodePort {node_port}")
    for pod in plan.pods:
        print(f"  pod {pod.name:<7} {pod.ip:<11} on {pod.node}")
    for client in plan.clients:
        print(f"  client {client.name:<5} {client.ip}")

    def curl(source, ip, port, path):
        done = lab.exec(source, ["curl", "-s", "--max-time", "2", f"http://{ip}:{port}/{path}"])
        return done.stdout.strip() or f"no answer (curl exit {done.returncode})"

    for client, node in zip(plan.clients, plan.nodes, strict=True):
        pod = curl(client.name, node.ip, node_port, "hostname")
        seen = curl(client.name, node.ip, node_port, "clientip")
        print(f"{client.name} via {node.name}: pod {pod} saw {seen}")
    cluster_ip = plan.service("api-internal").cluster_ip
    seen = curl("caller", cluster_ip, 80, "clientip")
    print(f"caller via ClusterIP {cluster_ip}: pod saw {seen}")

    node = plan.nodes[0]
    with lab.capture([node.name, "api-0"]) as capture:
        curl("bob", node.ip, node_port, "clientip")
        capture.flush()
        frames = sorted((f for f in capture.frames() if f.proto == 6), key=lambda f: f.at)
    print(f"captured {len(frames)} TCP frames at {node.name}/eth0 and api-0/eth0; the SYNs:")
    for f in frames:
        if f.flags & 0x12 == 0x02:  # SYN without ACK: where the connection was opened
            print(f"  {f.point:<13} {f.src}:{f.sport} -> {f.dst}:{f.dport}")
    path = f"{tempfile.mkdtemp(prefix='testbed-')}/bob.pcap"
    write_pcap(path, frames)
    print(f"wrote {path} ({len(frames)} frames): open it in Wireshark")
    rules = [line.strip() for line in lab.rules(node.name).splitlines() if str(node_port) in line]
    print(f"{node.name}'s rules for nodePort {node_port}:", *rules, sep="\n  ")

sys.exit(0 if frames else 1)
