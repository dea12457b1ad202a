"""The `testbed` console script: quiet on Ctrl-C from the first instant.

A Ctrl-C while Python is still importing the command would print a traceback from
the import; here it ends the command with 130, as it does later.
"""

from __future__ import annotations

import inspect
import signal
import sys


def _quiet_abandoned_coroutines(unraisable) -> None:
    """A Ctrl-C can leave a netlink request's coroutine unfinished; when it is collected
    after its event loop closed, Python prints "Event loop is closed" with a traceback.
    The lab was already torn down, so that message says nothing true to a user."""
    if (
        inspect.iscoroutine(unraisable.object)
        and isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == "Event loop is closed"
    ):
        return
    sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> int:
    sys.unraisablehook = _quiet_abandoned_coroutines
    try:
        from testbed import cli

        return cli.main(argv)
    except KeyboardInterrupt:
        return 130
    finally:
        # the command is over (any lab torn down): a Ctrl-C while Python shuts down ends
        # it just the same, without a traceback from the interpreter's exit
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
