"""The edge as a pass-through external load balancer with health checks.

Like a cloud network LB (or MetalLB), it does not translate: packets to a VIP
or externalIP are routed to a node unchanged and kube-proxy's LB-IP rules take
it from there. In `ecmp` mode the route is multipath and the edge's kernel hashes
each packet's 5-tuple (topology.EDGE_HASH_FIELDS), so a flow, retransmits included,
stays on one node while the pool is unchanged; in `single` mode one node takes
all. With health checks on, a node joins a VIP's route only after
`healthy_threshold` good answers in a row and leaves after `unhealthy_threshold`
bad ones: Local services are checked on their healthCheckNodePort, Cluster
services on kube-proxy's own :10256/healthz.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

from pyroute2 import IPRoute

from testbed.core.model import Plan, ServicePlan
from testbed.core.topology import EDGE, Wiring, default_vip_nodes
from testbed.kernel import netns
from testbed.kubeproxy.healthcheck import PROXIER_HEALTH_PORT


@dataclass
class NodeHealth:
    node: str
    healthy: bool = False
    streak: int = 0  # consecutive answers agreeing with the latest one (+ good, - bad)
    last: str = "not checked"


def check_port(svc: ServicePlan) -> tuple[int, str]:
    if svc.external_local and svc.health_check_node_port:
        return svc.health_check_node_port, "/"
    return PROXIER_HEALTH_PORT, "/healthz"


def http_status(ns: str, ip: str, port: int, path: str, timeout: float) -> str:
    """One health probe from the edge: '200', '503', 'refused', 'timeout', ..."""
    sock = netns.socket_in(ns)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        head = sock.recv(64).decode(errors="replace")
        parts = head.split(" ", 2)
        return parts[1] if len(parts) > 1 and parts[1].isdigit() else "bad answer"
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return exc.strerror or "error"
    finally:
        sock.close()


class EdgeBalancer:
    def __init__(self, plan: Plan, wiring: Wiring) -> None:
        self.plan = plan
        self.wiring = wiring
        self.health: dict[tuple[str, str], NodeHealth] = {}  # (service key, node) -> health
        self._routes: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    # -- state -----------------------------------------------------------------

    def _vips(self) -> dict[str, ServicePlan]:
        return {ip: svc for svc in self.plan.services for ip in (*svc.lb_ips, *svc.external_ips)}

    def eligible(self) -> dict[str, tuple[str, ...]]:
        """VIP -> nodes the edge sends it to now."""
        lb = self.plan.load_balancer
        if lb.mode == "single" or not lb.health_checks:
            return default_vip_nodes(self.plan)
        with self._lock:
            return {
                vip: tuple(
                    n.name for n in self.plan.nodes if self.health[(svc.key, n.name)].healthy
                )
                for vip, svc in self._vips().items()
            }

    # -- checking ----------------------------------------------------------------

    def check_round(self) -> None:
        cfg = self.plan.load_balancer.health
        edge_ns = self.wiring.ns(EDGE)
        services = {svc.key: svc for svc in self._vips().values()}
        for key, svc in services.items():
            port, path = check_port(svc)
            for node in self.plan.nodes:
                status = http_status(edge_ns, node.ip, port, path, cfg.timeout)
                good = status == "200"
                with self._lock:
                    h = self.health.setdefault((key, node.name), NodeHealth(node.name))
                    h.last = status
                    h.streak = (max(h.streak, 0) + 1) if good else (min(h.streak, 0) - 1)
                    if good and h.streak >= cfg.healthy_threshold:
                        h.healthy = True
                    elif not good and -h.streak >= cfg.unhealthy_threshold:
                        h.healthy = False
        self._apply_routes()
        self.rounds += 1  # counted once its answers are in the routes

    def _apply_routes(self) -> None:
        wanted = self.eligible()
        if wanted == self._routes:
            return
        ips = {n.name: n.ip for n in self.plan.nodes}
        # pyroute2 opens its netlink socket per thread, in the thread's namespace: open it
        # here, in the edge's namespace, in whichever thread (start or the checker) runs this
        with netns.entered(self.wiring.ns(EDGE)), IPRoute() as ipr:
            for vip, nodes in wanted.items():
                if self._routes.get(vip) == nodes:
                    continue
                dst = f"{vip}/32"
                if not nodes:
                    with contextlib.suppress(Exception):
                        ipr.route("del", dst=dst)
                elif len(nodes) == 1:
                    ipr.route("replace", dst=dst, gateway=ips[nodes[0]])
                else:
                    hops = [{"gateway": ips[n]} for n in nodes]
                    ipr.route("replace", dst=dst, multipath=hops)
        self._routes = wanted

    def converge(self) -> None:
        """Check until every node has had enough answers to settle either way."""
        cfg = self.plan.load_balancer.health
        for _ in range(max(cfg.healthy_threshold, cfg.unhealthy_threshold)):
            self.check_round()

    # -- background --------------------------------------------------------------

    def start(self) -> EdgeBalancer:
        lb = self.plan.load_balancer
        if not self._vips() or lb.mode == "single" or not lb.health_checks:
            return self
        self.converge()
        self._thread = threading.Thread(target=self._loop, name="edge-health", daemon=True)
        self._thread.start()
        return self

    def follow_plan(self) -> None:
        """Start or stop checking when the plan turned health checks on or off; with them
        off, every node goes back into every VIP's route."""
        lb = self.plan.load_balancer
        wanted = bool(self._vips()) and lb.mode == "ecmp" and lb.health_checks
        if wanted and self._thread is None:
            self._stop.clear()
            self.start()
        elif not wanted:
            self.stop()
            self._apply_routes()

    def _loop(self) -> None:
        interval = self.plan.load_balancer.health.interval
        while not self._stop.wait(interval):
            with contextlib.suppress(Exception):
                self.check_round()

    def wait_rounds(self, rounds: int, timeout: float = 30.0) -> bool:
        """Wait until `rounds` more check rounds have completed (after a change)."""
        if self._thread is None:
            return True
        target = self.rounds + rounds
        deadline = time.monotonic() + timeout
        while self.rounds < target and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.rounds >= target

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def describe(self) -> str:
        lines = []
        with self._lock:
            for (key, node), h in sorted(self.health.items()):
                state = "in pool" if h.healthy else "out of pool"
                lines.append(f"{key:<24} {node:<10} {state:<12} last answer: {h.last}")
        return "\n".join(lines) or "no health checks (no LoadBalancer or externalIP services)"
