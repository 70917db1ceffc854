"""Pyomo backend: the shared :class:`LinearModel` solved by any MILP solver Pyomo drives.

``--solver pyomo:NAME`` (``appsi_highs``, ``highs``, ``cbc``, ``glpk``,
``gurobi``, ``cplex``, ``scip``, ...) solves the frame and master MIPs through
Pyomo, with a zero optimality gap where the solver takes one, so that
``optimal`` still means proven. The answers go through the same checks as the
built-in backends: the mapping is re-checked and re-scored by the cost model,
whose value must equal the MIP's objective. Pyomo is imported only here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from stems_opt.errors import Issue, StemsInputError
from stems_opt.formulation.backend import BackendAnswer, SolveOptions
from stems_opt.formulation.model import LinearModel

PREFIX = "pyomo:"

INSTALL = {
    "appsi_highs": "pip install highspy",
    "highs": "pip install highspy",
    "cbc": "conda install -c conda-forge coincbc (or a cbc binary on PATH)",
    "glpk": "apt-get install glpk-utils (or conda install -c conda-forge glpk)",
    "gurobi": "pip install gurobipy (and a Gurobi licence)",
    "gurobi_direct": "pip install gurobipy (and a Gurobi licence)",
    "cplex": "pip install cplex (and a CPLEX licence)",
    "cplex_direct": "pip install cplex (and a CPLEX licence)",
    "scip": "conda install -c conda-forge scip (an scip binary on PATH)",
}

# Per solver: option names for (time limit s, relative gap, absolute gap, threads, seed).
OPTION_NAMES: dict[str, tuple[str | None, ...]] = {
    "appsi_highs": ("time_limit", "mip_rel_gap", "mip_abs_gap", "threads", "random_seed"),
    "highs": ("time_limit", "mip_rel_gap", "mip_abs_gap", "threads", "random_seed"),
    "cbc": ("seconds", "ratioGap", "allowableGap", "threads", "randomSeed"),
    "glpk": ("tmlim", "mipgap", None, None, None),
    "gurobi": ("TimeLimit", "MIPGap", "MIPGapAbs", "Threads", "Seed"),
    "gurobi_direct": ("TimeLimit", "MIPGap", "MIPGapAbs", "Threads", "Seed"),
    "cplex": ("timelimit", "mipgap", "mip_tolerances_absmipgap", "threads", "randomseed"),
    "cplex_direct": ("timelimit", "mip.tolerances.mipgap", "mip.tolerances.absmipgap",
                     "threads", "randomseed"),
    "scip": ("limits/time", "limits/gap", "limits/absgap", "parallel/maxnthreads",
             "randomization/randomseedshift"),
}


def solver_name(solver: str) -> str:
    """``NAME`` of ``pyomo:NAME``."""
    return solver[len(PREFIX):]


def _install_hint(name: str) -> str:
    return INSTALL.get(name, "see the Pyomo documentation for installing it")


def _factory(name: str) -> Any:
    """A Pyomo solver that is installed, or an input error saying how to get it."""
    try:
        import pyomo.environ as pyo
    except ImportError:
        raise StemsInputError(Issue("--solver pyomo:NAME needs Pyomo: pip install "
                                    "'stems-opt[pyomo]'", field="solver")) from None
    quiet = logging.getLogger("pyomo")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL + 1)  # Pyomo logs a traceback for unknown names
    try:
        opt = pyo.SolverFactory(name)
        available = opt is not None and opt.available(exception_flag=False)
    except Exception:  # unknown names raise from deep inside Pyomo's plugin system
        available = False
    finally:
        quiet.setLevel(level)
    if not available:
        raise StemsInputError(Issue(f"MILP solver {name!r} is not available to Pyomo; "
                                    f"install it: {_install_hint(name)}", field="solver"))
    return opt


def check_available(solver: str) -> None:
    """Raise :class:`StemsInputError` unless ``pyomo:NAME`` can be used."""
    _factory(solver_name(solver))


def pyomo_backend(solver: str) -> Callable[..., BackendAnswer]:
    """The backend function of ``pyomo:NAME`` (same signature as the built-in ones)."""
    name = solver_name(solver)
    _factory(name)

    def solve(lm: LinearModel, options: SolveOptions,
              hint: dict[int, int] | None = None) -> BackendAnswer:
        del hint  # MIP starts differ per solver; the built-in backends use them
        return solve_pyomo(lm, options, name)

    return solve


def _model(lm: LinearModel) -> Any:
    import pyomo.environ as pyo

    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(len(lm.names)), domain=pyo.Binary)
    m.obj = pyo.Objective(expr=pyo.quicksum(
        (c * m.x[i] for i, c in enumerate(lm.objective) if c)), sense=pyo.minimize)
    m.rows = pyo.ConstraintList()
    for _, idx, coef, lo, hi in lm.rows:
        expr = pyo.quicksum((c * m.x[i] for i, c in zip(idx, coef, strict=True)))
        if lo == hi:
            m.rows.add(expr == lo)
        elif math.isinf(lo):
            m.rows.add(expr <= hi)
        elif math.isinf(hi):
            m.rows.add(expr >= lo)
        else:
            m.rows.add(pyo.inequality(lo, expr, hi))
    return m


def _set_options(opt: Any, name: str, options: SolveOptions) -> None:
    names = OPTION_NAMES.get(name, (None,) * 5)
    values = (options.time_limit_s, 0.0, 0.0, options.threads, options.seed)
    for key, value in zip(names, values, strict=True):
        if key is not None and value is not None:
            opt.options[key] = value


def solve_pyomo(lm: LinearModel, options: SolveOptions, name: str) -> BackendAnswer:
    """Solve ``lm`` with Pyomo's solver ``name`` (zero gap; the time limit if any)."""
    from pyomo.opt import SolutionStatus, TerminationCondition

    opt = _factory(name)
    m = _model(lm)
    _set_options(opt, name, options)
    start = time.perf_counter()
    results = opt.solve(m, load_solutions=False, tee=False)
    elapsed = time.perf_counter() - start
    term = results.solver.termination_condition
    detail = f"pyomo:{name} {term}"
    if term in (TerminationCondition.infeasible, TerminationCondition.infeasibleOrUnbounded):
        return BackendAnswer("infeasible", None, None, None, elapsed, detail)
    has_solution = len(results.solution) > 0 and results.solution(0).status in (
        SolutionStatus.optimal, SolutionStatus.feasible, SolutionStatus.bestSoFar,
        SolutionStatus.globallyOptimal, SolutionStatus.locallyOptimal)
    lower = results.problem.lower_bound
    bound = float(math.ceil(lower - 1e-6)) if lower is not None and math.isfinite(lower) \
        else None
    if not has_solution:
        return BackendAnswer("unknown", None, None, bound, elapsed, detail)
    m.solutions.load_from(results)
    values = [float(round(m.x[i].value or 0.0)) for i in range(len(lm.names))]
    # Every coefficient is an integer: the objective of the rounded binaries is exact.
    obj = float(sum(c * v for c, v in zip(lm.objective, values, strict=True)))
    if term is TerminationCondition.optimal:
        return BackendAnswer("optimal", values, obj, obj, elapsed, detail)
    return BackendAnswer("feasible", values, obj, bound, elapsed, detail)


__all__ = ["PREFIX", "check_available", "pyomo_backend", "solve_pyomo", "solver_name"]
