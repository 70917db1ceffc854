"""``python -m stems_opt``: the ``stems-opt`` command line."""

from stems_opt.cli import run

run()
