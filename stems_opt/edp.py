"""The energy-delay product, exactly, by weighted sums (``docs/solver.md``, EDP).

``E * L`` is not linear, but it is quasi-concave on the positive orthant
(its upper level sets ``{E L >= c}`` are convex), so its minimum over the
finite set of mappings' ``(E, L)`` points is attained at a vertex of their
convex hull; since it also grows with ``E`` and with ``L``, at a vertex of
the lower-left hull, a *supported* Pareto point. Those points are found by
the dichotomic (Aneja-Nair) search: minimise ``a E + b L`` for the normal
``(a, b)`` of the segment between two known points, in integers (``E`` in
fJ, ``L`` in cycles); a point strictly below the segment splits it, none
means no vertex lies between. The answer is the best product over every
point found; it is optimal when every weighted solve was proven.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from stems_opt.mapping import Mapping
from stems_opt.problem import Problem
from stems_opt.progress import LOG
from stems_opt.result import Result, SolveStatus, relative_gap
from stems_opt.stopping import INTERRUPTED, Stop

EXACT_LIMIT = 2 ** 45
"""Largest weighted value (four times the larger end of a segment) solved exactly:
HiGHS computes in doubles (2^53) and CP-SAT needs the sum of a model's objective
coefficients in int64 (2^63), which leaves room for 2^18 options."""


SHARES = (0.4, 1 / 3)
"""Shares of the time left for the least-energy and the least-latency solves
(every later weighted solve: half of what is left)."""


def _point(result: Result) -> tuple[int, int] | None:
    """``(memory energy fJ, latency cycles)`` of a result's mapping."""
    if result.cost is None or not result.feasible:
        return None
    return result.cost.memory_energy_fj, result.cost.latency_cycles


def solve_edp(problem: Problem, solve_one: Callable[..., Result],
              mappings: Sequence[Mapping] = (), **options: Any) -> Result:
    """Minimise energy x latency over ``problem``'s mapping space.

    ``solve_one(problem, **options)`` solves one weighted problem
    (:meth:`Problem.weighted`) exactly (:func:`stems_opt.solvers.solve`).
    The result's ``objective_value`` is the EDP in pJ x cycles; its bound is
    the product of the least energy and the least latency proven when a
    weighted solve was left unproven. ``stats`` lists the points found.

    ``options["stop"]`` (a :class:`~stems_opt.stopping.Stop`) holds the
    deadline of the whole search and any stop request. The least-energy solve
    gets 40 % of the time, the least-latency one a third of what is left (20 %),
    every later one half of what is left, so that both bounds exist when time
    runs out and the weighted solves between the extremes get 40 %: they find
    the low products, while a least-latency mapping found late may carry any
    energy (on SEW-ResNet-18 one of 27.99 M cycles had 5.3 mJ, where one of
    27.83 M had 3.5 mJ, a product 50 % above), and the least-latency bound
    comes early. The least energy keeps its share: its optimum is RED-LIF's
    best product. With method ``columns``
    every weighted search is seeded with ``mappings`` and the mappings found
    before it; the answer is the least
    product over every mapping found and every one of ``mappings`` (never
    worse than a seed).
    """
    start = time.perf_counter()
    seeds = [m.without_nests() for m in mappings]
    results: list[Result] = []
    proven = True
    notes: list[str] = []
    parent: Stop = options.pop("stop", None) or Stop()
    options.pop("time_limit_s", None)  # the parent's deadline covers every solve
    shares = iter(SHARES)
    seeding = options.get("method", "columns") == "columns"

    def run(a: int, b: int) -> tuple[int, int] | None:
        nonlocal proven
        if parent.expired():
            proven = False
            return None
        left = parent.remaining_s()
        child = Stop(None if left is None else left * next(shares, 0.5))
        LOG.info("EDP: minimising %d x energy (fJ) + %d x latency (cycles)", a, b)
        # Every mapping found so far seeds the next search (the least-energy one
        # often beats what the least-latency search finds alone).
        given = {"mappings": (*seeds, *(r.mapping.without_nests() for r in results
                                        if r.mapping is not None))} if seeding else {}
        with parent.cancel_hook(lambda: child.request(parent.reason or INTERRUPTED)):
            r = solve_one(problem.weighted(a, b), stop=child, **given, **options)
        results.append(r)
        if r.status is not SolveStatus.OPTIMAL:
            proven = False
        return _point(r)

    p_energy = run(1, 0)
    e_bound = results[-1].bound if results else None
    p_latency = run(0, 1)
    l_bound = results[-1].bound if len(results) > 1 else None
    if p_energy is None or p_latency is None:
        return _answer(problem, results, False, start, e_bound, l_bound,
                       ["no mapping found" if not any(r.feasible for r in results) else ""],
                       seeds)
    stack = [(p_energy, p_latency)] if p_energy[1] > p_latency[1] else []
    seen = {p_energy, p_latency}
    while stack:
        (ea, la), (eb, lb) = stack.pop()
        a, b = la - lb, eb - ea
        if a <= 0 or b <= 0:
            continue
        g = math.gcd(a, b)
        a, b = a // g, b // g
        wa, wb = a, b
        size = 4 * (a * max(ea, eb) + b * max(la, lb))
        if size >= EXACT_LIMIT:
            # Rounded weights still give a mapping (a supported point of a nearby
            # direction), but finding none below the segment proves nothing.
            scale = -(-size // EXACT_LIMIT)
            wa, wb = max(1, round(a / scale)), max(1, round(b / scale))
            if proven:
                notes.append("weights beyond exact arithmetic were rounded: not proven")
            proven = False
        got = run(wa, wb)
        if got is None:
            continue
        if a * got[0] + b * got[1] < a * ea + b * la and got not in seen:
            seen.add(got)
            stack += [((ea, la), got), (got, (eb, lb))]
    return _answer(problem, results, proven, start, e_bound, l_bound, notes, seeds)


def _seed_results(problem: Problem, seeds: Sequence[Mapping]) -> list[Result]:
    """Each feasible seed mapping scored for ``problem`` (a candidate answer)."""
    from stems_opt.cost.evaluation import evaluate

    out = []
    for m in seeds:
        cost = evaluate(problem, m)
        if cost.feasible:
            out.append(Result(SolveStatus.FEASIBLE, "seed", "edp", mapping=m, cost=cost,
                              objective_value=cost.edp_pj_cycles))
    return out


def _answer(problem: Problem, results: list[Result], proven: bool, start: float,
            e_bound: float | None, l_bound: float | None, notes: list[str],
            seeds: Sequence[Mapping] = ()) -> Result:
    found = [r for r in results if r.feasible and r.cost is not None]
    solver = results[0].solver if results else ""
    seeded = _seed_results(problem, seeds)
    stats: dict[str, float | str] = {
        "weighted_solves": len(results),
        "distinct_points": len({_point(r) for r in found}),
        "points": "; ".join(f"{r.cost.total_energy_pj:.6g} pJ x {r.cost.latency_cycles} cycles"
                            for r in found if r.cost is not None),
    }
    runtime = time.perf_counter() - start
    if not found and not seeded:
        status = SolveStatus.INFEASIBLE if results and all(
            r.status is SolveStatus.INFEASIBLE for r in results) else SolveStatus.UNKNOWN
        message = "; ".join(n for n in notes if n) or (
            results[0].message if results else "stopped before any weighted solve")
        return Result(status, solver, "edp", runtime_s=runtime, stats=stats, message=message)
    best = min(found + seeded, key=lambda r: r.cost.edp_pj_cycles)  # type: ignore[union-attr]
    assert best.cost is not None
    value = best.cost.edp_pj_cycles
    if best.solver == "seed":
        stats["incumbent"] = "seed mapping"
    if proven:
        bound = value
    else:  # the least energy (fJ, as the weighted (1, 0) solve bounds it) x the least latency
        from stems_opt.cost.latency import latency_floor_cycles

        # (the search-free latency floor when the (0, 1) solve had no time)
        least_latency = max(l_bound or 0.0,
                            latency_floor_cycles(problem.network, problem.hardware))
        bound = 0.0
        if e_bound is not None:
            bound = min(value, max(0.0, e_bound) / 1000 * least_latency)
    gap = 0.0 if proven else relative_gap(value, bound)
    return Result(SolveStatus.OPTIMAL if proven else SolveStatus.FEASIBLE, solver, "edp",
                  mapping=best.mapping, cost=best.cost, objective_value=value, bound=bound,
                  gap=gap, runtime_s=runtime,
                  build_s=sum(r.build_s for r in results), stats=stats,
                  message="; ".join(n for n in notes if n))
