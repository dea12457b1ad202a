"""pytest plugin: build labs in tests and assert on verdicts in three lines.

    @pytest.mark.lab
    def test_local_keeps_client_ip(lab):
        built = lab("local-preserves-client-ip")
        assert all(v.passed for v in built.verdicts())

The `lab` marker skips the test with a reason when not root; the `lab` fixture
is a factory (scenario file, built-in name, or inline documents) whose labs are
torn down after the test, whatever happens.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SKIP_REASON = "needs root (CAP_NET_ADMIN) to build namespaces"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kube-proxy",
        default=None,
        metavar="builtin|upstream[@VERSION]",
        help="testbed: the kube-proxy of every lab the `lab` fixture builds (default: each"
        " scenario's own, builtin unless it says upstream)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: builds real namespaces; needs root")
    _stop_on_sigterm(config)


def _stop_on_sigterm(config: pytest.Config) -> None:
    """SIGTERM stops the session as Ctrl-C does, so every lab fixture is torn down.

    By default SIGTERM kills Python on the spot: a cancelled CI job would leave its labs
    behind. Only the default handler is replaced (a handler someone set stays), and the
    old one comes back when the session ends.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def stop(_signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut teardown
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, stop)
    config.add_cleanup(lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Factory: lab(scenario, proxy_mode=None, kube_proxy=None) -> a Lab that is up; torn
    down after the test. `kube_proxy` (builtin | upstream[@VERSION]) defaults to the
    --kube-proxy option."""
    if os.geteuid() != 0:
        pytest.skip(SKIP_REASON)
    from testbed.builders import load  # here: every pytest run loads the plugin, few build labs

    built: list[Any] = []

    default = request.config.getoption("--kube-proxy", default=None)

    def make(
        source: str | Path | list[dict[str, Any]],
        proxy_mode: str | None = None,
        kube_proxy: str | None = None,
    ) -> Any:
        instance = load(source, proxy_mode, kube_proxy or default)
        built.append(instance)
        return instance.up()

    try:
        yield make
    finally:
        for instance in reversed(built):
            instance.down()
