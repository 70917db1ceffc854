"""Solver registry and :func:`solve`: every solver returns the same :class:`Result`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from stems_opt.cost.geometry import SegmentGeometry, sub_tile_limits
from stems_opt.cost.traffic import SegmentContext, compulsory_traffic_bits, peak_of, segment_terms
from stems_opt.errors import Issue, StemsInputError
from stems_opt.feasibility import check_and_score
from stems_opt.mapping import Mapping, Segment, WeightChoice
from stems_opt.network import Axis, most_chunks
from stems_opt.problem import Objective, Problem
from stems_opt.progress import Progress
from stems_opt.result import Result, SolveStatus, relative_gap
from stems_opt.stopping import INTERRUPTED, TIME_LIMIT, SearchStoppedError, Stop

if TYPE_CHECKING:
    from stems_opt.formulation.column_helper import ColumnHelper
    from stems_opt.formulation.columns import ColumnSolver
    from stems_opt.incumbents import BackgroundNamed

EXACT_SOLVERS = ("cpsat", "highs")
NEST_OBJECTIVES = (Objective.ENERGY, Objective.EDP)
"""Objectives whose search solves loop nests (on hardware with them)."""
FINISH_RESERVE_S = 0.3
"""Seconds kept, at most, from a time limit for the work after the search (5 % of the
limit when that is less): the best mapping over the columns found, its check and score."""
LATE_MARGIN_S = 0.25
LATE_MARGIN_SHARE = 0.03
"""Seconds (or share of the limit, when more) a search with a column helper leaves
before its deadline, after raising its bound in the time its answer left."""
FINISH_PER_LAYER_S = 0.003
"""Seconds more kept per layer (within the same 5 %): checking and scoring a mapping, and
seeding the named schedules arrived, take about a millisecond per layer each."""
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


def _incumbent(problem: Problem) -> Result | None:
    """The best named schedule whose segments all lie in the search space."""
    from stems_opt.incumbents import FALLBACK_SCHEDULES, named_in_space

    found = [r for r in (named_in_space(problem, name) for name in FALLBACK_SCHEDULES)
             if r is not None]
    return min(found, key=lambda r: r.objective_value, default=None)  # type: ignore


def _frame_keys(problem: Problem, mapping: Mapping) -> list[tuple]:
    index = {lay.name: i for i, lay in enumerate(problem.network.layers)}
    return [(index[s.layers[0]], index[s.layers[-1]], s.time_batch, s.axis, s.tiles, s.order)
            for s in mapping.segments]


def solve_columns(problem: Problem, solver: str = "cpsat", time_limit_s: float | None = None,
                  threads: int | None = None, seed: int = 0, warm_start: bool = True,
                  stop: Stop | None = None, lower_bound: float | None = None,
                  mappings: Sequence[Mapping] = (),
                  on_incumbent: Callable[[float, float], None] | None = None,
                  bound_first: bool = False, **_: object) -> Result:
    """Solve by lazily priced segment columns chained by a shortest path over
    segment boundaries (see :mod:`stems_opt.formulation.columns`); the frame
    models are solved by ``solver``.

    ``time_limit_s`` is a wall-clock limit on everything (building, bounds,
    pricing, the fallback). When it (or a request on ``stop``) ends the search
    before its proof, the answer is the best mapping found with the proven
    bound; with ``warm_start`` the named schedules seed the search (their
    segments join the ones found) and are the fallback when better. They are
    scored in this process before the search where that is cheap for the
    limit (:func:`stems_opt.incumbents.in_process`), else in a second process
    meanwhile, seeding the search as they arrive; for energy through loop nests
    that process also runs a short search without them whose mapping seeds it too
    (:func:`stems_opt.solvers.coarse_seed`).

    ``lower_bound`` (objective units) is a proven lower bound known from
    elsewhere, and the segments of ``mappings`` seed the search wherever they
    fit: in a sweep over buffer sizes, the bound for a larger buffer bounds a
    smaller one, and a mapping for a smaller buffer fits a larger one (see
    :mod:`stems_opt.size_bounds`). ``on_incumbent(elapsed_s, value)`` is called with
    each better mapping the search finds (value in objective units). ``bound_first``
    skips the dive, the polish and the neighbourhood search: masters and pricing alone
    raise the bound from the start, and the mapping is the proof's (the traffic seed,
    run for its bound).
    """
    from stems_opt.formulation.columns import ColumnSolver
    from stems_opt.incumbents import (
        COARSE_SEED,
        SCORING_ORDER,
        TRAFFIC_SEED,
        BackgroundNamed,
        coarse_seed_s,
        in_process,
        in_process_budget_s,
        score_in_process,
        traffic_seed_s,
    )

    check_solver(solver)
    caller_stop = stop is not None
    stop = _stop_for(stop, time_limit_s)
    # The named fallback matters only when the search may stop before its proof: scored
    # here first while that is cheap for the limit, the rest in a second process meanwhile.
    named: list[Result] = []
    rest: tuple[str, ...] = ()
    seed_s = None
    if warm_start and (caller_stop or stop.deadline is not None):
        limit = stop.time_limit_s
        rest, seed_s = SCORING_ORDER, coarse_seed_s(problem, limit)
        if seed_s is None and in_process(problem, limit):
            named, rest = score_in_process(problem, stop, in_process_budget_s(limit))
    # A deep network's bound is what a short limit leaves open: the second core tightens
    # columns there (column_helper.py), in place of the seeds (the nest helper waits for it).
    columns_help = seed_s is not None and _column_helper_wanted(problem, threads)
    seeds = () if seed_s is None or columns_help else \
        ((COARSE_SEED, functools.partial(coarse_seed, seconds=seed_s)),
         (TRAFFIC_SEED, functools.partial(traffic_seed,
                                          seconds=traffic_seed_s(problem, limit))))
    background = BackgroundNamed(problem, rest, seeds, helper=True) \
        if (rest or seeds) and not stop.expired() else None
    try:
        with _column_helper(problem, solver, columns_help) as columns, \
                _nest_helper(problem, threads, background, columns) as helper:
            column_solver = functools.partial(ColumnSolver, bound_first=bound_first)
            result = _solve_columns(problem, solver, threads, seed, stop, background,
                                    column_solver, lower_bound, mappings, on_incumbent, named,
                                    columns)
            if helper is not None:
                result.stats.update(nest_batches_helped=helper.batches_helped)
            return result
    finally:
        if background is not None:
            background.close()


def _column_helper_wanted(problem: Problem, threads: int | None) -> bool:
    """Whether a short-limit energy solve of ``problem`` (one with seeds) gets a
    :class:`~stems_opt.formulation.column_helper.ColumnHelper` instead: networks deeper
    than ``column_base.EAGER_LAYERS``, on two cores or more. (SEW-ResNet-152's seeds,
    whose searches neither finish nor beat the search's own mappings in time there,
    changed neither its mapping nor its bound at 128 and 384 KB under 10 s.)"""
    from stems_opt.cost import nest_helper
    from stems_opt.formulation.column_base import EAGER_LAYERS

    return len(problem.network.layers) > EAGER_LAYERS and nest_helper.wanted(threads)


def _column_helper(problem: Problem, solver: str, wanted: bool
                   ) -> contextlib.AbstractContextManager:
    """A process tightening columns with the search where ``wanted``
    (:mod:`~stems_opt.formulation.column_helper`), else nothing."""
    if not wanted:
        return contextlib.nullcontext()
    from stems_opt.formulation import column_helper

    return column_helper.helping(problem, _backend(solver))


def _nest_helper(problem: Problem, threads: int | None,
                 background: BackgroundNamed | None,
                 columns: ColumnHelper | None = None) -> contextlib.AbstractContextManager:
    """A process solving loop nests with the search (:mod:`~stems_opt.cost.nest_helper`)
    where the search solves nests (energy and EDP through loop nests) and may use two
    cores, else nothing; it is asked from the start, unless ``background`` runs seeds
    (short limits) or ``columns`` tightens columns, which are worth more: then once
    they are done."""
    from stems_opt.cost import nest_helper

    if not (problem.hardware.loop_nests and problem.objective in NEST_OBJECTIVES
            and nest_helper.wanted(threads)):
        return contextlib.nullcontext()
    return nest_helper.helping(lambda: (background is None or not background.seeds
                                        or not background.running())
                               and (columns is None or not columns.running()))


def coarse_seed(problem: Problem, seconds: float) -> Result:
    """The best mapping the energy search finds in ``seconds`` (CP-SAT, one thread)
    on ``problem``'s hardware without loop nests, scored on ``problem`` itself (its
    nests) by the cost model (status unknown, no mapping, when none is found or its
    steps fit no nest)."""
    from stems_opt.incumbents import COARSE_SEED

    coarse = dataclasses.replace(problem, hardware=dataclasses.replace(problem.hardware,
                                                                       loop_nests=False))
    return _twin_seed(problem, coarse, seconds, COARSE_SEED)


def traffic_seed(problem: Problem, seconds: float) -> Result:
    """The traffic search for ``seconds`` (CP-SAT, one thread, bound first): its best
    mapping scored on ``problem`` by the cost model (a seed), and its proven lower bound
    on every mapping's traffic in ``problem``'s search space, as
    ``stats["traffic_bound_bits"]`` (with the operand floors, a bound on the energy:
    :meth:`~stems_opt.formulation.columns.ColumnSolver.traffic_floor`)."""
    from stems_opt.incumbents import TRAFFIC_SEED

    return _twin_seed(problem, problem.with_objective(Objective.TRAFFIC), seconds,
                      TRAFFIC_SEED, bound_first=True)


def _twin_seed(problem: Problem, twin: Problem, seconds: float, name: str,
               bound_first: bool = False) -> Result:
    """The search of ``twin`` for ``seconds`` (CP-SAT, one thread, no named schedules;
    ``bound_first`` as :func:`solve_columns`), its mapping checked and scored on
    ``problem``; a traffic ``twin``'s proven bound goes along as
    ``stats["traffic_bound_bits"]``."""
    start = time.perf_counter()
    found = solve_columns(twin, time_limit_s=seconds, threads=1, warm_start=False,
                          bound_first=bound_first)
    stats: dict[str, float | str] = {}
    if twin.objective is Objective.TRAFFIC and found.bound is not None:
        stats["traffic_bound_bits"] = float(found.bound)
    violations, cost = (["none"], None) if found.mapping is None else \
        check_and_score(problem, found.mapping)
    if violations or cost is None:
        return Result(SolveStatus.UNKNOWN, name, problem.objective.value,
                      runtime_s=time.perf_counter() - start, stats=stats,
                      message=f"the {name} search found no mapping that fits in time")
    return Result(SolveStatus.FEASIBLE, name, problem.objective.value,
                  mapping=found.mapping, cost=cost,
                  objective_value=cost.objective_value(problem.objective.value,
                                                       problem.weights),
                  runtime_s=time.perf_counter() - start, stats=stats)


def solve_and_score(problem: Problem, schedules: tuple[str, ...], solver: str = "cpsat",
                    time_limit_s: float | None = None, threads: int | None = None,
                    seed: int = 0, stop: Stop | None = None
                    ) -> tuple[Result, dict[str, Result | str | None]]:
    """The optimum (as :func:`solve_columns`) and the named ``schedules``, scored in a
    second process meanwhile, all within ``time_limit_s``.

    Returns the solve's result and, per schedule, its result, an error message,
    or ``None`` when the time limit came first.
    """
    from stems_opt.formulation.columns import ColumnSolver
    from stems_opt.heuristics import parse_schedule
    from stems_opt.incumbents import FALLBACK_SCHEDULES, BackgroundNamed

    for name in schedules:  # bad names are input errors before any work
        parse_schedule(name, problem.network)
    check_solver(solver)
    stop = _stop_for(stop, time_limit_s)
    names = tuple(dict.fromkeys([*schedules, *FALLBACK_SCHEDULES]))
    with BackgroundNamed(problem, names) as background:
        if problem.objective is Objective.EDP and problem.weights is None:
            result = solve(problem, solver, threads=threads, seed=seed, stop=stop)
        else:
            result = _solve_columns(problem, solver, threads, seed, stop, background,
                                    ColumnSolver)
        while not background.done() and not stop.expired() and background.alive():
            time.sleep(0.02)
        background.poll()
        scored: dict[str, Result | str | None] = {
            name: background.results.get(name, background.errors.get(name))
            for name in schedules}
    return result, scored


def _named_offer(named: list[Result], background: BackgroundNamed | None
                 ) -> tuple[float, str] | None:
    """The best named schedule scored so far (here or in the second process)."""
    from stems_opt.incumbents import best_of

    far = None if background is None else background.best()
    best = best_of(named if far is None else [*named, far])
    if best is None or best.objective_value is None:
        return None
    return best.objective_value, best.solver


def _named_model_value(named: list[Result], background: BackgroundNamed | None,
                       scale: float, constant: float) -> float | None:
    """:func:`_named_offer`'s value in model units (the search's)."""
    offer = _named_offer(named, background)
    return None if offer is None else offer[0] * scale - constant


def _stop_for(stop: Stop | None, time_limit_s: float | None) -> Stop:
    """``stop``, or a new one, with the time limit applied from now."""
    if stop is None:
        return Stop(time_limit_s)
    if time_limit_s is not None:
        own = stop.start + time_limit_s
        stop.deadline = own if stop.deadline is None else min(stop.deadline, own)
    return stop


def _solve_columns(problem: Problem, solver: str, threads: int | None, seed: int, stop: Stop,
                   background: BackgroundNamed | None, column_solver: Callable[..., Any],
                   lower_bound: float | None = None, mappings: Sequence[Mapping] = (),
                   on_incumbent: Callable[[float, float], None] | None = None,
                   named: Sequence[Result] = (), columns: ColumnHelper | None = None
                   ) -> Result:
    """The search of :func:`solve_columns`; ``named`` are named schedules scored before it
    (seeds, and the fallback when better), ``background`` the second process scoring
    others meanwhile."""
    from stems_opt.formulation.backend import SolveOptions
    from stems_opt.formulation.data import objective_constant
    from stems_opt.incumbents import best_of

    start = stop.start
    objective = problem.objective
    scale = _scale(problem)
    constant = objective_constant(problem)
    progress = Progress(objective.value, lambda v: (v + constant) / scale)
    named = list(named)
    progress.add_source(lambda: _named_offer(named, background))
    stats: dict[str, float | str] = {}
    if named:
        stats.update(named_s=time.perf_counter() - start)
    with progress:
        # Loop nests solved while building or searching may take seconds; what is left
        # must score the answer here (its nests too, cold when scored elsewhere).
        reserve_s = _finish_reserve_s(stop, len(problem.network.layers), 0.25)
        try:
            with stop.active(reserve_s):
                cs = column_solver(problem, _backend(solver),
                                   SolveOptions(threads=threads, seed=seed, stop=stop),
                                   progress=progress)
        except SearchStoppedError:
            cs = None
        build_s = time.perf_counter() - start
        if cs is None:  # stopped while building: the cheapest valid bound
            mapping, model_value, model_bound = None, math.inf, _quick_bound(problem)
        else:
            _hook(cs, start, constant, scale, background,
                  [*mappings, *(r.mapping for r in named)], on_incumbent)
            if columns is not None:
                from stems_opt.formulation.column_helper import helper_takes

                cs.column_source, cs.column_sink = columns.poll, columns.send
                cs.helper_takes = helper_takes
            cs.named_value = functools.partial(_named_model_value, named, background, scale,
                                               constant)
            # Model units are integers: rounding down keeps a bound in objective units valid.
            hint = 0.0 if lower_bound is None else max(
                0.0, math.floor(lower_bound * scale - constant))
            share = _search_share(stop, len(problem.network.layers),
                                  0.25 if problem.hardware.loop_nests else 0.05)
            with stop.active(reserve_s):
                mapping, model_value, model_bound = cs.solve(share, hint)
            stats.update(cs.stats)
            if model_bound < math.inf:  # a search stopped early may not have reached it
                model_bound = max(model_bound, _quick_bound(problem))
                floor = _traffic_floor_arrived(cs, background)
                if floor is not None:  # (from the traffic seed's proven least traffic)
                    model_bound = max(model_bound, floor)
        stats.update(model_build_s=build_s, solve_s=time.perf_counter() - start - build_s)
        proven = mapping is not None and model_bound >= model_value
        if (background is not None or named) and not proven and model_bound < math.inf:
            if background is not None and mapping is None and not named:
                _wait_for_named(background, stop)
            if cs is not None:  # schedules arrived since: their segments join the ones found
                # Scoring their segments in the columns may solve nests: it stops at the
                # deadline, as the search does; the best arrived mapping still counts whole.
                with contextlib.suppress(SearchStoppedError), stop.active():
                    cs.poll_seeds()
                found = cs.incumbent()
                if found is not None and found[1] < model_value:
                    mapping, model_value = cs.mapping_of(found[0]), found[1]
                    cs.note_incumbent()
            arrived = None if background is None else background.best()  # (the latest)
            fallback = best_of(named if arrived is None else [*named, arrived])
            if fallback is not None and fallback.objective_value is not None:
                fb_value = fallback.objective_value * scale - constant
                assert model_bound <= fb_value * (1 + 1e-9), "a schedule beats the proven bound"
                if fb_value < model_value:
                    mapping, model_value = fallback.mapping, fb_value
                    stats.update(incumbent=fallback.solver)
        if columns is not None:
            if cs is not None and mapping is not None and model_bound < model_value:
                # The answer's score first (its steps' nests, what the reserve was kept
                # for: scored again below from the table), then the time left.
                check_and_score(problem, mapping)
                model_bound = max(model_bound, _bound_until_deadline(cs, stop))
            columns.close()
        if mapping is not None:  # the answer's own line: a search may end between reports
            progress.update(bound=min(model_bound, model_value), incumbent=model_value,
                            source=str(stats.get("incumbent", "search")))
    if stop.reason is None and stop.deadline is not None and not proven:
        stop.reason = TIME_LIMIT  # the search's share of the limit ran out
    if stop.reason is not None:
        stats.update(stopped=stop.reason)
    runtime = time.perf_counter() - start
    if mapping is None:
        if model_bound == math.inf:
            return Result(SolveStatus.INFEASIBLE, solver, objective.value,
                          message=explain_infeasible(problem), runtime_s=runtime,
                          build_s=build_s, stats=stats)
        return Result(SolveStatus.UNKNOWN, solver, objective.value, runtime_s=runtime,
                      build_s=build_s, stats=stats,
                      bound=(model_bound + constant) / scale,
                      message=f"the search stopped ({stop.reason or 'no answer'}) before "
                              "any mapping was found")
    violations, cost = check_and_score(problem, mapping)
    assert not violations and cost is not None, \
        f"solver returned an invalid mapping: {violations}"
    value = cost.objective_value(objective.value, problem.weights)
    assert _same((model_value + constant) / scale, value), \
        f"model objective {(model_value + constant) / scale} != cost model {value}"
    # (an incumbent from the fallback is scored by the cost model itself)
    bound = min(value, (model_bound + constant) / scale)
    status = SolveStatus.OPTIMAL if bound >= value else SolveStatus.FEASIBLE
    message = "" if status is SolveStatus.OPTIMAL or stop.reason is None else \
        f"stopped by the {stop.reason}" if stop.reason == TIME_LIMIT else "interrupted"
    return Result(status, solver, objective.value, mapping=mapping, cost=cost,
                  objective_value=value, bound=bound, gap=0.0 if status is SolveStatus.OPTIMAL
                  else relative_gap(value, bound), runtime_s=time.perf_counter() - start,
                  build_s=build_s, stats=stats, message=message)


def _bound_until_deadline(cs: ColumnSolver, stop: Stop) -> float:
    """The bound (model units) a search with a column helper reaches in the time its
    answer left: until :data:`LATE_MARGIN_S` (or that share of the limit, when more)
    before the deadline, which scoring the answer and the last master pass need."""
    limit = stop.time_limit_s
    left = stop.remaining_s()
    if limit is None or left is None:
        return 0.0
    with contextlib.suppress(SearchStoppedError), stop.active():
        return cs.bound_until(time.perf_counter() + left - max(LATE_MARGIN_S,
                                                               LATE_MARGIN_SHARE * limit))
    return 0.0


def _hook(cs: object, start: float, constant: float, scale: float,
          background: BackgroundNamed | None, mappings: Sequence[Mapping],
          on_incumbent: Callable[[float, float], None] | None) -> None:
    """Connect the column solver to its seeds (given mappings, then the named schedules
    as they arrive) and to ``on_incumbent``."""
    from stems_opt.formulation.columns import ColumnSolver

    assert isinstance(cs, ColumnSolver)
    for given in mappings:
        cs.seed(given)
    if background is not None:
        cs.seed_source = lambda: [r.mapping for r in background.poll().values()
                                  if r.mapping is not None]
        cs.seeded_as_it_goes = bool(background.seeds)
        if background.seeds:  # (the traffic seed's least traffic bounds the energy)
            cs.floor_source = lambda: _traffic_floor_arrived(cs, background)
    if on_incumbent is not None:
        cs.on_incumbent = lambda v: on_incumbent(time.perf_counter() - start,
                                                 (v + constant) / scale)


def _search_share(stop: Stop, layers: int, share: float) -> float | None:
    """Seconds the search may use: the time left less what the answer needs after it
    (the best mapping over the columns found, its check and its score), at most
    ``share`` of the limit (more with loop nests: a fallback scored in the second
    process is scored here with its nests computed afresh)."""
    left = stop.remaining_s()
    if left is None:
        return None
    return max(0.0, left - _finish_reserve_s(stop, layers, share))


def _finish_reserve_s(stop: Stop, layers: int, share: float) -> float:
    """Seconds kept for the answer after the search: :data:`FINISH_RESERVE_S` plus
    :data:`FINISH_PER_LAYER_S` per layer, at most ``share`` of the time limit (0
    without one)."""
    limit = stop.time_limit_s
    if limit is None:
        return 0.0
    reserve = FINISH_RESERVE_S + FINISH_PER_LAYER_S * layers
    return min(reserve, share * limit)


def _traffic_bound_arrived(background: BackgroundNamed | None) -> float | None:
    """The proven lower bound on every mapping's traffic (bits) the second process's
    traffic search sent (:func:`traffic_seed`), if it arrived."""
    if background is None:
        return None
    bits = [r.stats.get("traffic_bound_bits") for r in background.poll().values()]
    return max((float(b) for b in bits if isinstance(b, (int, float))), default=None)


def _traffic_floor_arrived(cs: ColumnSolver, background: BackgroundNamed | None
                           ) -> float | None:
    """The floor (model units, :meth:`ColumnSolver.traffic_floor`) from the least traffic
    the second process proved, if it arrived."""
    bits = _traffic_bound_arrived(background)
    return None if bits is None else cs.traffic_floor(bits)


def _wait_for_named(background: BackgroundNamed, stop: Stop) -> None:
    """Wait for the second process's first mapping while the deadline allows (never
    after a stop request): the answer of a search that found none."""
    while background.best() is None and stop.reason != INTERRUPTED:
        left = stop.remaining_s()
        if left is not None and left <= 0:
            break
        if not background.alive():
            break
        time.sleep(0.02)


def _model_upper(problem: Problem, named: Result | None, scale: float) -> float | None:
    """The named incumbent's value in model units plus the objective constant,
    exact in integers where energy counts (its memory fJ, not the pJ total)."""
    if named is None or named.cost is None:
        return None
    from stems_opt.formulation.data import objective_constant, objective_weights

    if problem.objective is Objective.TRAFFIC:
        return round(named.objective_value * scale)
    a, b = objective_weights(problem)
    return a * named.cost.memory_energy_fj + b * named.cost.latency_cycles + \
        objective_constant(problem)


def _scale(problem: Problem) -> float:
    """Model units per objective unit: fJ per pJ for energy, else 1 (bits, cycles,
    and the EDP search's weighted sums)."""
    return 1000.0 if problem.objective is Objective.ENERGY else 1.0


def _quick_bound(problem: Problem) -> float:
    """A lower bound in model units (objective constant excluded) that needs no
    search: the compulsory traffic, at the cheaper DRAM rate for energy (times
    the energy weight), plus the least latency
    (:func:`~stems_opt.cost.latency.latency_floor_cycles`, times
    the latency weight)."""
    bits = compulsory_traffic_bits(problem.network)
    if problem.objective is Objective.TRAFFIC:
        return float(bits)
    from stems_opt.cost.energy import EnergyRates
    from stems_opt.cost.latency import latency_floor_cycles
    from stems_opt.formulation.data import objective_weights

    rates = EnergyRates.of(problem.hardware)  # the rates alone: no need for the whole context
    energy_w, latency_w = objective_weights(problem)
    latency = latency_floor_cycles(problem.network, problem.hardware) if latency_w else 0
    return float(bits) * min(rates.read_fj_per_bit, rates.write_fj_per_bit) * energy_w + \
        float(latency) * latency_w


def check_solver(solver: str) -> None:
    """Raise :class:`StemsInputError` unless ``solver`` is ``cpsat``, ``highs`` or an
    installed ``pyomo:NAME``."""
    from stems_opt.formulation.pyomo_backend import PREFIX, check_available

    if solver.startswith(PREFIX):
        check_available(solver)
    elif solver not in EXACT_SOLVERS:
        raise StemsInputError(Issue(f"unknown solver {solver!r} (one of "
                                    f"{', '.join(EXACT_SOLVERS)}, or pyomo:NAME for a MILP "
                                    "solver Pyomo drives)", field="solver"))


def _backend(solver: str) -> Callable[..., object]:
    from stems_opt.formulation.pyomo_backend import PREFIX, pyomo_backend

    if solver.startswith(PREFIX):
        return pyomo_backend(solver)
    if solver == "cpsat":
        from stems_opt.formulation.cpsat import solve_cpsat

        return solve_cpsat
    from stems_opt.formulation.highs import solve_highs

    return solve_highs


def solve_exact(problem: Problem, solver: str = "cpsat", time_limit_s: float | None = None,
                threads: int | None = None, seed: int = 0, warm_start: bool = True,
                max_frames: int | None = MAX_FRAMES,
                max_options_per_frame: int | None = MAX_OPTIONS_PER_FRAME,
                stop: Stop | None = None) -> Result:
    """Solve the joint MIP to a proven optimum (or the best mapping, bound and gap).

    Steps: an incumbent from the named schedules (warm start and upper
    bound); frame lower bounds and a shortest-path bound over segment
    boundaries, which drop every frame that cannot be part of a strictly
    better mapping; the MIP over the frames left (plus the incumbent's);
    the answer re-checked by :func:`~stems_opt.feasibility.check` and re-scored
    by :func:`~stems_opt.cost.evaluation.evaluate`. The solver's objective must
    equal the cost model's, or this raises ``AssertionError``.
    """
    from stems_opt.formulation.backend import SolveOptions
    from stems_opt.formulation.data import build_model_data
    from stems_opt.formulation.model import build_linear_model, decode, encode_hint

    check_solver(solver)
    start = time.perf_counter()
    objective = problem.objective
    scale = _scale(problem)
    named = _incumbent(problem) if warm_start else None
    ub = _model_upper(problem, named, scale)
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
    opts = SolveOptions(time_limit_s=remaining, threads=threads, seed=seed, stop=stop)
    ans = _backend(solver)(lm, opts, hint)
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
    violations, cost = check_and_score(problem, mapping)
    assert not violations and cost is not None, \
        f"solver returned an invalid mapping: {violations}"
    value = cost.objective_value(objective.value, problem.weights)
    mip_value = (ans.objective + data.constant) / scale
    assert _same(mip_value, value), f"MIP objective {mip_value} != cost model {value}"
    mip_bound = ans.objective if ans.status == "optimal" else ans.bound
    bound = _global_bound(data, mip_bound)
    bound = None if bound is None else min(value, (bound + data.constant) / scale)
    stats.update(excluded_bound=data.excluded_bound / scale, dp_bound=data.lower_bound / scale)
    status = SolveStatus.OPTIMAL if bound is not None and bound >= value else \
        SolveStatus.FEASIBLE
    gap = 0.0 if status is SolveStatus.OPTIMAL else relative_gap(value, bound)
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


def _with_bound(named: Result, solver: str, bound: float | None, constant: float, scale: float,
                runtime: float, build_s: float, stats: dict[str, float], msg: str) -> Result:
    b = None if bound is None else min((bound + constant) / scale, named.objective_value)
    gap = relative_gap(named.objective_value, b)
    status = SolveStatus.OPTIMAL if gap == 0.0 else SolveStatus.FEASIBLE
    return Result(status, solver, named.objective, mapping=named.mapping, cost=named.cost,
                  objective_value=named.objective_value, bound=b, gap=gap, runtime_s=runtime,
                  build_s=build_s, stats=stats, message=msg)


SOLVERS: dict[str, Callable[..., Result]] = {name: solve_columns for name in EXACT_SOLVERS}
METHODS: dict[str, Callable[..., Result]] = {"columns": solve_columns, "monolithic": solve_exact}


def solve(problem: Problem, solver: str = "cpsat", time_limit_s: float | None = None,
          threads: int | None = None, seed: int = 0, warm_start: bool = True,
          method: str = "columns", max_frames: int | None = MAX_FRAMES,
          max_options_per_frame: int | None = MAX_OPTIONS_PER_FRAME,
          stop: Stop | None = None, lower_bound: float | None = None,
          mappings: Sequence[Mapping] = (),
          on_incumbent: Callable[[float, float], None] | None = None,
          energy_seed: bool = True) -> Result:
    """Solve ``problem`` with ``solver`` (``cpsat``, ``highs`` or ``pyomo:NAME``).

    ``method`` is ``columns`` (:func:`solve_columns`, the default: segment
    columns priced lazily, a small master MIP) or ``monolithic``
    (:func:`solve_exact`: one MIP over every frame and option, warm-started
    from the named schedules; ``max_frames`` and ``max_options_per_frame``
    cap it, frames left out are covered by their bound). Both are exact.

    ``time_limit_s`` bounds the wall-clock time of the whole call (plus a
    small margin, see ``docs/solver.md``). ``stop`` lets the caller end the
    search early from another thread or a signal handler
    (:meth:`stems_opt.stopping.Stop.request`); the answer is then the best
    mapping found, with its bound and gap. ``lower_bound`` and ``mappings``
    (method ``columns`` only) are a proven bound and mappings known from
    elsewhere, ``on_incumbent`` a callback for each better mapping (see
    :func:`solve_columns`). With ``energy_seed`` the latency objective (method
    ``columns``) first solves for energy and seeds the latency search with the
    energy optimum (:mod:`stems_opt.latency_seed`).
    """
    if problem.objective is Objective.LATENCY and energy_seed and method == "columns":
        from stems_opt.latency_seed import solve_latency

        return solve_latency(problem, functools.partial(solve, energy_seed=False),
                             _stop_for(stop, time_limit_s), mappings, solver=solver,
                             threads=threads, seed=seed, warm_start=warm_start, method=method,
                             max_frames=max_frames, max_options_per_frame=max_options_per_frame,
                             lower_bound=lower_bound, on_incumbent=on_incumbent)
    if problem.objective is Objective.EDP and problem.weights is None:
        from stems_opt.edp import solve_edp

        return solve_edp(problem, solve, mappings, solver=solver, time_limit_s=time_limit_s,
                         threads=threads, seed=seed, warm_start=warm_start, method=method,
                         max_frames=max_frames, max_options_per_frame=max_options_per_frame,
                         stop=_stop_for(stop, time_limit_s))
    extra: dict[str, object] = {}
    if lower_bound is not None or mappings or on_incumbent is not None:
        if method != "columns":
            raise StemsInputError(Issue("a lower bound, start mappings or an incumbent "
                                        "callback need method 'columns'", field="method"))
        extra = {"lower_bound": lower_bound, "mappings": tuple(mappings),
                 "on_incumbent": on_incumbent}
    check_solver(solver)
    if method not in METHODS:
        raise StemsInputError(Issue(f"unknown method {method!r} (one of "
                                    f"{', '.join(METHODS)})", field="method"))
    return METHODS[method](problem, solver=solver, time_limit_s=time_limit_s, threads=threads,
                           seed=seed, warm_start=warm_start, max_frames=max_frames,
                           max_options_per_frame=max_options_per_frame, stop=stop, **extra)


MODEL_SUFFIXES = (".lp", ".mps")


def write_model(problem: Problem, path: str, warm_start: bool = True,
                max_frames: int | None = MAX_FRAMES,
                max_options_per_frame: int | None = MAX_OPTIONS_PER_FRAME) -> dict[str, float]:
    """Write the monolithic MIP of ``problem`` to an ``.lp`` or ``.mps`` file.

    It is the model ``method="monolithic"`` solves, built the same way
    (frames pruned by the best named schedule's value when ``warm_start``).
    All variables are binary. Its objective is in bits (traffic), fJ
    (energy) or cycles (latency) and leaves out a constant no decision changes: the optimum is
    ``(MIP objective + constant) / scale`` with the ``constant`` and ``scale``
    returned. The file is written next to ``path`` and renamed over it, so a
    failure leaves no half-written file.
    """
    import os
    import tempfile
    from pathlib import Path

    from stems_opt.formulation.data import build_model_data
    from stems_opt.formulation.highs import write_highs
    from stems_opt.formulation.model import build_linear_model

    target = Path(path)
    if problem.objective is Objective.EDP and problem.weights is None:
        raise StemsInputError(Issue("the EDP objective is not linear: it is solved as a "
                                    "series of weighted MIPs, so no one model can be written; "
                                    "write the traffic, energy or latency model instead",
                                    field="write-model"))
    if target.suffix.lower() not in MODEL_SUFFIXES:
        raise StemsInputError(Issue("must end in .lp or .mps", file=str(path),
                                    field="write-model"))
    scale = _scale(problem)
    named = _incumbent(problem) if warm_start else None
    ub = _model_upper(problem, named, scale)
    data = build_model_data(problem, upper_bound=ub,
                            required=_frame_keys(problem, named.mapping) if named else (),
                            max_frames=max_frames, max_options_per_frame=max_options_per_frame)
    lm, _ = build_linear_model(data)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                               suffix=target.suffix.lower())
    os.close(fd)
    try:
        write_highs(lm, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise StemsInputError(Issue(f"cannot be written: {exc}", file=str(path))) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return {"variables": len(lm.names), "constraints": len(lm.rows),
            "constant": data.constant, "scale": scale}


def lower_bound_bits(problem: Problem) -> int:
    """The compulsory traffic (see :func:`stems_opt.cost.traffic.compulsory_traffic_bits`)."""
    return compulsory_traffic_bits(problem.network)


__all__ = ["EXACT_SOLVERS", "METHODS", "SOLVERS", "check_solver", "explain_infeasible",
           "lower_bound_bits", "solve", "solve_columns", "solve_exact", "unfit_layers",
           "write_model"]
