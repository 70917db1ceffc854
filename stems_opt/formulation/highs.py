"""HiGHS backend (highspy): reads the shared :class:`LinearModel`, returns values."""

from __future__ import annotations

import math
import time

from stems_opt.formulation.backend import BackendAnswer, SolveOptions
from stems_opt.formulation.model import LinearModel
from stems_opt.formulation.quiet import quiet_stdout
from stems_opt.stopping import run_stoppable


def _highs_lp(lm: LinearModel) -> object:
    """``lm`` as a HiGHS model: binaries as integers in [0, 1], named rows and columns."""
    import highspy

    lp = highspy.HighsLp()
    n = len(lm.names)
    lp.num_col_ = n
    lp.num_row_ = len(lm.rows)
    lp.col_cost_ = [float(c) for c in lm.objective]
    lp.col_lower_ = [0.0] * n
    lp.col_upper_ = [1.0] * n
    inf = highspy.kHighsInf
    lp.row_lower_ = [-inf if lo == float("-inf") else float(lo) for _, _, _, lo, _ in lm.rows]
    lp.row_upper_ = [inf if hi == float("inf") else float(hi) for _, _, _, _, hi in lm.rows]
    starts, index, value = [0], [], []
    for _, idx, coef, _, _ in lm.rows:
        index.extend(idx)
        value.extend(float(c) for c in coef)
        starts.append(len(index))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = starts
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = value
    lp.a_matrix_.num_col_ = n
    lp.a_matrix_.num_row_ = len(lm.rows)
    lp.integrality_ = [highspy.HighsVarType.kInteger] * n
    lp.col_names_ = list(lm.names)
    lp.row_names_ = [name for name, *_ in lm.rows]
    return lp


def solve_highs(lm: LinearModel, options: SolveOptions,
                hint: dict[int, int] | None = None) -> BackendAnswer:
    """Solve ``lm`` with HiGHS branch and cut, ``mip_rel_gap = 0``."""
    import highspy

    with quiet_stdout():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    if options.stop is not None:
        h.HandleUserInterrupt = True  # lets cancelSolve() stop a running solve
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("mip_abs_gap", 0.0)
    # HiGHS ignores a rejected option with only a status: a seed must never be dropped.
    if h.setOptionValue("random_seed", options.seed) != highspy.HighsStatus.kOk:
        raise ValueError(f"HiGHS rejected the random seed {options.seed}")
    if options.threads:
        h.setOptionValue("threads", options.threads)
    if options.time_limit_s is not None:
        h.setOptionValue("time_limit", float(options.time_limit_s))
    h.passModel(_highs_lp(lm))
    # A MIP start is not passed: HiGHS 1.16 can stop at the root with the start's
    # reduced-space objective after presolve and report it as optimal.
    del hint
    start = time.perf_counter()
    run_stoppable(h.run, h.cancelSolve, options.stop)
    elapsed = time.perf_counter() - start
    ms = h.getModelStatus()
    info = h.getInfo()
    status_name = h.modelStatusToString(ms)
    has_sol = info.primal_solution_status == 2  # kSolutionStatusFeasible
    # Every coefficient is an integer: round away float noise, never past the bound.
    obj = float(round(info.objective_function_value)) if has_sol else None
    dual = float(math.ceil(info.mip_dual_bound - 1e-6)) if math.isfinite(
        info.mip_dual_bound) else None
    if ms == highspy.HighsModelStatus.kOptimal and has_sol:
        values = list(h.getSolution().col_value)
        return BackendAnswer("optimal", values, obj, obj, elapsed, status_name)
    if ms == highspy.HighsModelStatus.kInfeasible:
        return BackendAnswer("infeasible", None, None, None, elapsed, status_name)
    if has_sol:
        values = list(h.getSolution().col_value)
        return BackendAnswer("feasible", values, obj, dual, elapsed, status_name)
    return BackendAnswer("unknown", None, None, dual, elapsed, status_name)


def write_highs(lm: LinearModel, path: str) -> None:
    """Write ``lm`` as an LP or MPS file (by the suffix of ``path``) through HiGHS."""
    import highspy

    with quiet_stdout():
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.passModel(_highs_lp(lm))
    with quiet_stdout():
        status = h.writeModel(str(path))
    if status == highspy.HighsStatus.kError:
        raise OSError(f"HiGHS could not write {path}")
