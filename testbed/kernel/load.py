"""A steady load: new connections (or datagrams) started at a fixed rate, in the background.

One asyncio loop runs on a thread that has entered the source's namespace, so every
socket it makes belongs there (netns.py). Attempts start on an absolute schedule (the
n-th at n / rate seconds), each with its own timeout, whatever the steps on the main
thread do meanwhile; the engine never touches the Lab. TCP: connect, `GET /hostname`
with `Connection: close`, read the answer; UDP: one `hostname` datagram from a new
socket. The pod's own answer names it.

Where each attempt entered the cluster: behind the edge, a capture on the edge's
node-facing ports (they stay while pods come and go) sees the attempt's first packet
leave towards one node, matched by its source port; otherwise the entry is known from
the target (a nodePort's node, the source's own node).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import resource
import socket
import struct
import threading
import time
from array import array
from collections.abc import Sequence

from testbed.core.records import BROKEN, COMPLETED, DROPPED, ENDS, REJECTED
from testbed.kernel import netns
from testbed.kernel.capture import Capture, Point
from testbed.kernel.frames import ACK, SYN
from testbed.kernel.probe import http_complete
from testbed.verdict.timeline import LoadSample

END = {name: i for i, name in enumerate(ENDS)}
# errors a connect or a datagram gets back from an ICMP error or a RST: the kernel said no
REFUSALS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.EACCES,
        errno.EPERM,
    }
)
LINGER_ABORT = struct.pack("ii", 1, 0)  # close with a RST: the source keeps no TIME_WAIT
POD_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
RESOLVE_EVERY = 0.5  # seconds between reading the edge capture
MATCH_SLACK = 0.05  # a packet's kernel time may be this much before our clock's start
FD_MARGIN = 64


def fd_budget() -> int:
    """Attempts that may be open at once: each takes a socket here and, when this
    process serves the pods, one more for the accepted connection."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(1, (soft - len(os.listdir("/proc/self/fd")) - FD_MARGIN) // 2)


class LoadEngine:
    """Start with start(), end with stop() (which returns what it saw); close() on errors."""

    def __init__(
        self,
        ns: str,
        target: tuple[str, int],
        protocol: str,
        rate: float,
        timeout: float,
        limit: int,
        source_ip: str,
        nodes: Sequence[str],
        edge_points: Sequence[Point] = (),
        fixed_entry: str | None = None,
    ) -> None:
        self.ns, self.target, self.protocol = ns, target, protocol
        self.rate, self.timeout, self.limit = rate, timeout, limit
        self.source_ip = source_ip
        self.nodes = list(nodes)
        self.edge_points = list(edge_points)
        self.fixed_entry = self.nodes.index(fixed_entry) if fixed_entry in self.nodes else -1
        # per attempt, by index (arrays: a few bytes each)
        self.starts = array("d")
        self.durations = array("d")
        self.ends = array("b")
        self.pod_ix = array("h")
        self.entries = array("h")
        self.pods: list[str] = []
        self._pod_index: dict[str, int] = {}
        self._ports: dict[int, list[tuple[float, int]]] = {}  # source port -> (wall start, i)
        self.skipped = 0
        self.capped = False
        self.late_sum = 0.0
        self.late_max = 0.0
        self.seconds = 0.0
        self.wall0 = 0.0
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._capture: Capture | None = None
        self._error: BaseException | None = None
        self._budget = fd_budget()
        host = f"{target[0]}:{target[1]}"
        self._request = (
            f"GET /hostname HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )

    # -- the main thread's side -------------------------------------------------------

    def start(self) -> LoadEngine:
        try:
            if self.edge_points:
                self._capture = Capture(list(self.edge_points)).start()
            self._thread = threading.Thread(target=self._body, name=f"load-{self.ns}", daemon=True)
            self._thread.start()
            if not self._ready.wait(10):
                raise RuntimeError("the load's event loop did not start within 10 s")
            if self._error is not None:
                raise self._error
        except BaseException:
            self.close()
            raise
        return self

    def stop(self) -> LoadSample:
        """Start no more attempts, wait for those under way (each ends by its timeout)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 10)
            if self._thread.is_alive():
                self.close()
                raise RuntimeError("the load's attempts did not end within their timeout")
        if self._error is not None:
            self.close()
            raise self._error
        self._resolve()
        self.close()
        return self.sample()

    def close(self) -> None:
        """Let go of everything (idempotent): on errors, and after stop()."""
        self._stopping.set()
        if self._capture is not None:
            self._capture.stop()
            self._capture = None

    def sample(self) -> LoadSample:
        started = len(self.starts)
        rows = [
            (
                round(self.starts[i], 4),
                round(self.durations[i], 4),
                self.ends[i],
                self.pod_ix[i],
                self.entries[i],
            )
            for i in range(started)
        ]
        return LoadSample(
            attempts=rows,
            pods=tuple(self.pods),
            nodes=tuple(self.nodes),
            target=f"{self.target[0]}:{self.target[1]}",
            seconds=self.seconds,
            skipped=self.skipped,
            capped=self.capped,
            limit=self.limit,
            late_mean_ms=1000 * self.late_sum / started if started else 0.0,
            late_max_ms=1000 * self.late_max,
        )

    # -- the engine's thread ------------------------------------------------------------

    def _body(self) -> None:
        try:
            with netns.entered(self.ns):
                asyncio.run(self._main())
        except BaseException as exc:  # handed to the main thread by stop()
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        self.wall0 = time.time()
        self._ready.set()
        interval = 1.0 / self.rate
        running: set[asyncio.Task] = set()
        resolver = loop.create_task(self._resolve_loop()) if self._capture else None
        i = 0
        while not self._stopping.is_set():
            due = i * interval
            now = loop.time() - t0
            if due > now:
                await asyncio.sleep(min(due - now, 0.2))
                continue
            if len(self.starts) >= self.limit:
                self.capped = True
                break
            i += 1
            if len(running) >= self._budget:
                self.skipped += 1
                continue
            late = now - due
            self.late_sum += late
            self.late_max = max(self.late_max, late)
            task = loop.create_task(self._attempt(len(self.starts), now, t0))
            self.starts.append(now)
            self.durations.append(0.0)
            self.ends.append(END[DROPPED])
            self.pod_ix.append(-1)
            self.entries.append(self.fixed_entry)
            running.add(task)
            task.add_done_callback(running.discard)
        self.seconds = max(0.0, (i - 1) * interval)
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        if resolver is not None:
            resolver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resolver

    async def _attempt(self, i: int, start: float, t0: float) -> None:
        loop = asyncio.get_running_loop()
        kind = socket.SOCK_DGRAM if self.protocol == "UDP" else socket.SOCK_STREAM
        sock = socket.socket(socket.AF_INET, kind)
        state = {"end": DROPPED, "pod": None}
        try:
            sock.setblocking(False)
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
            async with asyncio.timeout(self.timeout):
                if kind == socket.SOCK_STREAM:
                    await self._tcp(sock, i, state)
                else:
                    await self._udp(sock, i, state)
        except TimeoutError:
            pass  # DROPPED before an answer, BROKEN once connected: `state` says which
        except OSError as exc:
            if state["end"] == BROKEN:  # connected, then reset or failed: broken
                pass
            elif exc.errno == errno.ETIMEDOUT:  # every SYN went unanswered
                state["end"] = DROPPED
            else:
                state["end"] = REJECTED if exc.errno in REFUSALS else BROKEN
        finally:
            sock.close()
            self.durations[i] = loop.time() - t0 - start
            self.ends[i] = END[state["end"]]
            if state["pod"] is not None:
                self.pod_ix[i] = self._pod(state["pod"])

    def _note_port(self, sock: socket.socket, i: int) -> None:
        if self._capture is not None:
            port = sock.getsockname()[1]
            self._ports.setdefault(port, []).append((self.wall0 + self.starts[i], i))

    async def _tcp(self, sock: socket.socket, i: int, state: dict) -> None:
        loop = asyncio.get_running_loop()
        code = sock.connect_ex(self.target)
        self._note_port(sock, i)
        if code == errno.EINPROGRESS:
            done = loop.create_future()
            loop.add_writer(sock.fileno(), lambda: done.done() or done.set_result(None))
            try:
                await done
            finally:
                loop.remove_writer(sock.fileno())
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
        state["end"] = BROKEN  # connected: from here on a reset or silence is broken
        await loop.sock_sendall(sock, self._request)
        data = b""
        while not http_complete(data):
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
        name = body.decode(errors="replace").strip()
        if status == b"200" and POD_NAME.fullmatch(name):
            state["end"], state["pod"] = COMPLETED, name

    async def _udp(self, sock: socket.socket, i: int, state: dict) -> None:
        loop = asyncio.get_running_loop()
        sock.connect(self.target)  # connected: ICMP errors reach this socket
        self._note_port(sock, i)
        sock.send(b"hostname")
        data = await loop.sock_recv(sock, 2048)
        name = data.decode(errors="replace").strip()
        state["end"] = BROKEN
        if POD_NAME.fullmatch(name):
            state["end"], state["pod"] = COMPLETED, name

    def _pod(self, name: str) -> int:
        if name not in self._pod_index:
            self._pod_index[name] = len(self.pods)
            self.pods.append(name)
        return self._pod_index[name]

    async def _resolve_loop(self) -> None:
        while True:
            await asyncio.sleep(RESOLVE_EVERY)
            self._resolve(flush=False)  # a flush would stall the schedule; stop() flushes

    def _resolve(self, flush: bool = True) -> None:
        """Match the first packet each attempt sent out of the edge to its node."""
        if self._capture is None:
            return
        if flush:
            self._capture.flush(timeout=1.0)
        ip, port = self.target
        proto = 17 if self.protocol == "UDP" else 6
        for f in self._capture.take():
            if not f.outgoing or f.proto != proto or f.dst != ip or f.dport != port:
                continue
            if f.src != self.source_ip or (proto == 6 and (f.flags & (SYN | ACK)) != SYN):
                continue
            waiting = self._ports.get(f.sport)
            if not waiting:
                continue
            best = None
            for k, (wall, _i) in enumerate(waiting):
                if wall <= f.at + MATCH_SLACK:
                    best = k
            if best is None:
                continue
            _wall, i = waiting.pop(best)
            if not waiting:
                del self._ports[f.sport]
            if f.point in self.nodes:
                self.entries[i] = self.nodes.index(f.point)
        horizon = time.time() - self.timeout - 2  # their first packets are long gone
        for sport in [p for p, w in self._ports.items() if w[-1][0] < horizon]:
            del self._ports[sport]
