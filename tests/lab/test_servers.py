"""The server hub against real sockets in real namespaces, talking over a real veth."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from testbed.core.topology import NS_PREFIX
from testbed.kernel import netns
from testbed.kernel.servers import Seen, ServerHub

pytestmark = pytest.mark.lab

PREFIX = f"{NS_PREFIX}srv"  # the suite's own prefix: a concurrent suite never sees these
SERVER_IP, CLIENT_IP = "10.99.0.1", "10.99.0.2"


def _iproute(ns: str) -> IPRoute:
    with netns.entered(ns):
        return IPRoute()


def _up(ipr: IPRoute, ifname: str, address: str | None = None) -> None:
    index = ipr.link_lookup(ifname=ifname)[0]
    if address:
        ipr.addr("add", index=index, address=address, prefixlen=24)
    ipr.link("set", index=index, state="up")


@contextlib.contextmanager
def _namespaces(names: list[str]) -> Iterator[list[str]]:
    made: list[str] = []
    try:
        for name in names:
            netns.create(name)
            made.append(name)
        yield made
    finally:
        for name in made:
            netns.remove(name)


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    """Namespace A (server, 10.99.0.1) and B (client, 10.99.0.2) joined by a veth pair."""
    a, b = f"{PREFIX}-a", f"{PREFIX}-b"
    with _namespaces([a, b]):
        ipa, ipb = _iproute(a), _iproute(b)
        try:
            fd = os.open(netns.path(b), os.O_RDONLY)
            try:
                ipa.link(
                    "add", ifname="eth0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd}
                )
            finally:
                os.close(fd)
            for ipr, address in ((ipa, SERVER_IP), (ipb, CLIENT_IP)):
                _up(ipr, "lo")
                _up(ipr, "eth0", address)
            yield a, b
        finally:
            ipa.close()
            ipb.close()


@pytest.fixture
def hub() -> Iterator[ServerHub]:
    with ServerHub() as running:
        yield running


def http_get(ns: str, ip: str, port: int, path: str) -> tuple[int, dict[str, str], str, int]:
    """(status, headers, body, client port) of one GET made from inside `ns`."""
    with netns.socket_in(ns) as sock:
        sock.settimeout(3)
        sock.connect((ip, port))
        client_port = sock.getsockname()[1]
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {ip}\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert int(headers["Content-Length"]) == len(body)
    return int(status_line.split(" ")[1]), headers, body.decode(), client_port


def udp_ask(ns: str, ip: str, port: int, text: str) -> tuple[str, int]:
    with netns.socket_in(ns, kind=socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.connect((ip, port))
        sock.send(text.encode())
        return sock.recv(2048).decode(), sock.getsockname()[1]


def refused_tcp(ns: str, ip: str, port: int) -> bool:
    with netns.socket_in(ns) as sock:
        sock.settimeout(3)
        try:
            sock.connect((ip, port))
        except ConnectionRefusedError:
            return True
    return False


def refused_udp(ns: str, ip: str, port: int) -> bool:
    """A closed UDP port answers ICMP port unreachable, which a connected socket reports."""
    try:
        udp_ask(ns, ip, port, "hostname")
    except ConnectionRefusedError:
        return True
    return False


def test_echo_and_health_servers_across_a_veth(pair: tuple[str, str], hub: ServerHub) -> None:
    a, b = pair
    hub.add_echo(a, "web-0", SERVER_IP, 8080, "TCP")
    hub.add_echo(a, "web-0", SERVER_IP, 8080, "UDP")
    hub.set_health(a, SERVER_IP, 30500, "default", "web", 1)
    hub.set_proxy_health(a, "0.0.0.0", True)

    status, headers, body, _ = http_get(b, SERVER_IP, 8080, "/hostname")
    assert (status, body) == (200, "web-0")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    status, _, body, tcp_port = http_get(b, SERVER_IP, 8080, "/clientip")
    assert (status, body) == (200, f"{CLIENT_IP}:{tcp_port}")
    assert http_get(b, SERVER_IP, 8080, "/echo?msg=hello")[2] == "hello"

    assert udp_ask(b, SERVER_IP, 8080, "hostname")[0] == "web-0"
    answer, udp_port = udp_ask(b, SERVER_IP, 8080, "clientip")
    assert answer == f"{CLIENT_IP}:{udp_port}"
    assert udp_ask(b, SERVER_IP, 8080, "echo Hi")[0] == "hi"

    status, headers, body, _ = http_get(b, SERVER_IP, 30500, "/")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert json.loads(body) == {
        "service": {"namespace": "default", "name": "web"},
        "localEndpoints": 1,
        "serviceProxyHealthy": True,
    }
    hub.set_health(a, SERVER_IP, 30500, "default", "web", 0)
    status, _, body, _ = http_get(b, SERVER_IP, 30500, "/")
    assert status == 503
    assert json.loads(body)["localEndpoints"] == 0

    status, _, body, _ = http_get(b, SERVER_IP, 10256, "/healthz")
    assert status == 200
    assert set(json.loads(body)) == {"lastUpdated", "currentTime", "nodeEligible"}
    hub.set_proxy_health(a, "0.0.0.0", False)
    assert http_get(b, SERVER_IP, 10256, "/healthz")[0] == 503
    assert http_get(b, SERVER_IP, 10256, "/livez")[0] == 503

    seen = hub.seen("web-0")
    assert all(s.peer_ip == CLIENT_IP and s.local_port == 8080 for s in seen)
    assert all(s.local_ip == SERVER_IP for s in seen)
    assert [s.protocol for s in seen] == ["TCP"] * 3 + ["UDP"] * 3
    assert tcp_port in {s.peer_port for s in seen if s.protocol == "TCP"}
    assert udp_port in {s.peer_port for s in seen if s.protocol == "UDP"}
    assert hub.seen("nobody") == []
    hub.clear_seen()
    assert hub.seen("web-0") == []

    hub.stop()
    assert not hub.running
    for port in (8080, 30500, 10256):
        assert refused_tcp(b, SERVER_IP, port), port
    assert refused_udp(b, SERVER_IP, 8080)


def test_removing_servers_closes_only_those(pair: tuple[str, str], hub: ServerHub) -> None:
    a, b = pair
    hub.add_echo(a, "web-0", SERVER_IP, 8080, "TCP")
    hub.add_echo(a, "web-0", SERVER_IP, 8080, "UDP")
    hub.add_echo(a, "web-0", SERVER_IP, 9090, "TCP")
    hub.set_health(a, SERVER_IP, 30500, "default", "web", 1)

    assert hub.remove_server(a, SERVER_IP, 8080, "udp")
    assert not hub.remove_server(a, SERVER_IP, 8080, "udp")
    assert refused_udp(b, SERVER_IP, 8080)
    assert http_get(b, SERVER_IP, 8080, "/hostname")[2] == "web-0"

    assert hub.drop_health(a, 30500)
    assert not hub.drop_health(a, 30500)
    assert refused_tcp(b, SERVER_IP, 30500)

    hub.add_echo(a, "web-1", SERVER_IP, 8080, "TCP")  # same address, new pod: replaced
    assert http_get(b, SERVER_IP, 8080, "/hostname")[2] == "web-1"

    assert hub.remove(a) == 2
    assert refused_tcp(b, SERVER_IP, 8080)
    assert refused_tcp(b, SERVER_IP, 9090)
    assert hub.remove(a) == 0


def test_fifty_pods_in_fifty_namespaces_share_one_thread() -> None:
    names = [f"{PREFIX}-p{i:02d}" for i in range(50)]
    with _namespaces(names):
        for name in names:
            ipr = _iproute(name)
            try:
                _up(ipr, "lo")
            finally:
                ipr.close()
        threads_before = threading.active_count()
        with ServerHub() as hub:
            for i, name in enumerate(names):
                hub.add_echo(name, f"pod-{i:02d}", "127.0.0.1", 8080, "TCP")
            assert threading.active_count() - threads_before <= 2
            for i, name in enumerate(names):
                status, _, body, port = http_get(name, "127.0.0.1", 8080, "/hostname")
                assert (status, body) == (200, f"pod-{i:02d}")
                (seen,) = hub.seen(f"pod-{i:02d}")
                assert seen == Seen("127.0.0.1", port, "127.0.0.1", 8080, "TCP", seen.at)
            assert threading.active_count() - threads_before <= 2
        assert threading.active_count() == threads_before
