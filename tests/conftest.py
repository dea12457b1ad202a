"""The suite's private lab world: its own namespace prefix and state directory.

Set before any test module imports testbed (the prefix is read at import), and
inherited by every `testbed` command a test starts. A user's labs (`tb-`, /run/testbed)
and another suite running at the same time are then invisible to this one's `clean`,
and this one's labs to theirs. A prefix and state directory already given in the
environment are kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile

if not os.environ.get("TESTBED_NS_PREFIX"):
    os.environ["TESTBED_NS_PREFIX"] = f"tbt{os.getpid()}-"
if not os.environ.get("TESTBED_STATE_DIR"):
    _made = tempfile.mkdtemp(prefix="testbed-suite-")
    os.chmod(_made, 0o755)
    os.environ["TESTBED_STATE_DIR"] = _made


def pytest_unconfigure(config) -> None:
    made = globals().get("_made")
    if made:
        shutil.rmtree(made, ignore_errors=True)
