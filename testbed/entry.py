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
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: same end, quietly
        return 130


if __name__ == "__main__":
    sys.exit(main())
