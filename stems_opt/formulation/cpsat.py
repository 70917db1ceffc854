"""OR-Tools CP-SAT backend: reads the shared :class:`LinearModel`, returns values.

The model goes straight into CP-SAT's model proto (``cp_model_helper``), not
through ``cp_model``: that module imports pandas, which takes about 1.5 s (of
a 10 s time limit) on a shared machine; the helper takes 0.3 s, and filling
the proto row by row is also faster than building ``cp_model`` expressions.
"""

from __future__ import annotations

import math

from stems_opt.formulation.backend import BackendAnswer, SolveOptions
from stems_opt.formulation.model import LinearModel
from stems_opt.stopping import run_stoppable

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _domain(lo: float, hi: float) -> list[int]:
    return [_INT64_MIN if lo == -math.inf else int(lo), _INT64_MAX if hi == math.inf else int(hi)]


def _terms(idx: list[int], coef: list[int]) -> tuple[list[int], list[int]]:
    """The row's variables and coefficients, repeated variables summed, zeros left out."""
    if len(set(idx)) == len(idx):
        pairs = [(i, c) for i, c in zip(idx, coef, strict=True) if c]
    else:
        merged: dict[int, int] = {}
        for i, c in zip(idx, coef, strict=True):
            merged[i] = merged.get(i, 0) + c
        pairs = [(i, c) for i, c in merged.items() if c]
    return [i for i, _ in pairs], [int(c) for _, c in pairs]


def build_proto(lm: LinearModel, hint: dict[int, int] | None = None) -> object:
    """``lm`` as a CP-SAT ``CpModelProto``: one Boolean per column, one linear
    constraint per row, the objective minimised, ``hint`` as the solution hint."""
    from ortools.sat.python import cp_model_helper as cmh

    proto = cmh.CpModelProto()
    for name in lm.names:
        var = proto.variables.add()
        var.domain.extend([0, 1])
        var.name = name
    for name, idx, coef, lo, hi in lm.rows:
        ct = proto.constraints.add()
        ct.name = name
        vs, cs = _terms(idx, coef)
        ct.linear.vars.extend(vs)
        ct.linear.coeffs.extend(cs)
        ct.linear.domain.extend(_domain(lo, hi))
    obj = [(i, int(c)) for i, c in enumerate(lm.objective) if c]
    proto.objective.vars.extend([i for i, _ in obj])
    proto.objective.coeffs.extend([c for _, c in obj])
    if hint:
        proto.solution_hint.vars.extend(list(hint))
        proto.solution_hint.values.extend([int(v) for v in hint.values()])
    return proto


def solve_cpsat(lm: LinearModel, options: SolveOptions,
                hint: dict[int, int] | None = None) -> BackendAnswer:
    """Solve ``lm`` with CP-SAT to a zero gap (or the time limit)."""
    from ortools.sat.python import cp_model_helper as cmh

    proto = build_proto(lm, hint)
    p = cmh.SatParameters()
    p.relative_gap_limit = 0.0
    p.absolute_gap_limit = 0.0
    p.random_seed = options.seed
    p.num_workers = options.threads or 1
    p.catch_sigint_signal = False  # Ctrl-C belongs to the caller (see stems_opt.stopping)
    if options.threads and options.threads > 1:
        p.interleave_search = True
    if options.time_limit_s is not None:
        p.max_time_in_seconds = options.time_limit_s
    wrapper = cmh.SolveWrapper()
    wrapper.set_parameters(p)
    response = run_stoppable(lambda: wrapper.solve(proto), wrapper.stop_search, options.stop)
    status = response.status
    name = status.name
    if status in (cmh.CpSolverStatus.OPTIMAL, cmh.CpSolverStatus.FEASIBLE):
        values = list(response.solution)
        # Every coefficient is an integer: round away float noise, never past the bound.
        obj = float(round(response.objective_value))
        bound = float(math.ceil(response.best_objective_bound - 1e-6))
        return BackendAnswer("optimal" if status == cmh.CpSolverStatus.OPTIMAL else "feasible",
                             values, obj, bound, response.wall_time, name)
    if status == cmh.CpSolverStatus.INFEASIBLE:
        return BackendAnswer("infeasible", None, None, None, response.wall_time, name)
    return BackendAnswer("unknown", None, None, response.best_objective_bound,
                         response.wall_time, name)
