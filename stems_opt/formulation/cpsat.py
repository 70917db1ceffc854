"""OR-Tools CP-SAT backend: reads the shared :class:`LinearModel`, returns values."""

from __future__ import annotations

import math

from stems_opt.formulation.backend import BackendAnswer, SolveOptions
from stems_opt.formulation.model import LinearModel
from stems_opt.stopping import run_stoppable


def solve_cpsat(lm: LinearModel, options: SolveOptions,
                hint: dict[int, int] | None = None) -> BackendAnswer:
    """Solve ``lm`` with CP-SAT to a zero gap (or the time limit)."""
    from ortools.sat.python import cp_model

    model = cp_model.CpModel()
    xs = [model.NewBoolVar(name) for name in lm.names]
    for name, idx, coef, lo, hi in lm.rows:
        expr = sum(c * xs[i] for i, c in zip(idx, coef, strict=True))
        if lo == hi:
            ct = model.Add(expr == int(lo))
        elif lo == float("-inf"):
            ct = model.Add(expr <= int(hi))
        else:
            ct = model.AddLinearConstraint(expr, int(lo), int(hi))
        ct.WithName(name)
    model.Minimize(sum(c * xs[i] for i, c in enumerate(lm.objective) if c))
    if hint:
        for i, val in hint.items():
            model.AddHint(xs[i], val)
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.relative_gap_limit = 0.0
    p.absolute_gap_limit = 0.0
    p.random_seed = options.seed
    p.num_workers = options.threads or 1
    p.catch_sigint_signal = False  # Ctrl-C belongs to the caller (see stems_opt.stopping)
    if options.threads and options.threads > 1:
        p.interleave_search = True
    if options.time_limit_s is not None:
        p.max_time_in_seconds = options.time_limit_s
    status = run_stoppable(lambda: solver.Solve(model), solver.stop_search, options.stop)
    name = solver.StatusName(status)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        values = [solver.Value(x) for x in xs]
        # Every coefficient is an integer: round away float noise, never past the bound.
        obj = float(round(solver.ObjectiveValue()))
        bound = float(math.ceil(solver.BestObjectiveBound() - 1e-6))
        return BackendAnswer("optimal" if status == cp_model.OPTIMAL else "feasible", values,
                             obj, bound, solver.WallTime(), name)
    if status == cp_model.INFEASIBLE:
        return BackendAnswer("infeasible", None, None, None, solver.WallTime(), name)
    return BackendAnswer("unknown", None, None, solver.BestObjectiveBound(), solver.WallTime(),
                         name)
