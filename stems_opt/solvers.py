"""Solver registry and :func:`solve`: every solver returns the same :class:`Result`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from stems_opt.cost_model import (
    SegmentContext,
    SegmentGeometry,
    compulsory_traffic_bits,
    evaluate,
    peak_of,
    segment_terms,
    sub_tile_limits,
)
from stems_opt.errors import Issue, StemsInputError
from stems_opt.mapping import Mapping, Segment, WeightChoice, check
from stems_opt.network import Axis, most_chunks
from stems_opt.problem import Objective, Problem
from stems_opt.result import Result, SolveStatus

EXACT_SOLVERS = ("cpsat", "highs")
WARM_START_SCHEDULES = ("TB-LBL", "TB-F", "ST-F")
FALLBACK_SHARE = 0.85
"""Share of a time limit given to the search; the rest is kept for the named fallback."""
MAX_FRAMES = 400
"""Frames handed to the MIP at most; the rest are covered by their bound."""
MAX_OPTIONS_PER_FRAME = 400
"""Frames with more sub-tile choices than this are covered by their bound."""


def finest_peak_bits(problem: Problem, layer: str) -> int:
    """GB bits ``layer`` needs alone at its finest tiling (Tb = 1, most tiles and
    sub-tiles, weights in the most chunks, state spilled, tensors through DRAM)."""
    net = problem.network
    lay = net.layer(layer)
    ku = problem.hardware.array.factor("K")
    best = None
    for axis in (Axis.OY, Axis.OX):
        seg = Segment((layer,), 1, lay.extent(axis), axis)
        m = sub_tile_limits(net, seg)[layer]
        chunks = most_chunks(lay.k, ku) if lay.has_weights else 1
        seg = seg.replace(sub_tiles={layer: m},
                          weights={layer: WeightChoice(chunks=chunks)} if lay.has_weights else {})
        geo = SegmentGeometry(net, seg)
        ctx = SegmentContext(frozenset(), frozenset({layer}))
        peak = peak_of(segment_terms(net, seg, ctx, geo), geo)[0]
        best = peak if best is None else min(best, peak)
    assert best is not None
    return best


def unfit_layers(problem: Problem) -> list[str]:
    """Why no mapping can fit, layer by layer: each layer that needs more than the
    global buffer alone at its finest tiling. Empty when every layer fits alone.

    Cheap (one segment per layer and axis, no solver), so ``validate`` runs it.
    """
    cap = problem.hardware.gb_capacity_bits
    worst = []
    for lay in problem.network.layers:
        need = finest_peak_bits(problem, lay.name)
        if need > cap:
            worst.append(f"layer {lay.name!r} needs {need:,} bits of global buffer at its "
                         f"finest tiling; the capacity is {cap:,} bits")
    return worst


def explain_infeasible(problem: Problem) -> str:
    """Name the layers that cannot fit the global buffer however they are tiled."""
    cap = problem.hardware.gb_capacity_bits
    worst = unfit_layers(problem)
    if worst:
        return "; ".join(worst)
    return (f"every layer fits alone, but no segmentation fits the {cap:,}-bit global buffer "
            "under the search-space limits")


def _incumbent(problem: Problem, deadline: float | None = None) -> Result | None:
    """The best named schedule whose segments all lie in the search space; with a
    ``deadline`` (``time.perf_counter()`` value), no schedule is started after it."""
    from stems_opt.heuristics import named_schedule

    cap = problem.max_segment_layers
    best = None
    for name in WARM_START_SCHEDULES:
        if deadline is not None and time.perf_counter() > deadline:
            break
        if cap is not None and name == "ST-LBL" and len(problem.network.layers) > cap:
            continue
        r = named_schedule(problem, name)
        if r.mapping is not None and cap is not None and any(
                len(s.layers) > cap for s in r.mapping.segments):
            continue
        if r.feasible and (best is None or r.objective_value < best.objective_value):
            best = r
    return best


def _frame_keys(problem: Problem, mapping: Mapping) -> list[tuple]:
    index = {lay.name: i for i, lay in enumerate(problem.network.layers)}
    return [(index[s.layers[0]], index[s.layers[-1]], s.time_batch, s.axis, s.tiles, s.order)
            for s in mapping.segments]


def solve_columns(problem: Problem, solver: str = "cpsat", time_limit_s: float | None = None,
                  threads: int | None = None, seed: int = 0, warm_start: bool = True,
                  **_: object) -> Result:
    """Solve by lazily priced segment columns chained by a shortest path over
    segment boundaries (see :mod:`stems_opt.formulation.columns`); the frame
    models are solved by ``solver``. When a time limit stops the search before
    its proof, the best named schedule is the fallback mapping if it is better
    (``warm_start``)."""
    from stems_opt.formulation.backend import SolveOptions
    from stems_opt.formulation.columns import ColumnSolver
    from stems_opt.formulation.data import objective_constant

    if solver not in EXACT_SOLVERS:
        raise StemsInputError(Issue(f"unknown solver {solver!r} (one of "
                                    f"{', '.join(EXACT_SOLVERS)})", field="solver"))
    start = time.perf_counter()
    objective = problem.objective
    scale = 1000.0 if objective is Objective.ENERGY else 1.0
    constant = objective_constant(problem)
    backend = _backend(solver)
    cs = ColumnSolver(problem, backend, SolveOptions(threads=threads, seed=seed))
    build_s = time.perf_counter() - start
    # Under a time limit a share is kept for the fallback: the best named schedule.
    left = None if time_limit_s is None else max(0.1, FALLBACK_SHARE * time_limit_s - build_s)
    mapping, model_value, model_bound = cs.solve(left)
    stats = dict(cs.stats)
    stats.update(model_build_s=build_s, solve_s=time.perf_counter() - start - build_s)
    proven = mapping is not None and model_bound >= model_value
    if time_limit_s is not None and warm_start and not proven and model_bound < math.inf:
        # With a mapping in hand, schedules are scored only while the time limit allows.
        fallback = _incumbent(problem, None if mapping is None else start + time_limit_s)
        if fallback is not None and fallback.objective_value is not None:
            fb_value = fallback.objective_value * scale - constant
            assert model_bound <= fb_value * (1 + 1e-9), "a schedule beats the proven bound"
            if fb_value < model_value:
                mapping, model_value = fallback.mapping, fb_value
                stats.update(incumbent=fallback.solver)
    runtime = time.perf_counter() - start
    if mapping is None:
        if model_bound == math.inf:
            return Result(SolveStatus.INFEASIBLE, solver, objective.value,
                          message=explain_infeasible(problem), runtime_s=runtime,
                          build_s=build_s, stats=stats)
        return Result(SolveStatus.UNKNOWN, solver, objective.value, runtime_s=runtime,
                      build_s=build_s, stats=stats,
                      bound=(model_bound + constant) / scale,
                      message="the time limit came before any mapping was found")
    violations = check(problem, mapping)
    assert not violations, f"solver returned an invalid mapping: {violations}"
    cost = evaluate(problem, mapping)
    value = cost.objective_value(objective.value)
    assert _same((model_value + constant) / scale, value), \
        f"model objective {(model_value + constant) / scale} != cost model {value}"
    # (an incumbent from the fallback is scored by the cost model itself)
    bound = min(value, (model_bound + constant) / scale)
    status = SolveStatus.OPTIMAL if bound >= value else SolveStatus.FEASIBLE
    return Result(status, solver, objective.value, mapping=mapping, cost=cost,
                  objective_value=value, bound=bound, gap=0.0 if status is SolveStatus.OPTIMAL
                  else _gap(value, bound), runtime_s=runtime, build_s=build_s, stats=stats)


def _backend(solver: str) -> Callable[..., object]:
    if solver == "cpsat":
        from stems_opt.formulation.cpsat import solve_cpsat

        return solve_cpsat
    from stems_opt.formulation.highs import solve_highs

    return solve_highs


def solve_exact(problem: Problem, solver: str = "cpsat", time_limit_s: float | None = None,
                threads: int | None = None, seed: int = 0, warm_start: bool = True,
                max_frames: int | None = MAX_FRAMES,
                max_options_per_frame: int | None = MAX_OPTIONS_PER_FRAME) -> Result:
    """Solve the joint MIP to a proven optimum (or the best mapping, bound and gap).

    Steps: an incumbent from the named schedules (warm start and upper
    bound); frame lower bounds and a shortest-path bound over segment
    boundaries, which drop every frame that cannot be part of a strictly
    better mapping; the MIP over the frames left (plus the incumbent's);
    the answer re-checked by :func:`~stems_opt.mapping.check` and re-scored
    by :func:`~stems_opt.cost_model.evaluate`. The solver's objective must
    equal the cost model's, or this raises ``AssertionError``.
    """
    from stems_opt.formulation.backend import SolveOptions
    from stems_opt.formulation.data import build_model_data, objective_constant
    from stems_opt.formulation.model import build_linear_model, decode, encode_hint

    if solver not in EXACT_SOLVERS:
        raise StemsInputError(Issue(f"unknown solver {solver!r} (one of "
                                    f"{', '.join(EXACT_SOLVERS)})", field="solver"))
    start = time.perf_counter()
    objective = problem.objective
    scale = 1000.0 if objective is Objective.ENERGY else 1.0
    named = _incumbent(problem) if warm_start else None
    ub = None if named is None else round(named.objective_value * scale)
    if objective is Objective.ENERGY and named is not None:
        ub = named.cost.memory_energy_fj + objective_constant(problem)
    heuristic_s = time.perf_counter() - start
    data = build_model_data(problem, upper_bound=ub,
                            required=_frame_keys(problem, named.mapping) if named else (),
                            max_frames=max_frames, max_options_per_frame=max_options_per_frame)
    L = len(problem.network.layers)
    covered = {i for f in data.frames for i in range(f.first, f.last + 1)}
    stats = dict(data.stats)
    stats.update(heuristic_s=heuristic_s)
    if len(covered) < L and named is None:
        return Result(SolveStatus.INFEASIBLE, solver, objective.value,
                      message=explain_infeasible(problem),
                      runtime_s=time.perf_counter() - start, build_s=data.build_s, stats=stats)
    lm, variables = build_linear_model(data)
    hint = encode_hint(data, variables, named.mapping) if named is not None else None
    build_s = time.perf_counter() - start - heuristic_s
    remaining = None if time_limit_s is None else max(0.1, time_limit_s - heuristic_s - build_s)
    opts = SolveOptions(time_limit_s=remaining, threads=threads, seed=seed)
    if solver == "cpsat":
        from stems_opt.formulation.cpsat import solve_cpsat

        ans = solve_cpsat(lm, opts, hint)
    else:
        from stems_opt.formulation.highs import solve_highs

        ans = solve_highs(lm, opts, hint)
    stats.update(variables=len(lm.names), constraints=len(lm.rows), solve_s=ans.solve_s,
                 model_build_s=build_s, hint_complete=float(hint is not None))
    runtime = time.perf_counter() - start
    if ans.values is None:
        if named is not None:  # the incumbent is the best mapping known
            mip = _global_bound(data, ans.bound)
            return _with_bound(named, solver, mip, data.constant, scale, runtime, build_s,
                               stats, f"the solver stopped ({ans.detail}); best known mapping")
        if ans.status == "infeasible":
            return Result(SolveStatus.INFEASIBLE, solver, objective.value,
                          message=explain_infeasible(problem), runtime_s=runtime,
                          build_s=build_s, stats=stats)
        return Result(SolveStatus.UNKNOWN, solver, objective.value, runtime_s=runtime,
                      build_s=build_s, stats=stats, message=f"solver stopped: {ans.detail}")
    mapping = decode(data, variables, ans.values).canonical(problem.network)
    violations = check(problem, mapping)
    assert not violations, f"solver returned an invalid mapping: {violations}"
    cost = evaluate(problem, mapping)
    value = cost.objective_value(objective.value)
    mip_value = (ans.objective + data.constant) / scale
    assert _same(mip_value, value), f"MIP objective {mip_value} != cost model {value}"
    mip_bound = ans.objective if ans.status == "optimal" else ans.bound
    bound = _global_bound(data, mip_bound)
    bound = None if bound is None else min(value, (bound + data.constant) / scale)
    stats.update(excluded_bound=data.excluded_bound / scale, dp_bound=data.lower_bound / scale)
    status = SolveStatus.OPTIMAL if bound is not None and bound >= value else \
        SolveStatus.FEASIBLE
    gap = 0.0 if status is SolveStatus.OPTIMAL else _gap(value, bound)
    return Result(status, solver, objective.value, mapping=mapping, cost=cost,
                  objective_value=value, bound=bound, gap=gap, runtime_s=runtime,
                  build_s=build_s, stats=stats)


def _global_bound(data: object, mip_bound: float | None) -> float | None:
    """A proven lower bound (model units, constant excluded) on the whole space.

    Mappings inside the model are worth at least the MIP's bound; mappings
    through frames left out at least ``excluded_bound``; every mapping at
    least the shortest-path bound over segment boundaries.
    """
    from stems_opt.formulation.data import ModelData

    assert isinstance(data, ModelData)
    inside = -math.inf if mip_bound is None else mip_bound
    outside = data.excluded_bound - data.constant
    return max(data.lower_bound - data.constant, min(inside, outside))


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def _gap(value: float, bound: float | None) -> float | None:
    if bound is None:
        return None
    return 0.0 if value == 0 else max(0.0, (value - bound) / abs(value))


def _with_bound(named: Result, solver: str, bound: float | None, constant: float, scale: float,
                runtime: float, build_s: float, stats: dict[str, float], msg: str) -> Result:
    b = None if bound is None else min((bound + constant) / scale, named.objective_value)
    gap = _gap(named.objective_value, b)
    status = SolveStatus.OPTIMAL if gap == 0.0 else SolveStatus.FEASIBLE
    return Result(status, solver, named.objective, mapping=named.mapping, cost=named.cost,
                  objective_value=named.objective_value, bound=b, gap=gap, runtime_s=runtime,
                  build_s=build_s, stats=stats, message=msg)


SOLVERS: dict[str, Callable[..., Result]] = {name: solve_columns for name in EXACT_SOLVERS}
METHODS: dict[str, Callable[..., Result]] = {"columns": solve_columns, "monolithic": solve_exact}


def solve(problem: Problem, solver: str = "cpsat", time_limit_s: float | None = None,
          threads: int | None = None, seed: int = 0, warm_start: bool = True,
          method: str = "columns", max_frames: int | None = MAX_FRAMES,
          max_options_per_frame: int | None = MAX_OPTIONS_PER_FRAME) -> Result:
    """Solve ``problem`` with ``solver`` (``cpsat`` or ``highs``).

    ``method`` is ``columns`` (:func:`solve_columns`, the default: segment
    columns priced lazily, a small master MIP) or ``monolithic``
    (:func:`solve_exact`: one MIP over every frame and option, warm-started
    from the named schedules; ``max_frames`` and ``max_options_per_frame``
    cap it, frames left out are covered by their bound). Both are exact.
    """
    if solver not in SOLVERS:
        raise StemsInputError(Issue(f"unknown solver {solver!r} (one of "
                                    f"{', '.join(SOLVERS)})", field="solver"))
    if method not in METHODS:
        raise StemsInputError(Issue(f"unknown method {method!r} (one of "
                                    f"{', '.join(METHODS)})", field="method"))
    return METHODS[method](problem, solver=solver, time_limit_s=time_limit_s, threads=threads,
                           seed=seed, warm_start=warm_start, max_frames=max_frames,
                           max_options_per_frame=max_options_per_frame)


def lower_bound_bits(problem: Problem) -> int:
    """The compulsory traffic (see :func:`cost_model.compulsory_traffic_bits`)."""
    return compulsory_traffic_bits(problem.network)


__all__ = ["EXACT_SOLVERS", "METHODS", "SOLVERS", "explain_infeasible", "lower_bound_bits",
           "solve", "solve_columns", "solve_exact", "unfit_layers"]
