"""`python -m testbed.bench ARGS`: `testbed bench ARGS` (its scale children run this way).

Through the console script's entry, so exit codes and messages are the CLI's table's.
"""

import sys

from testbed import entry

sys.exit(entry.main(["bench", *sys.argv[1:]]))
