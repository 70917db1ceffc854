"""``python -m stems_opt``: the ``stems-opt`` command line."""

import sys

from stems_opt.cli import main

sys.exit(main())
