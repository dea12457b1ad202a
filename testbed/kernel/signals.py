"""Turn SIGTERM/SIGINT into an exception so every `with Lab` tears down.

`shielded()` holds such signals back while a teardown runs: a Ctrl-C that arrives
then (or a second one) is delivered when the teardown is complete, so it can never
leave half a lab behind.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

STOPS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when the process is asked to stop.

    A KeyboardInterrupt, because asyncio lets only those (and SystemExit) out of a
    callback: any other exception raised there, as a signal handler's is when the main
    thread runs an event loop, would be logged and swallowed, and the run go on.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_asked: list[int] = []  # signals received inside handled(), in order


def check() -> None:
    """Raise Interrupted if a stop was asked and has not ended the work yet.

    A handler's exception can be swallowed: raised inside a finalizer or a weakref
    callback, Python only reports it. Long loops call this between steps, and
    `handled()` calls it on the way out, so such a stop still stops.
    """
    if _asked:
        raise Interrupted(_asked[0])


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """SIGINT/SIGTERM raise Interrupted in the body; after the first, both are ignored.

    They stay ignored once the body is left by an interruption: the process is on its
    way out, and a repeated Ctrl-C must not break its exit with a traceback.
    """

    def raise_interrupted(signum: int, _frame: object) -> None:
        # a second signal during teardown must not cut the teardown short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _asked.append(signum)
        raise Interrupted(signum)

    def quiet(unraisable: sys.UnraisableHookArgs) -> None:
        if not isinstance(unraisable.exc_value, Interrupted):  # ours is re-raised by check()
            hook(unraisable)

    _asked.clear()
    hook = sys.unraisablehook
    previous = {s: signal.signal(s, raise_interrupted) for s in STOPS}
    sys.unraisablehook = quiet
    try:
        yield
        check()
    finally:
        sys.unraisablehook = hook
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if _asked else handler)
        _asked.clear()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for the body; deliver the first one afterwards.

    Only the main thread can set handlers; elsewhere the body runs as it is (signals
    reach the main thread there anyway).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        caught.append(signum)

    previous = {s: signal.signal(s, hold) for s in STOPS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])
