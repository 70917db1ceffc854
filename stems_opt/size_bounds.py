"""Solving one network at several buffer sizes, passing what one size proves to the next.

A mapping that fits a buffer fits every larger one, and its cost does not
depend on the buffer size, so the optimum can only fall as the buffer grows.
Hence a proven lower bound for a buffer (its optimum, when proven) is a lower
bound for every smaller buffer. :func:`sweep` solves the largest buffer
first and hands each point's bound down as ``lower_bound`` (see
:func:`stems_opt.solvers.solve_columns`), so a small buffer whose search
meets the larger buffer's optimum is proven at once. (:mod:`stems_opt.sweep`
runs grids of independent points in parallel; this runs the sizes of one
network in order so that each can use the last.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from stems_opt.problem import Problem
from stems_opt.result import Result


def with_capacity(problem: Problem, capacity_bits: int) -> Problem:
    """``problem`` with a global buffer of ``capacity_bits`` (everything else kept)."""
    hw = problem.hardware
    gb = replace(hw.global_buffer, capacity_bits=capacity_bits)
    return replace(problem, hardware=replace(hw, global_buffer=gb))


def solve_sizes(problem: Problem, capacities_bits: Sequence[int], solver: str = "cpsat",
          time_limit_s: float | None = None, **options: object) -> list[Result]:
    """Solve ``problem`` at every buffer size of ``capacities_bits``, largest first,
    each with the best bound proven for a larger buffer.

    Returns the results in the order of ``capacities_bits``; each result's
    ``stats["lower_bound_hint"]`` is the bound it was given (0 for the largest).
    """
    from stems_opt.solvers import solve

    results: dict[int, Result] = {}
    hint = 0.0
    for cap in sorted(set(capacities_bits), reverse=True):
        r = solve(with_capacity(problem, cap), solver=solver, time_limit_s=time_limit_s,
                  lower_bound=hint or None, **options)  # type: ignore[arg-type]
        r.stats["lower_bound_hint"] = hint
        if r.bound is not None:
            hint = max(hint, r.bound)
        results[cap] = r
    return [results[c] for c in capacities_bits]


__all__ = ["solve_sizes", "with_capacity"]
