"""Network namespaces from one process, without a fork per namespace.

pyroute2's `netns.create` and `IPRoute(netns=...)` fork a helper per call
(tens of milliseconds each). The kernel only needs the calling *thread* to
unshare or setns, so we do that here and switch the thread back at once.
Sockets keep the namespace they were created in, which is how one event loop
serves every pod and one netlink socket drives each namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_dir_lock = threading.Lock()
_dir_ready = False


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def _ensure_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does."""
    global _dir_ready
    with _dir_lock:
        if _dir_ready:
            return
        os.makedirs(NETNS_DIR, exist_ok=True)
        if _libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None) != 0:
            _check(
                _libc.mount(
                    NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", MS_BIND | MS_REC, None
                ),
                "bind-mount " + NETNS_DIR,
            )
            _check(
                _libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None),
                "make-shared " + NETNS_DIR,
            )
        _dir_ready = True


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def create(name: str) -> None:
    """Create a named namespace: unshare this thread, bind it, switch back."""
    _ensure_dir()
    target = path(name)
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    os.close(fd)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        try:
            _check(
                _libc.mount(b"/proc/thread-self/ns/net", target.encode(), b"none", MS_BIND, None),
                "bind " + target,
            )
        finally:
            _setns(home)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise
    finally:
        os.close(home)


def remove(name: str) -> bool:
    """Unmount and unlink a namespace; False when it was not there."""
    target = path(name)
    _libc.umount2(target.encode(), MNT_DETACH)
    try:
        os.unlink(target)
    except FileNotFoundError:
        return False
    return True


def listed() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with this thread inside namespace `name`."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        fd = os.open(path(name), os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def run_in(name: str, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` on a short-lived thread inside namespace `name`; this thread never leaves
    its own. Why: /proc/PID/ns/net shows the main thread's namespace, and `testbed down`
    ends every process it finds inside a lab; a command that only sends into a lab (a
    probe) must not look like one of the lab's own processes."""
    out: list[T] = []
    failed: list[BaseException] = []

    def body() -> None:
        try:
            with entered(name):
                out.append(fn(*args))
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=body, name=f"in-{name}", daemon=True)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return out[0]


def socket_in(
    name: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    """A socket that lives in namespace `name` whatever thread uses it later."""
    with entered(name):
        return socket.socket(family, kind, proto)
