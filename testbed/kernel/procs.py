"""Processes known by pid *and* start time, so a reused pid is never mistaken for ours.

A pid alone names whoever holds that number now; with the start time (field 22 of
/proc/PID/stat, clock ticks since boot) it names one process for good. Signals go
through a pidfd opened before the start time is checked, so the process checked is
the process signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int  # clock ticks since boot
    name: str = ""


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state letter, start time, command name) of a live pid, or None."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except (OSError, ValueError):
        return None
    name = text[text.find("(") + 1 : text.rfind(")")]
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19]), name
    except (IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    found = _stat(pid)
    return None if found is None else found[1]


def me() -> Proc:
    pid = os.getpid()
    return Proc(pid, start_time(pid) or 0)


def alive(pid: int, start: int) -> bool:
    """True while this very process runs (not a zombie, not a newer holder of the pid)."""
    if pid <= 0 or start <= 0:
        return False
    found = _stat(pid)
    return found is not None and found[1] == start and found[0] not in ("Z", "X")


def send(pid: int, start: int, signum: int) -> bool:
    """Signal this very process; False when it is gone (or the pid names another)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if not alive(pid, start):
            return False
        signal.pidfd_send_signal(fd, signum)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def wait_gone(pid: int, start: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid, start):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def stop(pid: int, start: int, timeout: float = 2.0) -> str:
    """SIGTERM (and SIGCONT, for a stopped one), then SIGKILL: 'stopped', 'killed' or 'gone'."""
    if not send(pid, start, signal.SIGTERM):
        return "gone"
    send(pid, start, signal.SIGCONT)
    if wait_gone(pid, start, timeout):
        return "stopped"
    send(pid, start, signal.SIGKILL)
    wait_gone(pid, start, 2.0)
    return "killed"


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def inside(ns_paths: list[str]) -> list[Proc]:
    """Every process (but this one) whose network namespace is one of these."""
    wanted = {i for i in map(_ns_id, ns_paths) if i is not None}
    if not wanted:
        return []
    found = []
    own = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == own:
            continue
        if _ns_id(f"/proc/{entry}/ns/net") in wanted:
            stat = _stat(int(entry))
            if stat is not None and stat[0] not in ("Z", "X"):
                found.append(Proc(int(entry), stat[1], stat[2]))
    return found


def stop_inside(ns_paths: list[str], timeout: float = 2.0) -> list[Proc]:
    """End every process living in these namespaces, by pid and start time; the ones ended."""
    ended = []
    for _ in range(3):  # a dying parent may fork once more; look again
        found = inside(ns_paths)
        if not found:
            break
        for proc in found:
            with contextlib.suppress(OSError):
                send(proc.pid, proc.start, signal.SIGTERM)
                send(proc.pid, proc.start, signal.SIGCONT)
        deadline = time.monotonic() + timeout
        for proc in found:
            if not wait_gone(proc.pid, proc.start, max(0.0, deadline - time.monotonic())):
                send(proc.pid, proc.start, signal.SIGKILL)
                wait_gone(proc.pid, proc.start, 2.0)
            if proc not in ended:
                ended.append(proc)
    return ended
