"""A scenario plans the same in every process (kept apart from test_plan.py: it starts
interpreters, which the unit subset run as nobody must not)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from testbed.core import scenario
from testbed.core.plan import plan

ROOT = Path(__file__).resolve().parents[2]

PLAN_REPR = (
    "import sys; from testbed.core import plan, scenario;"
    " sys.stdout.write(repr(plan.plan(scenario.load(sys.argv[1]))))"
)


def test_plan_is_deterministic():
    """The same file plans the same in any process: set and dict orders may differ between
    interpreters (string hashing is salted per process), so plan in several of them."""
    path = str(ROOT / "scenarios" / "lb-cluster-vs-local-balance.yaml")
    here = repr(plan(scenario.load(path)))
    for seed in ("1", "2", "3"):
        done = subprocess.run(
            [sys.executable, "-c", PLAN_REPR, path],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONHASHSEED=seed),
            check=True,
        )
        assert done.stdout == here, f"PYTHONHASHSEED={seed} plans differently"
