"""The ranges every number of an input must lie in, so that every command runs it exactly.

``validate`` accepting a file must mean that ``evaluate``, ``solve`` (both
backends) and ``compare`` can run it. Three things can break on numbers that
are merely positive and finite:

- **Solver arithmetic.** HiGHS works in doubles, which hold integers exactly
  only below ``2**53``; CP-SAT needs int64 coefficients and checks that no
  linear expression can leave int64. The objective is an integer in both
  (traffic in bits, energy in fJ), so
  :func:`stems_opt.magnitude.worst_case_objective` bounds it
  for *every* mapping, and :data:`MAX_OBJECTIVE` = ``2**53`` caps that bound.
  Every objective coefficient is the cost of part of one mapping, so it is
  below ``2**53`` too: exact in a double, and in int64 with 10 bits to spare
  for CP-SAT's sums over a model (it checks them and refuses a model that
  could overflow rather than answer wrongly). Measured: the RED-LIF energy
  models sum to ``2**49.4`` against a worst case of ``2**51.2``, and an
  instance at ``2**52.99`` solves to the same optimum with both backends
  (``tests/test_input_limits.py``).
- **The fJ grid.** Energies are rounded to integer fJ (``pj_to_fj``); an
  energy of :data:`MAX_PJ` pJ is ``1e9`` fJ, exact in a double, and its
  products with traffic are covered by the worst-case bound above.
- **Work.** Loops and arrays grow with the rows of a tiled axis, so spatial
  sizes are capped by :data:`MAX_EXTENT`; other integers (channels, ``K``,
  bits, timesteps, counts) by :data:`MAX_COUNT`, which keeps divisor
  enumeration (trial division up to the square root, 46,341 steps) cheap.

The limits are documented in ``docs/formats.md`` (section 1, "Limits").
"""

from __future__ import annotations

MAX_OBJECTIVE = 2**53
"""Largest worst-case objective (bits of traffic, fJ of energy) an instance may have."""
MAX_COUNT = 2**31 - 1
"""Largest integer field that is not a spatial size or a memory size."""
MAX_EXTENT = 2**16
"""Largest spatial size: input height and width, kernel, stride, padding, layer extents."""
MAX_MEMORY_BITS = 2**53
"""Largest memory ``size`` in bits (a capacity beyond the objective's range is meaningless)."""
MAX_PJ = 1e6
"""Largest energy per bit or per operation, in pJ (1 µJ; DRAM is about 10 pJ/bit)."""
MIN_BANDWIDTH, MAX_BANDWIDTH = 1e-3, 2.0**53
"""Range of ``bandwidth_bits_per_cycle``: latency is traffic over bandwidth."""
