"""The exact joint MIP: shared model data and the CP-SAT and HiGHS backends.

Solver packages are imported inside the backend functions only, so importing
this package (and the CLI's ``--help``) stays fast.
"""
