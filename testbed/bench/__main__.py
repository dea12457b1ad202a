"""`python -m testbed.bench`: the benchmark on its own (and its scale children)."""

import sys

from testbed.bench import main

sys.exit(main())
