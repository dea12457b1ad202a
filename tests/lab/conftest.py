"""The lab tests' fixtures: no leaks, and the library's runs shared by the session."""

from __future__ import annotations

import pytest

from tests.support.library import LibraryRuns
from tests.support.waiting import wait_until
from tests.support.world import lab_namespaces, state_files


@pytest.fixture
def no_leaks():
    """Assert the test leaves no lab namespace and no state file behind."""
    before_ns, before_state = lab_namespaces(), state_files()
    yield
    assert wait_until(lambda: lab_namespaces() == before_ns, 5), lab_namespaces() - before_ns
    assert state_files() == before_state


@pytest.fixture(scope="session")
def library_runs() -> LibraryRuns:
    """Each library scenario run once per proxy mode for the whole session, then read."""
    return LibraryRuns()
