"""The latency search, seeded from the energy optimum (``docs/solver.md``).

The least-energy mapping often has a low latency too (on RED-LIF at 1 MB
lower than what the latency search alone finds within a minute). So
``--objective latency`` first solves for energy with a share of the time,
then searches for latency with the energy optimum's segments among its
seeds (:meth:`stems_opt.formulation.columns.ColumnSolver.seed`), and keeps
the energy optimum itself when, scored for latency, it is still better: the
answer's latency is never above the energy optimum's. The proof of the
latency optimum is the latency search's own; the energy solve only adds a
mapping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from stems_opt.cost.evaluation import evaluate
from stems_opt.mapping import Mapping
from stems_opt.problem import Objective, Problem
from stems_opt.progress import LOG
from stems_opt.result import Result, SolveStatus, relative_gap
from stems_opt.stopping import INTERRUPTED, Stop

ENERGY_SHARE = 0.5
"""Share of the time limit the energy solve may use (the rest is the latency search's)."""


def solve_latency(problem: Problem, solve_one: Callable[..., Result], stop: Stop,
                  mappings: Sequence[Mapping] = (), **options: Any) -> Result:
    """Minimise latency over ``problem``'s mapping space, seeded from the energy optimum.

    ``solve_one(problem, stop=..., mappings=..., **options)`` solves one
    problem (:func:`stems_opt.solvers.solve` with ``energy_seed=False``);
    ``mappings`` are further seeds of the latency search.
    """
    left = stop.remaining_s()
    child = Stop(None if left is None else left * ENERGY_SHARE)
    LOG.info("latency: the energy optimum first, as a seed")
    energy_options = {k: v for k, v in options.items()
                      if k not in ("lower_bound", "on_incumbent")}
    with stop.cancel_hook(lambda: child.request(stop.reason or INTERRUPTED)):
        energy = solve_one(problem.with_objective(Objective.ENERGY), stop=child,
                           **energy_options)
    seed = None if energy.mapping is None else energy.mapping.without_nests()
    seeds = (*mappings, *(() if seed is None else (seed,)))
    result = solve_one(problem, stop=stop, mappings=seeds, **options)
    return _no_worse_than(problem, result, seed)


def _no_worse_than(problem: Problem, result: Result, seed: Mapping | None) -> Result:
    """``result``, or ``seed`` scored for ``problem`` if that is better."""
    if seed is None or result.status is SolveStatus.OPTIMAL:
        return result
    cost = evaluate(problem, seed)
    value = cost.objective_value(problem.objective.value)
    if not cost.feasible or (result.objective_value is not None
                             and result.objective_value <= value):
        return result
    bound = result.bound if result.bound is not None else 0.0
    status = SolveStatus.OPTIMAL if bound >= value else SolveStatus.FEASIBLE
    return dataclasses.replace(
        result, status=status, mapping=seed, cost=cost, objective_value=value,
        bound=min(bound, value), gap=0.0 if status is SolveStatus.OPTIMAL
        else relative_gap(value, bound), stats={**result.stats, "incumbent": "energy optimum"})
