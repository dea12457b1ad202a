"""`python -m testbed.cli`: the console script's entry, Ctrl-C handling included."""

import sys

from testbed import entry

sys.exit(entry.main())
