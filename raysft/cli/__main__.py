"""`python -m raysft.cli ...`: the `raysft` command without its console script."""

import sys

from raysft.cli import main

sys.exit(main())
