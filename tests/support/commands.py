"""Where the checkout is, and the `testbed` command run from it as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
LIBRARY = ROOT / "testbed" / "scenarios"  # the copy the package ships
TESTBED = [sys.executable, "-m", "testbed.cli"]


def run_testbed(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    """`testbed ARGS` in the suite's own environment (its namespace prefix and state dir)."""
    return subprocess.run(
        [*TESTBED, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw
    )
