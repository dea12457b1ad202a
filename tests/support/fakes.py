"""A fake kernel for the Lab's orchestration: it records what would be made and loaded.

Given to a Lab through its seams (`lab.host`, `RenderedProxy(run=...)`, `lab.hub`), it
lets a test watch sync, change and health without root: which namespaces were made and
removed, which loader ran in which namespace with what text, what each health check
would answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from testbed.core.errors import CommandFailed
from testbed.core.topology import Wiring


@dataclass(frozen=True)
class Run:
    """One tool run inside a namespace."""

    ns: str
    argv: tuple[str, ...]
    text: str | None

    @property
    def delta(self) -> bool:
        """An iptables delta keeps what the node holds (--noflush); an nft one adds no table."""
        if self.argv[0] == "iptables-restore":
            return "--noflush" in self.argv
        return self.argv[0] == "nft" and "add table" not in (self.text or "")


@dataclass
class FakeKernel:
    """Host (namespaces) and runner (loaders) at once; `fail` makes matching runs fail."""

    runs: list[Run] = field(default_factory=list)
    made: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unplugged: list[str] = field(default_factory=list)
    fail: Callable[[Run], bool] = lambda run: False

    # -- the runner (kernel/shell.py's run_in) --
    def run(self, ns: str, argv: Sequence[str], text: str | None = None) -> str:
        done = Run(ns, tuple(argv), text)
        if self.fail(done):
            raise CommandFailed(ns, argv, "loading failed (made to fail by the test)")
        self.runs.append(done)
        return ""

    # -- the Host (live/host.py) --
    def make(self, wiring: Wiring, on_made: Callable[[str], None]) -> None:
        for short in wiring.namespaces:
            self.made.append(wiring.ns(short))
            on_made(wiring.ns(short))

    def unplug(self, names: Sequence[str]) -> None:
        self.unplugged += names

    def remove(self, names: Sequence[str]) -> list[str]:
        self.removed += names
        return [n for n in names if n in self.made]

    def close(self) -> None:
        pass

    def loads_since(self, start: int) -> dict[str, list[Run]]:
        """Loader runs after the first `start`, by namespace."""
        found: dict[str, list[Run]] = {}
        for run in self.runs[start:]:
            found.setdefault(run.ns, []).append(run)
        return found


@dataclass
class FakeHub:
    """The server hub's side the Lab and the proxy drive: echo servers and health answers."""

    echo: dict[str, set[tuple[str, int, str]]] = field(default_factory=dict)  # ns -> servers
    health: dict[tuple[str, int], tuple[str, int, bool]] = field(default_factory=dict)
    proxy_healthy: dict[str, bool] = field(default_factory=dict)  # ns -> /healthz is 200
    emptied: list[str] = field(default_factory=list)  # namespaces whose servers were closed

    def add_echo(self, ns: str, pod_name: str, ip: str, port: int, protocol: str) -> None:
        self.echo.setdefault(ns, set()).add((ip, port, protocol))

    def remove(self, ns: str) -> int:
        self.emptied.append(ns)
        return len(self.echo.pop(ns, ()))

    def set_health(
        self, ns, node_ip, port, namespace, name, count, proxy_healthy=True, **_ignored
    ) -> None:
        self.health[(ns, port)] = (f"{namespace}/{name}", count, proxy_healthy)

    def drop_health(self, ns: str, port: int) -> bool:
        return self.health.pop((ns, port), None) is not None

    def set_proxy_health(self, ns, node_ip, healthy, node_eligible=True) -> None:
        self.proxy_healthy[ns] = healthy and node_eligible  # what /healthz answers

    def answer(self, ns: str, port: int) -> int:
        """The status a health check of `port` in `ns` would get now (404: nobody serves)."""
        if (ns, port) not in self.health:
            return 404
        _, count, healthy = self.health[(ns, port)]
        return 200 if healthy and count > 0 else 503

    def stop(self) -> None:
        pass
