"""The lab's servers: every pod's echo server and every node's health servers.

One asyncio event loop in one background thread serves them all, whatever
namespace they live in: a socket keeps the namespace it was created in, so the
loop thread enters a namespace only for the instant it takes to create one
(`netns.socket_in`) and then serves it like any other. Thousands of pods cost
file descriptors, not threads or processes.

HTTP is the small subset the probes and health checkers need: the request head
is read up to the blank line (at most 8 KiB), answered, and the connection is
closed after every response (`Connection: close`), so keep-alive clients simply
reconnect. Request bodies are ignored.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from testbed.kernel import netns
from testbed.kubeproxy import healthcheck
from testbed.kubeproxy.healthcheck import HttpResponse, Instant

HEAD_LIMIT = 8192
BACKLOG = 1024
SEEN_LIMIT = 10_000  # peers each pod remembers; only tests and diagnostics read them
_TEXT = (("Content-Type", "text/plain; charset=utf-8"),)


@dataclass(frozen=True)
class Seen:
    """One connection (TCP) or datagram (UDP) as the pod's own socket saw it."""

    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int
    protocol: str
    at: float


def host_port(ip: str, port: int) -> str:
    """Go's net.JoinHostPort, the form netexec's /clientip answers with."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _text(body: str, status: int = 200) -> HttpResponse:
    return HttpResponse(status, _TEXT if body else (), body.encode())


def netexec_http(target: str, pod_name: str, peer: str, now: Instant) -> HttpResponse:
    """agnhost netexec's HTTP routes that Service tests use; unknown paths fall to "/" as in Go.

    "/" answers `NOW: <time>` like netexec, except that it echoes `msg` when one is given.
    """
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    msg = query.get("msg", [""])[0]
    path = parts.path
    if path in ("/hostname", "/hostName"):
        return _text(pod_name)
    if path == "/clientip":
        return _text(peer)
    if path == "/healthz":
        return _text("")
    if path == "/echo":
        code = query.get("code", [""])[0]
        if not code:
            return _text(msg)
        if not code.lstrip("-").isdigit():
            return _text(f"argument 'code' must be an integer or empty, got {code!r}\n")
        return _text(msg, int(code))
    if "msg" in query:
        return _text(msg)
    return _text(f"NOW: {now.go_string()}")


def netexec_udp(data: bytes, pod_name: str, peer: str) -> bytes | None:
    """netexec's UDP commands; like netexec it lower-cases the datagram first."""
    text = data.decode("utf-8", "replace").strip().lower()
    if text == "hostname":
        return pod_name.encode()
    if text == "clientip":
        return peer.encode()
    if text.startswith("echo "):
        return text.split(" ", 1)[1].encode()
    return None


def _addr(sockaddr: Any) -> tuple[str, int]:
    return str(sockaddr[0]), int(sockaddr[1])


# (state, method, target, peer) -> response; state is swapped whole to update a server.
Answer = Callable[[Any, str, str, tuple[str, int]], HttpResponse]


@dataclass(eq=False)
class _Server:
    """One listening or bound socket, what it has open, and what it answers with."""

    ns: str
    ip: str
    answer: Answer | None = None
    state: Any = None
    handle: asyncio.AbstractServer | asyncio.BaseTransport | None = None
    conns: set[asyncio.BaseTransport] = field(default_factory=set)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        for conn in list(self.conns):
            conn.abort()  # type: ignore[attr-defined]
        self.conns.clear()


class _HttpConnection(asyncio.Protocol):
    def __init__(self, server: _Server, on_connect: Callable[[Seen], None] | None) -> None:
        self.server = server
        self.on_connect = on_connect
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.conns.add(transport)
        self.peer = _addr(transport.get_extra_info("peername"))
        if self.on_connect is not None:
            local = _addr(transport.get_extra_info("sockname"))
            self.on_connect(Seen(*self.peer, *local, "TCP", time.time()))

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 and len(self.buf) <= HEAD_LIMIT:
            return
        if end < 0 or end > HEAD_LIMIT:
            self._reply(_text("431 Request Header Fields Too Large", 431))
            return
        request = bytes(self.buf[: self.buf.find(b"\r\n")]).decode("latin-1").split(" ")
        if len(request) != 3 or not request[2].startswith("HTTP/"):
            self._reply(_text("400 Bad Request", 400))
            return
        method, target, _ = request
        assert self.server.answer is not None
        response = self.server.answer(self.server.state, method, target, self.peer)
        self._reply(response, head_only=method == "HEAD")

    def _reply(self, response: HttpResponse, head_only: bool = False) -> None:
        assert self.transport is not None
        self.transport.write(response.encode(head_only=head_only))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self.transport)  # type: ignore[arg-type]


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, pod_name: str, local: tuple[str, int], record: Callable[[Seen], None]):
        self.pod_name = pod_name
        self.local = local
        self.record = record
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        peer = _addr(addr)
        self.record(Seen(*peer, *self.local, "UDP", time.time()))
        reply = netexec_udp(data, self.pod_name, host_port(*peer))
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


@dataclass(frozen=True)
class _ServiceHealth:
    namespace: str
    name: str
    local_endpoints: int
    proxy_healthy: bool


@dataclass(frozen=True)
class _ProxyHealth:
    healthy: bool
    node_eligible: bool
    last_updated: Instant | None


class ServerHub:
    """All servers of a lab on one event loop; every public method is thread-safe.

    Registry changes run on the loop thread (so the loop owns the registry); only
    the `seen` records are shared, under a lock.
    """

    def __init__(self, seen_limit: int = SEEN_LIMIT) -> None:
        self._seen_limit = seen_limit
        self._seen: dict[str, collections.deque[Seen]] = {}
        self._seen_lock = threading.Lock()
        self._servers: dict[tuple[Any, ...], _Server] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._mono0 = time.monotonic_ns()

    # -- life cycle -------------------------------------------------------

    def start(self) -> ServerHub:
        if self._loop is not None:
            raise RuntimeError("server hub already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        loop.call_soon(ready.set)
        self._thread = threading.Thread(
            target=loop.run_forever, name="testbed-servers", daemon=True
        )
        self._loop = loop
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        """Close every socket, then end the loop thread (within about a second)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._close_all(), timeout=1.0)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(1.0)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> ServerHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._loop is not None

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("server hub is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _now(self) -> Instant:
        return Instant(time.time_ns(), time.monotonic_ns() - self._mono0)

    # -- echo servers -----------------------------------------------------

    def add_echo(self, ns: str, pod_name: str, ip: str, port: int, protocol: str) -> None:
        """Serve netexec for `pod_name` on ip:port inside `ns`, replacing any server there."""
        protocol = protocol.upper()
        if protocol not in ("TCP", "UDP"):
            raise ValueError(f"unsupported protocol {protocol!r}")
        self._call(self._add_echo(ns, pod_name, ip, port, protocol))

    def remove_server(self, ns: str, ip: str, port: int, protocol: str) -> bool:
        return self._call(self._drop(("echo", ns, ip, port, protocol.upper())))

    def remove(self, ns: str) -> int:
        """Close every server living in `ns` (a pod or node going away); returns how many."""
        return self._call(self._drop_ns(ns))

    def seen(self, pod_name: str) -> list[Seen]:
        with self._seen_lock:
            return list(self._seen.get(pod_name, ()))

    def clear_seen(self, pod_name: str | None = None) -> None:
        with self._seen_lock:
            if pod_name is None:
                self._seen.clear()
            else:
                self._seen.pop(pod_name, None)

    def _recorder(self, pod_name: str) -> Callable[[Seen], None]:
        def record(seen: Seen) -> None:
            with self._seen_lock:
                queue = self._seen.get(pod_name)
                if queue is None:
                    queue = self._seen[pod_name] = collections.deque(maxlen=self._seen_limit)
                queue.append(seen)

        return record

    # -- kube-proxy health servers ------------------------------------------

    def set_health(
        self,
        ns: str,
        node_ip: str,
        port: int,
        service_ns: str,
        service_name: str,
        local_endpoints: int,
        proxy_healthy: bool = True,
    ) -> None:
        """Open or update a service's healthCheckNodePort server on one node."""
        state = _ServiceHealth(service_ns, service_name, local_endpoints, proxy_healthy)
        self._call(self._set_health(ns, node_ip, port, state))

    def drop_health(self, ns: str, port: int) -> bool:
        return self._call(self._drop(("health", ns, port)))

    def set_proxy_health(
        self, ns: str, node_ip: str, healthy: bool, node_eligible: bool = True
    ) -> None:
        """Open or update kube-proxy's own /healthz and /livez server on port 10256."""
        self._call(self._set_proxy_health(ns, node_ip, healthy, node_eligible))

    # -- loop side ----------------------------------------------------------

    def _answer_echo(self, pod_name: str, method: str, target: str, peer: tuple[str, int]):
        return netexec_http(target, pod_name, host_port(*peer), self._now())

    @staticmethod
    def _answer_service(state: _ServiceHealth, method: str, target: str, peer: tuple[str, int]):
        return healthcheck.service_health(
            state.namespace, state.name, state.local_endpoints, state.proxy_healthy
        )

    def _answer_proxy(self, state: _ProxyHealth, method: str, target: str, peer: tuple[str, int]):
        return healthcheck.proxier_health(
            target, state.healthy, state.last_updated, self._now(), state.node_eligible
        )

    async def _add_echo(self, ns: str, pod_name: str, ip: str, port: int, protocol: str) -> None:
        key = ("echo", ns, ip, port, protocol)
        if self._close(key):
            await asyncio.sleep(0)  # the old socket is released by a loop callback
        record = self._recorder(pod_name)
        if protocol == "TCP":
            await self._http(key, ns, ip, port, self._answer_echo, pod_name, record)
            return
        sock = self._bound(ns, ip, port, socket.SOCK_DGRAM)
        local = _addr(sock.getsockname())
        opening = asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _UdpEcho(pod_name, local, record), sock=sock
        )
        await self._serve(key, _Server(ns, ip), sock, opening)

    async def _set_health(self, ns: str, ip: str, port: int, state: _ServiceHealth) -> None:
        await self._http(("health", ns, port), ns, ip, port, self._answer_service, state)

    async def _set_proxy_health(self, ns: str, ip: str, healthy: bool, eligible: bool) -> None:
        key = ("health", ns, healthcheck.PROXIER_HEALTH_PORT)
        old = self._servers.get(key)
        last = old.state.last_updated if old and isinstance(old.state, _ProxyHealth) else None
        state = _ProxyHealth(healthy, eligible, self._now() if healthy else last)
        await self._http(key, ns, ip, healthcheck.PROXIER_HEALTH_PORT, self._answer_proxy, state)

    async def _http(
        self,
        key: tuple[Any, ...],
        ns: str,
        ip: str,
        port: int,
        answer: Answer,
        state: Any,
        record: Callable[[Seen], None] | None = None,
    ) -> None:
        """Swap the answer of the HTTP server under `key`, (re)opening it unless it serves ip."""
        server = self._servers.get(key)
        if server is not None and server.ip == ip:
            server.answer, server.state = answer, state
            return
        self._close(key)
        server = _Server(ns, ip, answer, state)
        sock = self._bound(ns, ip, port, socket.SOCK_STREAM)
        opening = asyncio.get_running_loop().create_server(
            lambda: _HttpConnection(server, record), sock=sock, backlog=BACKLOG
        )
        await self._serve(key, server, sock, opening)

    async def _serve(
        self, key: tuple[Any, ...], server: _Server, sock: socket.socket, opening: Awaitable[Any]
    ) -> None:
        """Register first so a concurrent change sees it; close it if it was dropped meanwhile."""
        self._servers[key] = server
        try:
            handle = await opening
        except BaseException:
            sock.close()
            if self._servers.get(key) is server:
                del self._servers[key]
            raise
        server.handle = handle[0] if isinstance(handle, tuple) else handle
        if self._servers.get(key) is not server:
            server.close()

    @staticmethod
    def _bound(ns: str, ip: str, port: int, kind: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = netns.socket_in(ns, family, kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ip, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _close(self, key: tuple[Any, ...]) -> bool:
        server = self._servers.pop(key, None)
        if server is None:
            return False
        server.close()
        return True

    async def _drop(self, key: tuple[Any, ...]) -> bool:
        found = self._close(key)
        await asyncio.sleep(0)  # let the transports' close callbacks release the sockets
        return found

    async def _drop_ns(self, ns: str) -> int:
        keys = [key for key, server in self._servers.items() if server.ns == ns]
        for key in keys:
            self._close(key)
        await asyncio.sleep(0)
        return len(keys)

    async def _close_all(self) -> None:
        for key in list(self._servers):
            self._close(key)
        for _ in range(3):
            await asyncio.sleep(0)
