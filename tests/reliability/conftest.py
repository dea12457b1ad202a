"""The reliability section's fixtures: a private lab world per test, swept afterwards.

Every command runs in that world (tests/support/private.py); whatever a test leaves is
swept at teardown with the same private environment, and the session fails if anything
of the section's prefix is left.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.private import IS_ROOT, PREFIX, STALE, Private
from tests.support.world import alive, netns_names


@pytest.fixture(scope="session")
def state_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="testbed-reliability-"))
    path.chmod(0o755)  # as /run/testbed is: anyone may look, only root may write
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Sweep stale namespaces of dead earlier runs; fail the session if ours remain."""
    if IS_ROOT:
        from testbed.kernel import netns

        for name in netns_names():
            match = STALE.match(name)
            if match and not alive(int(match.group(1))):
                netns.remove(name)
    yield
    if IS_ROOT:
        left = [n for n in netns_names() if n.startswith(PREFIX)]
        assert not left, f"reliability tests left namespaces: {left}"


@pytest.fixture
def private(state_root: Path, request: pytest.FixtureRequest) -> Iterator[Private]:
    """A private lab world for one test, swept afterwards whatever happened."""
    state_dir = state_root / re.sub(r"\W+", "-", request.node.name)[:60]
    handle = Private(state_dir)
    try:
        yield handle
    finally:
        handle.sweep()
