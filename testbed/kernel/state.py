"""Lab state files under /run/testbed: what a lab made, so anyone can undo it.

A state file is created (O_EXCL, so two labs can never share an id) before the first
namespace exists and lists every namespace the lab will make, so a run killed half-way
still leaves a complete record. It names its owner by pid *and* start time: a pid that
a later, unrelated process reuses is not the owner. Next to it, `ID.lab` keeps the
scenario and plan the lab was built from, so commands on a running lab read what it
runs, not whatever the scenario file says now. `clean` removes only what a recorded lab
made: its processes, namespaces and files; never anything found by its name alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from testbed.core.topology import NS_PREFIX
from testbed.kernel import netns, procs

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
    start: int = 0  # the owner's start time (clock ticks since boot): pid + start = identity
    # processes the lab started outside its pods (upstream mode: etcd, kube-apiserver,
    # kube-proxy), each {"pid", "start", "name"}, recorded the moment each one starts
    processes: list[dict] = field(default_factory=list)
    kube_proxy: str = "builtin"  # builtin | upstream@VERSION


@dataclass
class Cleaned:
    """What `clean` did: removed items, labs kept (still running), owners stopped."""

    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)  # lab-like names no record owns


def state_path(lab_id: str) -> str:
    return os.path.join(STATE_DIR, f"{lab_id}.json")


def copy_path(lab_id: str) -> str:
    return os.path.join(STATE_DIR, f"{lab_id}.lab")


def change_paths(lab_id: str) -> tuple[str, str]:
    """A live change asked of the lab's owner, and its answer (live/control.py)."""
    return os.path.join(STATE_DIR, f"{lab_id}.change"), os.path.join(STATE_DIR, f"{lab_id}.changed")


def data_dir(lab_id: str) -> str:
    """The lab's own directory (upstream mode: etcd's data, keys, configs, logs)."""
    return os.path.join(STATE_DIR, f"{lab_id}.d")


def _files(lab_id: str) -> list[str]:
    path = state_path(lab_id)
    asked, answered = change_paths(lab_id)
    return [path, path + ".tmp", copy_path(lab_id), copy_path(lab_id) + ".tmp", asked, answered]


def _write(path: str, data: bytes) -> None:
    """Write by rename, never following a link planted where the temporary goes."""
    tmp = path + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def create(state: LabState) -> bool:
    """Record a new lab; False when its id is taken (the state file exists already)."""
    os.makedirs(STATE_DIR, exist_ok=True)
    try:
        fd = os.open(
            state_path(state.id), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644
        )
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(state), handle, indent=1)
    return True


def save(state: LabState) -> None:
    """Update a lab's record (made with `create`)."""
    _write(state_path(state.id), json.dumps(asdict(state), indent=1).encode())


def load(lab_id: str) -> LabState:
    with open(state_path(lab_id)) as handle:
        return LabState(**json.load(handle))


def save_copy(lab_id: str, scenario: Any, plan: Any, removed: frozenset[str]) -> None:
    """Keep the lab's own copy of what it was built from (and any change since)."""
    _write(copy_path(lab_id), pickle.dumps((scenario, plan, removed)))


def load_copy(lab_id: str) -> tuple[Any, Any, frozenset[str]]:
    """The (scenario, plan, removed pods) a running lab keeps; only from a file root wrote."""
    fd = os.open(copy_path(lab_id), os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionError(f"{copy_path(lab_id)}: not written by this user alone")
        return pickle.load(handle)


def forget(lab_id: str) -> list[str]:
    """Remove a lab's files; the ones that existed."""
    gone = []
    for path in _files(lab_id):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            gone.append(path)
    if os.path.isdir(data_dir(lab_id)) and not os.path.islink(data_dir(lab_id)):
        shutil.rmtree(data_dir(lab_id), ignore_errors=True)
        gone.append(data_dir(lab_id))
    return gone


def all_states() -> list[LabState]:
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.listdir(STATE_DIR)):
            if entry.endswith(".json"):
                with contextlib.suppress(OSError, ValueError, TypeError):
                    found.append(load(entry[: -len(".json")]))
    return found


def owner_alive(state: LabState) -> bool:
    """True only if the recorded owner (pid and start time) still runs.

    A record from before start times were kept (start 0) falls back to the old test,
    a live pid whose command line says testbed, so an upgrade never removes a lab
    that an older testbed still runs.
    """
    if state.start == 0 and state.pid > 0:
        try:
            with open(f"/proc/{state.pid}/cmdline", "rb") as handle:
                return b"testbed" in handle.read()
        except OSError:
            return False
    return procs.alive(state.pid, state.start)


def still_mine(lab_id: str, owner: procs.Proc) -> bool:
    """Does the record of `lab_id` still name this owner? (No: the lab was taken down.)"""
    try:
        found = load(lab_id)
    except (OSError, ValueError, TypeError):
        return False
    return (found.pid, found.start) == (owner.pid, owner.start)


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


def stop_owner(state: LabState, timeout: float = 20.0) -> str:
    """Ask a lab's owner to tear down, and make sure it went.

    'stopped' (it exited), 'killed' (it did not within `timeout`: SIGKILL), 'gone'
    (not running) or 'self'. SIGCONT follows SIGTERM, so a stopped (Ctrl-Z) owner wakes.
    """
    if state.pid == os.getpid():
        return "self"
    if not owner_alive(state):
        return "gone"
    start = state.start or procs.start_time(state.pid) or 0  # a legacy record: as it is now
    return procs.stop(state.pid, start, timeout)


def remove_lab(state: LabState) -> tuple[list[str], list[procs.Proc]]:
    """Remove what a recorded lab made: processes inside it, namespaces, files.

    The owner must be gone already. Returns (removed items, processes ended).
    """
    ended = []
    for rec in state.processes:  # by the recorded pid and start time, never by name
        proc = procs.Proc(int(rec["pid"]), int(rec["start"]), str(rec.get("name", "")))
        if procs.stop(proc.pid, proc.start, timeout=5.0) != "gone":
            ended.append(proc)
    paths = [netns.path(n) for n in state.namespaces]
    ended += procs.stop_inside(paths)
    removed = [f"namespace {n}" for n in state.namespaces if netns.remove(n)]
    removed += [f"state {p}" for p in forget(state.id)]
    return removed, ended


def describe(proc: procs.Proc) -> str:
    return f"process {proc.pid} ({proc.name})"


def clean(everything: bool = False) -> Cleaned:
    """Remove what labs left behind; with `everything`, stop running labs first.

    A lab whose owner is alive is not a leftover: it is kept, and so are its namespaces.
    """
    done = Cleaned()
    with locked():
        states = all_states()
        for found in states:
            if owner_alive(found) and not everything:
                done.kept.append(found.id)
                continue
            how = stop_owner(found)
            if how in ("stopped", "killed"):
                done.stopped.append(f"lab {found.id}: owner {found.pid} {how}")
            removed, ended = remove_lab(found)
            done.removed += removed
            done.stopped += [f"lab {found.id}: {describe(p)} ended" for p in ended]
        recorded = {n for s in states for n in s.namespaces}
        done.unrecorded = [
            n for n in netns.listed() if n.startswith(NS_PREFIX) and n not in recorded
        ]
    return done
