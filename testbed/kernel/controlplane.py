"""A lab's own Kubernetes control plane: etcd and kube-apiserver in a namespace of theirs.

The management network is a bridge in the control plane's namespace with one veth
into each node (made from inside lab namespaces: no link ever exists in the host's).
No route is added anywhere: nodes reach the API server on the connected subnet only,
so the management network never carries probe traffic. Readiness is polled, never
slept on; every process is started by a `Launcher` (dies with its owner) and reported
to `on_started` at once, so the lab's record names it before anything else happens.
"""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from testbed.core.errors import LabError
from testbed.core.topology import Addr, Veth, Wiring
from testbed.kernel import netns, procs
from testbed.kernel.checkpoint import reached
from testbed.kernel.launch import Launcher
from testbed.kernel.upstreambin import Binaries
from testbed.kubeproxy import objects
from testbed.kubeproxy.objects import CONTROL_PLANE_NS, NODE_IFNAME, Management

BRIDGE = "br-mgmt"
ETCD_PORT = 2379
READY_TIMEOUT = 60.0  # seconds for etcd or the API server to answer ready


def wiring(mgmt: Management, lab_id: str) -> Wiring:
    """The management network as a partial Wiring: the control plane's namespace is new,
    the nodes' namespaces exist already (only a veth and an address are added there)."""
    veths = tuple(
        Veth(CONTROL_PLANE_NS, f"n_{k}", node, NODE_IFNAME, master=BRIDGE)
        for k, (node, _) in enumerate(mgmt.nodes, 1)
    )
    addrs = tuple(Addr(node, NODE_IFNAME, f"{ip}/{mgmt.prefix}") for node, ip in mgmt.nodes)
    return Wiring(
        lab_id=lab_id,
        namespaces=(CONTROL_PLANE_NS,),
        bridges=((CONTROL_PLANE_NS, BRIDGE, f"{mgmt.apiserver}/{mgmt.prefix}"),),
        veths=veths,
        addrs=addrs,
        routes=(),
        sysctls=(),
    )


def http_get(ns: str, host: str, port: int, path: str, tls: bool = False, timeout: float = 2.0):
    """(status, body) of one GET made from inside namespace `ns`."""
    sock = netns.socket_in(ns)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=host)
        request = f"GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    finally:
        sock.close()
    text = b"".join(chunks).decode(errors="replace")
    head, _, body = text.partition("\r\n\r\n")
    status = int(head.split(None, 2)[1]) if head.startswith("HTTP/") else 0
    return status, body


@dataclass
class Files:
    """Everything the control plane writes, under the lab's data directory."""

    root: str

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def write(self, name: str, text: str, mode: int = 0o600) -> str:
        target = self.path(name)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return target


class ControlPlane:
    """etcd + kube-apiserver of one lab, its management network and its kubectl."""

    def __init__(
        self,
        binaries: Binaries,
        mgmt: Management,
        lab_wiring: Wiring,
        data_dir: str,
        on_started: Callable[[procs.Proc], None],
    ) -> None:
        self.bin = binaries
        self.mgmt = mgmt
        self.lab_wiring = lab_wiring
        self.files = Files(data_dir)
        self.on_started = on_started
        self.launcher: Launcher | None = None
        self.ns = lab_wiring.ns(CONTROL_PLANE_NS)
        self.admin_config = self.files.path("admin.kubeconfig")
        self.proxy_config = self.files.path("kube-proxy.kubeconfig")

    # -- start ----------------------------------------------------------------

    def build_network(self, make: Callable, on_made: Callable[[str], None]) -> None:
        """Make the management network with the lab's own `make(wiring, on_made=...)`."""
        make(wiring(self.mgmt, self.lab_wiring.lab_id), on_made=on_made)
        reached("management")

    def _spawn(self, ns: str, argv: list[str], name: str) -> procs.Proc:
        assert self.launcher is not None
        proc = self.launcher.spawn(ns, argv, self.files.path(f"{name}.log"), name)
        self.on_started(proc)
        return proc

    def start(self, service_cidr: str, node_ports: str) -> None:
        """Write the keys, tokens and kubeconfigs, start etcd then the API server, wait ready."""
        os.makedirs(self.files.root, mode=0o700, exist_ok=True)
        os.makedirs(self.files.path("etcd"), mode=0o700, exist_ok=True)
        os.makedirs(self.files.path("certs"), mode=0o700, exist_ok=True)
        key = self.files.path("sa.key")
        subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", key, "-pubout", "-out", self.files.path("sa.pub")],
            check=True,
            capture_output=True,
        )
        admin, proxy = secrets.token_hex(16), secrets.token_hex(16)
        tokens = self.files.write("tokens.csv", objects.tokens_csv(admin, proxy))
        self.files.write("admin.kubeconfig", objects.kubeconfig(self.mgmt.server, "admin", admin))
        self.files.write(
            "kube-proxy.kubeconfig",
            objects.kubeconfig(self.mgmt.server, "system:kube-proxy", proxy),
            0o644,
        )
        self.launcher = Launcher()
        started = time.monotonic()
        self._spawn(
            self.ns,
            [
                self.bin.path("etcd"),
                "--name=cp",
                f"--data-dir={self.files.path('etcd')}",
                f"--listen-client-urls=http://127.0.0.1:{ETCD_PORT}",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            "etcd",
        )
        reached("etcd-started")
        self._wait("etcd", lambda: http_get(self.ns, "127.0.0.1", ETCD_PORT, "/health"))
        reached("etcd-ready")
        self._spawn(
            self.ns,
            [
                self.bin.path("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
                f"--bind-address={self.mgmt.apiserver}",
                f"--advertise-address={self.mgmt.apiserver}",
                f"--secure-port={objects.API_PORT}",
                f"--cert-dir={self.files.path('certs')}",
                f"--service-cluster-ip-range={service_cidr}",
                f"--service-node-port-range={node_ports}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.files.path('sa.pub')}",
                f"--service-account-signing-key-file={key}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                "--profiling=false",
            ],
            "kube-apiserver",
        )
        reached("apiserver-started")
        self._wait(
            "kube-apiserver",
            lambda: http_get(self.ns, self.mgmt.apiserver, objects.API_PORT, "/readyz", tls=True),
        )
        self.ready_seconds = time.monotonic() - started
        reached("apiserver-ready")

    def _wait(self, what: str, ask: Callable[[], tuple[int, str]]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.launcher is not None
            if not all(self.launcher.running(p) for _, p in self.launcher.children):
                dead = [p.name for _, p in self.launcher.children if not self.launcher.running(p)]
                raise LabError(
                    f"{', '.join(dead)} exited while starting (log: {self.files.root}/"
                    f"{dead[0]}.log)"
                )
            try:
                status, body = ask()
                if status == 200:
                    return
                last = f"HTTP {status} {body.strip()[:80]}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise LabError(f"{what} not ready after {READY_TIMEOUT:.0f} s ({last})")

    def start_kube_proxy(self, node: str, config: str) -> procs.Proc:
        path = self.files.write(f"kube-proxy-{node}.yaml", config, 0o644)
        return self._spawn(
            self.lab_wiring.ns(node),
            [self.bin.path("kube-proxy"), f"--config={path}", "--v=1"],
            f"kube-proxy-{node}",
        )

    # -- use ------------------------------------------------------------------

    def kubectl(self, args: list[str], stdin: str | None = None, timeout: float = 60):
        """Run the built kubectl as admin from inside the control plane's namespace."""
        argv = ["ip", "netns", "exec", self.ns, self.bin.path("kubectl")]
        argv += [f"--kubeconfig={self.admin_config}", *args]
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            first = (done.stderr.strip() or done.stdout.strip() or "failed").splitlines()[0]
            raise LabError(f"kubectl {' '.join(args[:3])}: {first}")
        return done.stdout

    def stop(self) -> None:
        """SIGTERM everything at once, SIGKILL after a grace period; wait for all of it."""
        if self.launcher is not None:
            self.launcher.close(last=("etcd",))
            self.launcher = None


def kubectl_argv(bin_path: str, ns: str, admin_config: str, args: list[str]) -> list[str]:
    """The command line `testbed kubectl` runs (inside the control plane's namespace)."""
    return ["ip", "netns", "exec", ns, bin_path, f"--kubeconfig={admin_config}", *args]


def metrics(ns: str, host: str, port: int = objects.METRICS_PORT) -> dict[str, float]:
    """kube-proxy's metrics (name{labels} -> value) scraped from inside its node."""
    status, body = http_get(ns, host, port, "/metrics")
    if status != 200:
        raise OSError(f"metrics answered HTTP {status}")
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out
