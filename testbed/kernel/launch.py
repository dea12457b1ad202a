"""Start long-lived processes that die with the lab, inside a lab namespace.

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the
process: a child forked from a worker thread dies when that worker ends. So every
child is forked by one thread of our own that lives until `close`. Each child also
gets its own session (a Ctrl-C on the terminal reaches the owner, which stops them
in order), and enters its namespace through `ip netns exec`, which execs in place, so
the pid recorded is the process that runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from testbed.kernel import procs

PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """In the child before exec: SIGKILL when the forking thread ends; never an orphan."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the owner died between fork and prctl
        os._exit(1)


class Launcher:
    """One long-lived thread that forks every child, and the children it forked."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="launcher", daemon=True)
        self._thread.start()
        self.children: list[tuple[subprocess.Popen, procs.Proc]] = []

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            work, box, done = job
            try:
                box.append(work())
            except BaseException as exc:  # handed to the caller
                box.append(exc)
            done.set()

    def _call(self, work: Callable[[], Any]) -> Any:
        box: list = []
        done = threading.Event()
        self._jobs.put((work, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def spawn(self, ns: str, argv: Sequence[str], log: str, name: str) -> procs.Proc:
        """Start `argv` in namespace `ns`, output to `log`; its pid and start time."""
        parent = os.getpid()

        def work() -> procs.Proc:
            with open(log, "ab") as out:
                child = subprocess.Popen(
                    ["ip", "netns", "exec", ns, *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=lambda: _die_with(parent),
                )
            start = procs.start_time(child.pid) or 0
            proc = procs.Proc(child.pid, start, name)
            self.children.append((child, proc))
            return proc

        return self._call(work)

    def running(self, proc: procs.Proc) -> bool:
        return procs.alive(proc.pid, proc.start)

    def stop_all(self, grace: float = 5.0, last: tuple[str, ...] = ()) -> None:
        """SIGTERM the children, SIGKILL what is left after `grace`; reap them all.

        Those named in `last` are stopped after the others have gone: the API server
        does not exit while etcd is gone, and etcd waits for its clients.
        """
        children, self.children = self.children, []
        first = [c for c in children if c[1].name not in last]
        self._stop(first, grace)
        self._stop([c for c in children if c[1].name in last], grace)

    @staticmethod
    def _stop(children: list[tuple[subprocess.Popen, procs.Proc]], grace: float) -> None:
        for _, proc in children:
            procs.send(proc.pid, proc.start, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child, proc in children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                procs.send(proc.pid, proc.start, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=5)

    def close(self, grace: float = 5.0, last: tuple[str, ...] = ()) -> None:
        self.stop_all(grace, last)
        self._jobs.put(None)
        self._thread.join(timeout=5)
