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

from collections.abc import Mapping, Sequence
from dataclasses import replace

from stems_opt.problem import Problem
from stems_opt.result import Result, relative_gap


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


_GROUP = ("network_file", "hardware_file", "objective", "state_persistence")


def size_envelope(rows: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Sweep rows (``stems_opt.sweep.COLUMNS``) with what other buffer sizes prove.

    Rows that differ only in ``gb_capacity_bits`` (same network, hardware file,
    objective and state rule) form one slope. At each size the bound becomes the
    largest bound of any size at least as large (the optimum never rises as the
    buffer shrinks), and the mapping the best one found at any size at most as
    large (a mapping that fits a smaller buffer fits this one, at the same
    cost), with its ``traffic_bits`` and ``energy_pj``. ``gap`` and ``status``
    follow (``optimal`` when value and bound meet). The added column
    ``envelope`` names the sizes a bound or a mapping came from; it is empty
    when the point's own solve stands. Rows keep their order.
    """
    from stems_opt.sweep import size_label

    out = [dict(r) for r in rows]
    slopes: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for r in out:
        r["envelope"] = ""
        if r.get("gb_capacity_bits"):
            slopes.setdefault(tuple(r[c] for c in _GROUP), []).append(r)
    for pts in slopes.values():
        pts.sort(key=lambda r: int(r["gb_capacity_bits"]))
        own = [(r["value"], r["bound"], r["traffic_bits"], r["energy_pj"]) for r in pts]
        for i, r in enumerate(pts):
            notes = []
            bounds = [(float(b), j) for j, (_, b, _, _) in enumerate(own[i:], i) if b]
            if bounds:
                bound, j = max(bounds, key=lambda t: (t[0], -t[1]))
                if j != i and (not own[i][1] or bound > float(own[i][1])):
                    r["bound"] = own[j][1]
                    notes.append(f"bound from {size_label(int(pts[j]['gb_capacity_bits']))}")
            values = [(float(v), j) for j, (v, _, _, _) in enumerate(own[:i + 1]) if v]
            if values:
                value, j = min(values, key=lambda t: (t[0], -t[1]))
                if j != i and (not own[i][0] or value < float(own[i][0])):
                    r["value"], _, r["traffic_bits"], r["energy_pj"] = own[j]
                    notes.append(f"mapping from {size_label(int(pts[j]['gb_capacity_bits']))}")
            if notes and r["value"] and r["bound"]:
                gap = relative_gap(float(r["value"]), float(r["bound"]))
                r["gap"] = "0" if gap == 0 else repr(gap)
                r["status"] = "optimal" if gap == 0 else "feasible"
            r["envelope"] = "; ".join(notes)
    return out


__all__ = ["size_envelope", "solve_sizes", "with_capacity"]
