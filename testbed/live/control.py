"""Live changes to a running lab from the shell: `testbed scale`, `delete pod`, `set-policy`.

The change must happen in the lab's owner (the process `testbed up` left running): it
serves the pods' echo servers and the nodes' health checks and runs the edge, so only it
can start a new pod's servers or make the edge follow. The command writes one request
file next to the lab's record; the owner, which looks at its record every half second
anyway, applies it with the same Lab methods the scenario's steps use and writes the
answer back. One change at a time per lab (the request file is created exclusively).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time

from testbed.core.errors import LabError
from testbed.kernel import state

ANSWER_SECONDS = 60.0  # a change re-plans, reloads every node's rules and lets the edge follow
ACTIONS = ("scale", "deletePod", "setPolicy")


def request_path(lab_id: str) -> str:
    return state.change_paths(lab_id)[0]


def answer_path(lab_id: str) -> str:
    return state.change_paths(lab_id)[1]


def describe(change: dict) -> str:
    """The change in kubectl's words, for the command's one line of output."""
    if change["action"] == "scale":
        return f"deployment {change['deployment']} scaled to {change['replicas']}"
    if change["action"] == "deletePod":
        return f"pod {change['pod']} deleted"
    parts = [
        f"{key}TrafficPolicy {change[key]}" for key in ("external", "internal") if change.get(key)
    ]
    return f"service {change['service']}: " + ", ".join(parts)


def submit(lab_id: str, change: dict, timeout: float = ANSWER_SECONDS) -> str:
    """Ask the owner of `lab_id` for the change and wait for its answer (LabError: refused)."""
    if change.get("action") not in ACTIONS:
        raise LabError(f"unknown change {change.get('action')!r}")
    ticket = secrets.token_hex(6)
    path = request_path(lab_id)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise LabError(f"lab {lab_id} is applying another change; try again") from None
    with os.fdopen(fd, "w") as handle:
        json.dump({"ticket": ticket, **change}, handle)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            answer = _read(answer_path(lab_id))
            if answer is not None and answer.get("ticket") == ticket:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(answer_path(lab_id))
                if answer.get("error"):
                    raise LabError(answer["error"])
                return describe(change)
            time.sleep(0.1)
    finally:
        with contextlib.suppress(FileNotFoundError):  # unanswered: take the request back
            if _read(path) is not None and _read(path).get("ticket") == ticket:
                os.unlink(path)
    raise LabError(f"lab {lab_id}: its owner did not answer within {timeout:g} s")


def _read(path: str) -> dict | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, OSError):
        return None
    with os.fdopen(fd) as handle:
        try:
            data = json.load(handle)
        except ValueError:
            return None
    return data if isinstance(data, dict) else None


def apply(lab, change: dict) -> None:
    """The change, through the methods the steps use (live/steps.py)."""
    action = change.get("action")
    if action == "scale":
        lab.scale(str(change["deployment"]), int(change["replicas"]))
    elif action == "deletePod":
        lab.delete_pod(str(change["pod"]))
    elif action == "setPolicy":
        lab.set_policy(str(change["service"]), change.get("external"), change.get("internal"))
    else:
        raise LabError(f"unknown change {action!r}")


def handle(lab) -> None:
    """Owner side: apply a waiting request, if any, and answer it. Never raises."""
    path = request_path(lab.id)
    change = _read(path)
    if change is None:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    answer: dict = {"ticket": change.get("ticket")}
    try:
        apply(lab, change)
    except (LabError, KeyError, ValueError, TypeError) as exc:
        answer["error"] = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    except Exception as exc:  # the lab keeps serving; the command reports it
        answer["error"] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    state._write(answer_path(lab.id), json.dumps(answer).encode())


def forget(lab_id: str) -> None:
    """The owner is leaving: no request or answer outlives it."""
    for path in (request_path(lab_id), answer_path(lab_id)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
