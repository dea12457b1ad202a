"""The one way a test waits for something the system does on its own time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(check: Callable[[], object], timeout: float = 10.0, step: float = 0.05) -> bool:
    """True as soon as `check()` is truthy; after `timeout` seconds, whether it is then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return bool(check())
