"""`python -m raysft.service serve|jobs|tenants ...`: the service's commands on their own (as `raysft ...`)."""

import sys

from raysft.cli import service_main

sys.exit(service_main())
