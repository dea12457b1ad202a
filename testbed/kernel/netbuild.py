"""Make a `Wiring` real with netlink, one socket per namespace, no forks.

Sockets are opened with the thread switched into each namespace (see netns.py)
and reused for every link, address and route there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable

from pyroute2 import IPRoute

from testbed.core.topology import EDGE, Wiring
from testbed.kernel import netns, signals
from testbed.kernel.checkpoint import reached
from testbed.kernel.shell import run_in


class Netlink:
    """One IPRoute socket per namespace, opened on first use."""

    def __init__(self) -> None:
        self._socks: dict[str, IPRoute] = {}
        self._indexes: dict[tuple[str, str], int] = {}

    def index(self, ns: str, ifname: str) -> int:
        """Interface index, looked up once: lookups were most of the netlink traffic."""
        key = (ns, ifname)
        found = self._indexes.get(key)
        if found is None:
            found = self._indexes[key] = index(self(ns), ifname)
        return found

    def __call__(self, ns: str) -> IPRoute:
        sock = self._socks.get(ns)
        if sock is None:
            with netns.entered(ns):
                sock = IPRoute()
            self._socks[ns] = sock
        return sock

    def forget(self, ns: str) -> None:
        """Close the socket of a namespace that is going away (it would keep it alive)."""
        sock = self._socks.pop(ns, None)
        self._indexes = {k: v for k, v in self._indexes.items() if k[0] != ns}
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.close()

    def close(self) -> None:
        for sock in self._socks.values():
            with contextlib.suppress(Exception):
                sock.close()
        self._socks.clear()
        self._indexes.clear()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no interface {ifname}")
    return found[0]


def write_sysctl(ns: str, key: str, value: str) -> None:
    """/proc/sys/net follows the writing thread's namespace."""
    with netns.entered(ns), open(f"/proc/sys/{key}", "w") as handle:
        handle.write(value)


def read_sysctl(ns: str, key: str) -> str:
    with netns.entered(ns), open(f"/proc/sys/{key}") as handle:
        return handle.read().strip()


def apply(
    wiring: Wiring,
    nl: Netlink,
    on_namespace: Callable[[str], None] | None = None,
    on_made: Callable[[str], None] | None = None,
) -> None:
    """Build everything; `on_namespace` hears each namespace before it exists, `on_made`
    after this call created it (so a failed build removes only what it made)."""
    full = wiring.ns
    for count, short in enumerate(wiring.namespaces, 1):
        if on_namespace:
            on_namespace(full(short))
        with signals.shielded():  # made and heard of together, so teardown finds it
            netns.create(full(short))
            if on_made:
                on_made(full(short))
        ipr = nl(full(short))
        ipr.link("set", index=nl.index(full(short), "lo"), state="up")
        reached(f"namespace-{count}")
    reached("namespaces")

    for ns, bridge, cidr in wiring.bridges:
        ipr = nl(full(ns))
        ipr.link("add", ifname=bridge, kind="bridge")
        idx = nl.index(full(ns), bridge)
        address, prefix = cidr.split("/")
        ipr.addr("add", index=idx, address=address, prefixlen=int(prefix))
        ipr.link("set", index=idx, state="up")
    reached("bridges")

    for count, veth in enumerate(wiring.veths, 1):
        ipr = nl(full(veth.ns))
        fd = os.open(netns.path(full(veth.peer_ns)), os.O_RDONLY)
        try:
            ipr.link(
                "add",
                ifname=veth.name,
                kind="veth",
                peer={"ifname": veth.peer_name, "net_ns_fd": fd},
            )
        finally:
            os.close(fd)
        idx = nl.index(full(veth.ns), veth.name)
        if veth.master:
            ipr.link("set", index=idx, master=nl.index(full(veth.ns), veth.master))
        ipr.link("set", index=idx, state="up")
        peer = nl(full(veth.peer_ns))
        peer.link("set", index=nl.index(full(veth.peer_ns), veth.peer_name), state="up")
        reached(f"veth-{count}")
    reached("veths")

    for addr in wiring.addrs:
        ipr = nl(full(addr.ns))
        address, prefix = addr.cidr.split("/")
        ipr.addr(
            "add", index=nl.index(full(addr.ns), addr.dev), address=address, prefixlen=int(prefix)
        )
    reached("addresses")

    for sysctl in wiring.sysctls:
        write_sysctl(full(sysctl.ns), sysctl.key, sysctl.value)
    reached("sysctls")

    set_routes(wiring, nl, wiring.routes)
    reached("routes")

    if wiring.edge_rules:
        run_in(full(EDGE), ["nft", "-f", "-"], wiring.edge_rules)


def set_routes(wiring: Wiring, nl: Netlink, routes: Iterable) -> None:
    """Add or replace routes (replace keeps ECMP updates atomic)."""
    for route in routes:
        ipr = nl(wiring.ns(route.ns))
        dst = "0.0.0.0/0" if route.dst == "default" else route.dst
        if route.dev:
            ipr.route("replace", dst=dst, oif=nl.index(wiring.ns(route.ns), route.dev), scope=253)
        elif len(route.via) == 1:
            ipr.route("replace", dst=dst, gateway=route.via[0])
        else:
            ipr.route("replace", dst=dst, multipath=[{"gateway": gw} for gw in route.via])


def delete_route(wiring: Wiring, nl: Netlink, ns: str, dst: str) -> None:
    with contextlib.suppress(Exception):
        nl(wiring.ns(ns)).route("del", dst=dst)


def unplug(names: Iterable[str]) -> None:
    """Delete every veth of these namespaces (each takes its peer, and the peer's routes)."""
    for name in names:
        if not os.path.lexists(netns.path(name)):
            continue
        with netns.entered(name):
            ipr = IPRoute()
        try:
            for link in ipr.get_links():
                if (
                    link.get_attr("IFLA_LINKINFO")
                    and link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth"
                ):
                    with contextlib.suppress(Exception):  # gone with its peer already
                        ipr.link("del", index=link["index"])
        finally:
            ipr.close()


def remove_all(names: Iterable[str]) -> list[str]:
    """Remove namespaces; returns the ones that existed."""
    return [name for name in names if netns.remove(name)]
