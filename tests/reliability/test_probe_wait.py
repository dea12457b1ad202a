"""A probe's connection that is up gets time for its answer: slow is not broken.

On a busy machine a pod's answer can come later than the probe's 1 s deadline for a
handshake; a real client would still have read it. These run the probe's own driver
against a server in a namespace of the suite's prefix that answers late or never.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

from testbed.core.targets import Aim
from testbed.kernel import netns, probe
from testbed.kernel.explain import Try
from tests.support.private import Private

pytestmark = [pytest.mark.reliability, pytest.mark.lab]

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n1234"


def _serve(ns: str, delay: float | None) -> tuple[socket.socket, int]:
    """A listener in `ns` that answers each connection after `delay` s (None: never)."""

    def bind() -> socket.socket:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        return srv

    srv = netns.run_in(ns, bind)

    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            if delay is not None:
                threading.Timer(delay, lambda c=conn: (c.sendall(ANSWER), c.close())).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv, srv.getsockname()[1]


def _attempt(ns: str, port: int) -> Try:
    def body() -> Try:
        tries = probe._open_tcp(Aim("127.0.0.1", port, "TCP"), 1)
        probe._drive(tries, "TCP", probe.DEFAULT_TIMEOUT, "test")
        return tries[0]

    return netns.run_in(ns, body)


@pytest.fixture
def ns(private: Private):
    name = f"{private.prefix}wait"
    netns.create(name)
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    yield name
    netns.remove(name)


def test_an_answer_after_the_deadline_on_an_open_connection_is_read(ns: str):
    srv, port = _serve(ns, delay=probe.DEFAULT_TIMEOUT + 0.5)
    try:
        t = _attempt(ns, port)
    finally:
        srv.close()
    assert t.connected_at is not None and t.reply == b"1234", t


def test_a_connection_that_never_answers_gives_up_after_the_answer_wait(ns: str):
    srv, port = _serve(ns, delay=None)
    started = time.monotonic()
    try:
        t = _attempt(ns, port)
    finally:
        srv.close()
    took = time.monotonic() - started
    assert t.connected_at is not None and t.reply == b"" and not t.done
    assert took >= probe.DEFAULT_TIMEOUT + probe.ANSWER_WAIT - 0.1, took
