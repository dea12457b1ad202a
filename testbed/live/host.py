"""The seam between the lab and this machine's namespaces: make them, remove them.

`Host` is all the Lab asks of the kernel when nodes, pods and clients come and go
(rules go through `Proxy`, servers through the hub). `NetnsHost` is the real one:
netlink sockets, one per namespace, and processes left inside ended before removal.
A test gives the Lab another Host to check its orchestration without root.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from testbed.core.topology import Wiring
from testbed.kernel import netbuild, netns, procs


class Host(Protocol):
    def make(self, wiring: Wiring, on_made: Callable[[str], None]) -> None:
        """Create the wiring's namespaces, links, addresses and routes; `on_made` hears
        each namespace this call created, so a failed build removes only those."""
        ...

    def remove(self, names: Sequence[str]) -> list[str]:
        """End the processes inside these namespaces and remove them; the ones that existed."""
        ...

    def unplug(self, names: Sequence[str]) -> None:
        """Delete these namespaces' links at once, as a CNI plugin's DEL does for a deleted
        pod: its veth and the node's route to it go now, not when the kernel gets round to
        destroying the namespace (later, while anything holds it)."""
        ...

    def close(self) -> None:
        """Let go of sockets into the namespaces (they would keep them alive)."""
        ...


class NetnsHost:
    """Network namespaces through netlink, opened once per namespace."""

    def __init__(self) -> None:
        self._nl: netbuild.Netlink | None = None

    @property
    def netlink(self) -> netbuild.Netlink:
        if self._nl is None:
            self._nl = netbuild.Netlink()
        return self._nl

    def make(self, wiring: Wiring, on_made: Callable[[str], None]) -> None:
        netbuild.apply(wiring, self.netlink, on_made=on_made)

    def unplug(self, names: Sequence[str]) -> None:
        netbuild.unplug(names)

    def remove(self, names: Sequence[str]) -> list[str]:
        if self._nl is not None:
            for name in names:
                self._nl.forget(name)
        procs.stop_inside([netns.path(n) for n in names])
        return netbuild.remove_all(names)

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None
