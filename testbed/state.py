"""Lab state files under /run/testbed: what a lab made, so anyone can undo it.

A state file is written before the first namespace exists and lists every
namespace the lab will make, so a run killed half-way still leaves a complete
record. `clean` also sweeps namespaces by their prefix (`tb-`, or
TESTBED_NS_PREFIX), so a lab whose state file is gone is still found.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from testbed import netns
from testbed.topology import NS_PREFIX

STATE_DIR = os.environ.get("TESTBED_STATE_DIR", "/run/testbed")


@dataclass
class LabState:
    id: str
    name: str
    file: str
    proxy_mode: str
    namespaces: list[str]
    pid: int = 0  # the process that owns the lab (serves its pods); 0 = none
    status: str = "building"  # building | up
    created: float = field(default_factory=time.time)


def state_path(lab_id: str) -> str:
    return os.path.join(STATE_DIR, f"{lab_id}.json")


def save(state: LabState) -> None:
    os.makedirs(STATE_DIR, exist_ok=True)
    tmp = state_path(state.id) + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(asdict(state), handle, indent=1)
    os.replace(tmp, state_path(state.id))


def load(lab_id: str) -> LabState:
    with open(state_path(lab_id)) as handle:
        return LabState(**json.load(handle))


def forget(lab_id: str) -> bool:
    try:
        os.unlink(state_path(lab_id))
    except FileNotFoundError:
        return False
    return True


def all_states() -> list[LabState]:
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.listdir(STATE_DIR)):
            if entry.endswith(".json"):
                with contextlib.suppress(OSError, ValueError, TypeError):
                    found.append(load(entry[: -len(".json")]))
    return found


def owner_alive(state: LabState) -> bool:
    """True only if the recorded pid is still the testbed process that owns this lab."""
    if state.pid <= 0:
        return False
    try:
        with open(f"/proc/{state.pid}/cmdline", "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ")
    except OSError:
        return False
    return b"testbed" in cmdline


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Serialise clean-ups so two `testbed clean` never fight over one lab."""
    os.makedirs(STATE_DIR, exist_ok=True)
    fd = os.open(STATE_DIR, os.O_RDONLY | os.O_DIRECTORY)  # lock the directory: no lock file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def stop_owner(state: LabState, timeout: float = 5.0) -> bool:
    """Ask a lab's owner to tear down (SIGTERM by pid), waiting for it to go."""
    if not owner_alive(state) or state.pid == os.getpid():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and owner_alive(state):
        time.sleep(0.05)
    return True


def leftovers() -> list[str]:
    return [name for name in netns.listed() if name.startswith(NS_PREFIX)]


def clean(everything: bool = False) -> tuple[list[str], list[str]]:
    """Remove what labs left behind: (removed items, labs kept because they still run).

    A lab whose owner process is alive is not a leftover: it is kept, and so are its
    namespaces, unless `everything` is set (then its owner is stopped first).
    """
    removed: list[str] = []
    kept: list[str] = []
    protected: set[str] = set()
    with locked():
        for state in all_states():
            if owner_alive(state) and not everything:
                kept.append(state.id)
                protected.update(state.namespaces)
                continue
            stop_owner(state)
            for name in state.namespaces:
                if netns.remove(name):
                    removed.append(f"namespace {name}")
            if forget(state.id):
                removed.append(f"state {state_path(state.id)}")
        for name in leftovers():
            if name not in protected and netns.remove(name):
                removed.append(f"namespace {name}")
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(STATE_DIR):
                if entry.endswith(".tmp"):
                    os.unlink(os.path.join(STATE_DIR, entry))
                    removed.append(f"state {os.path.join(STATE_DIR, entry)}")
    return removed, kept
