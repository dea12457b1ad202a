"""A private lab world for the reliability tests: their own namespace prefix and state dir.

Other people run labs (prefix `tb-`) and benchmarks on this machine at the same time,
and `testbed clean` removes every lab of its prefix. So every command here runs with
TESTBED_NS_PREFIX=<the suite's prefix>r- and a TESTBED_STATE_DIR of its own: our `clean`
never sees their labs, theirs never sees ours.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.commands import ROOT
from tests.support.waiting import wait_until
from tests.support.world import netns_names

# Inside the suite's own prefix (tests/conftest.py), so a concurrent suite never sees these.
PREFIX = f"{os.environ['TESTBED_NS_PREFIX']}r-"
STALE = re.compile(r"^tbt(\d+)-")  # any suite's namespaces whose runner is gone
IS_ROOT = os.geteuid() == 0


class Private:
    """One test's handle on the private lab world: env, commands, what is left."""

    def __init__(self, state_dir: Path) -> None:
        self.prefix = PREFIX
        self.state_dir = state_dir
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TESTBED_", "PYTEST_"))}
        self.env = dict(base, TESTBED_NS_PREFIX=PREFIX, TESTBED_STATE_DIR=str(state_dir))
        self.procs: list[subprocess.Popen] = []

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "testbed.cli", *args]

    def tb(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        """Run `testbed ARGS` with the private environment (plus `env`)."""
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=dict(self.env, **env),
        )

    def spawn(self, *args: str, stderr=subprocess.DEVNULL, **env: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            self.argv(*args),
            cwd=ROOT,
            env=dict(self.env, **env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def stalled(self, point: str, *args: str, timeout: float = 60) -> tuple[subprocess.Popen, int]:
        """Start `testbed ARGS` frozen at checkpoint `point`; returns (process, stalled pid)."""
        note = Path(tempfile.mkstemp(prefix="stall-", dir=self.state_dir.parent)[1])
        proc = self.spawn(*args, TESTBED_STALL_AT=point, TESTBED_STALL_FILE=str(note))
        found = wait_until(lambda: note.read_text().strip() or proc.poll() is not None, timeout)
        text = note.read_text().split()
        note.unlink()
        assert found and text, f"testbed {' '.join(args)} never reached {point}"
        assert text[1] == point, text
        return proc, int(text[0])

    def namespaces(self) -> set[str]:
        return {n for n in netns_names() if n.startswith(self.prefix)}

    def state_files(self) -> set[str]:
        try:
            return {str(self.state_dir / n) for n in os.listdir(self.state_dir)}
        except FileNotFoundError:
            return set()

    def sweep(self) -> None:
        """Stop what this test started, then remove what it left (private clean only)."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        if self.namespaces() or self.state_files():
            self.tb("clean", "--all", timeout=120)  # labs still up (a failed test's) go too
