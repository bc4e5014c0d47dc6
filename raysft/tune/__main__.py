"""`python -m raysft.tune SPEC [overrides] [--resume OUTPUT_DIR]`: `raysft tune` without the main CLI."""

import sys

from raysft.cli.tune import main

sys.exit(main())
