"""The `testbed` console script: quiet on Ctrl-C from the first instant.

A Ctrl-C while Python is still importing the command would print a traceback from
the import; here it ends the command with 130, as it does later.
"""

from __future__ import annotations

import signal
import sys


def main() -> int:
    try:
        from testbed import cli

        return cli.main()
    except KeyboardInterrupt:
        return 130
    finally:
        # the command is over (any lab torn down): a Ctrl-C while Python shuts down ends
        # it just the same, without a traceback from the interpreter's exit
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
