"""Columns built lazily (``stems_opt/formulation/columns.py``): intervals opened by
length within a column budget, the others bounded apart.

* The cheapest choices summed from per-layer parts equal
  :func:`~stems_opt.formulation.data.cheapest_split` on every interval.
* With only one-layer intervals opened up front, the search still proves the
  brute-force optimum (it opens longer intervals when the bound on the
  unopened ones is below its answer), on hand-picked and random problems.
* :meth:`ColumnSolver.excluded_bound` is never above the best mapping that
  uses an interval not opened (brute force), and equals it where the buffer
  does not bind (so inflating it by one bit fails the test).
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stems_opt.formulation import column_base
from stems_opt.formulation.backend import SolveOptions
from stems_opt.formulation.columns import ColumnSolver
from stems_opt.formulation.data import cheapest_split
from stems_opt.io import load_instance
from stems_opt.mapping import Order
from stems_opt.network import Axis
from stems_opt.problem import Objective, Problem
from stems_opt.solvers import _backend, solve

sys.path.insert(0, str(Path(__file__).resolve().parent))
import brute_force as bf
from test_optimizer import (
    CASES,
    RANDOM_SETTINGS,
    UNLIMITED,
    assert_optimal,
    case_frontiers,
    make_problem,
    random_case,
)

ROOT = Path(__file__).resolve().parent.parent


def _solver(problem: Problem) -> ColumnSolver:
    return ColumnSolver(problem, _backend("cpsat"), SolveOptions(threads=1))


@pytest.mark.parametrize("instance,bits", [("tiny_residual", None), ("tiny_residual", 1000),
                                           ("tiny_chain", 900), ("red_lif_1mb", None)])
def test_cheapest_split_from_layer_parts(instance: str, bits: int | None) -> None:
    """Every interval and axis: the per-layer sums equal ``cheapest_split``. The small
    buffers make some tensors too large to stay whole, so they are written when read
    outside (dropping the ``last consumer > last`` test fails on them)."""
    problem = load_instance(ROOT / "instances" / f"{instance}.yaml")
    if bits is not None:
        gb = replace(problem.hardware.global_buffer, capacity_bits=bits)
        problem = replace(problem, hardware=replace(problem.hardware, global_buffer=gb))
    cs = _solver(problem)
    L = len(problem.network.layers)
    T = problem.network.timesteps
    assert bits is None or len(cs.ctx.whole_candidates) < L, "some tensor must not stay whole"
    for first in range(L):
        for last in range(first, L):
            for axis in (Axis.OY, Axis.OX):
                spec = (first, last, T, axis, 1, Order.TIME_OUTER)
                assert cs._cheapest_split(first, last, axis) == cheapest_split(cs.ctx, spec)


def _one_layer_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Open only one-layer intervals up front (a budget of one column)."""
    monkeypatch.setattr(column_base, "COLUMN_BUDGET", 1)


@pytest.mark.parametrize("objective", [Objective.TRAFFIC, Objective.ENERGY],
                         ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_lazy_opening_keeps_the_optimum(case: str, objective: Objective,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand-picked buffer-bound cases of tests/test_optimizer.py, with one-layer
    intervals opened first: the same brute-force optimum, proven. (``open_more``
    returning False, or ``excluded_bound`` returning inf, fails some of them: the
    optimum of ``chain_T4`` at 384 bits fuses both layers.)"""
    _one_layer_first(monkeypatch)
    network, ku, size = CASES[case]
    frontiers, space = case_frontiers(case)
    point = bf.optimum_at(frontiers[objective], size)
    p = make_problem(network, size, ku, objective)
    cs = _solver(p)
    assert cs.open_len == 1
    assert_optimal(p, point, space)


def test_the_fused_optimum_needs_a_longer_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """``chain_T4`` at 384 bits: its optimum is one two-layer segment, so a search that
    never opened two-layer intervals could not find it."""
    _one_layer_first(monkeypatch)
    network, ku, size = CASES["chain_T4"]
    r = solve(make_problem(network, size, ku), threads=1)
    assert r.status.value == "optimal"
    assert any(len(s.layers) == 2 for s in r.mapping.segments)


@settings(**RANDOM_SETTINGS)
@given(st.data())
def test_random_tiny_problems_opened_lazily(data: st.DataObject) -> None:
    """Random tiny problems (tests/test_optimizer.py) with budgets of a few columns:
    one-layer intervals first, the budget's lengths opened after the dive's first
    pass (three-layer networks), the rest when the proof needs them."""
    p, point, space = random_case(data)
    budget = data.draw(st.sampled_from([1, 6, 12]), label="column budget")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(column_base, "COLUMN_BUDGET", budget)
        assert_optimal(p, point, space)


@functools.cache
def _bests_through_long(case: str, size: int, longest_open: int) -> tuple[float, float]:
    """Brute force: the least traffic and the least memory energy (model units)
    of a mapping of ``case`` fitting ``size`` bits with a segment longer than
    ``longest_open`` layers (one walk serves both objectives)."""
    network, ku, _ = CASES[case]
    _, space = case_frontiers(case)
    problem = make_problem(network, size, ku)
    scorer = bf.SegmentScorer(problem, latency=False)
    traffic = energy = math.inf
    for runs, idx in space.valid_walk():
        if max(len(run) for run in runs) <= longest_open:
            continue
        score = scorer.mapping(space, runs, idx)
        if score[2] <= problem.hardware.gb_capacity_bits:
            traffic, energy = min(traffic, score[0]), min(energy, score[1])
    return traffic, energy


def _best_through_long(case: str, problem: Problem, longest_open: int) -> float:
    """:func:`_bests_through_long` for ``problem``'s objective and buffer."""
    bests = _bests_through_long(case, problem.hardware.gb_capacity_bits, longest_open)
    return bests[0 if problem.objective is Objective.TRAFFIC else 1]


@pytest.mark.parametrize("objective", [Objective.TRAFFIC, Objective.ENERGY],
                         ids=lambda o: o.value)
@pytest.mark.parametrize("case", ["chain_T4", "residual_T1", "ann_snn_reset_T2"])
def test_excluded_bound_never_above_mappings_through_unopened_intervals(
        case: str, objective: Objective, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the cheap bounds, after tightening every opened column, and after a solve
    with no opening: never above the brute-force best through an unopened interval."""
    _one_layer_first(monkeypatch)
    network, ku, size = CASES[case]
    p = make_problem(network, size, ku, objective)
    best = _best_through_long(case, p, 1)
    cs = _solver(p)
    assert cs.excluded_bound(fresh=True) <= best
    for col in cs.columns:
        cs.tighten(col)
    assert cs.excluded_bound(fresh=True) <= best
    monkeypatch.setattr(ColumnSolver, "open_more", lambda self: False)
    cs.solve()
    assert cs.excluded_bound(fresh=True) <= best


def test_excluded_bound_is_tight_where_the_buffer_does_not_bind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``chain_T4`` with an unlimited buffer: fusing both layers with everything on chip
    moves each weight once, the input once, the output once and the streamed state
    in and out once, which is exactly the per-layer floor, so the bound equals the
    brute-force best (inflating the floor by one bit makes this fail)."""
    _one_layer_first(monkeypatch)
    network, ku, _ = CASES["chain_T4"]
    p = make_problem(network, UNLIMITED, ku)
    cs = _solver(p)
    assert cs.open_len == 1 < cs.max_len
    assert cs.excluded_bound(fresh=True) == _best_through_long("chain_T4", p, 1)


def test_all_open_when_the_budget_allows() -> None:
    """Small networks open every interval up front: no bound apart, nothing to open."""
    cs = _solver(load_instance(ROOT / "instances" / "sew_resnet18_1mb.yaml"))
    assert cs.open_len == cs.max_len
    assert cs.excluded_bound() == math.inf
    assert not cs.open_more()


def test_excluded_bound_counts_operand_energy(monkeypatch: pytest.MonkeyPatch) -> None:
    """``chain_T4`` with an unlimited buffer and the energy objective: fusing both
    layers in one tile and one sub-tile moves every weight, input row, output and
    state once between the GB and the array, which is each layer's one-tile operand
    floor (``layer_operand_floors_fj``), so the bound equals the brute-force best.
    Dropping the operand floor from ``_layer_floor``, or adding 1 fJ to it, makes
    this fail."""
    _one_layer_first(monkeypatch)
    network, ku, _ = CASES["chain_T4"]
    p = make_problem(network, UNLIMITED, ku, Objective.ENERGY)
    cs = _solver(p)
    assert cs.open_len == 1 < cs.max_len
    assert cs.excluded_bound(fresh=True) == _best_through_long("chain_T4", p, 1)


def _model_units(p: Problem, value: float) -> float:
    """An optimum in objective units (bits, pJ) in the search's model units (bits, fJ
    without the objective's constant)."""
    from stems_opt.formulation.data import objective_constant

    if p.objective is Objective.TRAFFIC:
        return value
    return value * 1000 - objective_constant(p)


@pytest.mark.parametrize("objective", [Objective.TRAFFIC, Objective.ENERGY],
                         ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_chain_floor_never_above_the_optimum(case: str, objective: Objective) -> None:
    """The bound every search starts from (``chain_floor``, before any column is
    priced) is at most the proven optimum of the hand-picked buffer-bound cases
    (proved equal to brute force in tests/test_optimizer.py)."""
    network, ku, size = CASES[case]
    p = make_problem(network, size, ku, objective)
    r = solve(p)
    assert r.gap == 0.0
    assert _solver(p).chain_floor() <= _model_units(p, r.objective_value) * (1 + 1e-12)


@pytest.mark.parametrize(("instance", "objective"), [
    ("sew_resnet18_1mb", Objective.TRAFFIC), ("sew_resnet18_1mb", Objective.ENERGY),
    ("sew_resnet152_1mb", Objective.TRAFFIC)])
def test_chain_floor_never_above_a_known_optimum(instance: str, objective: Objective
                                                 ) -> None:
    """The same on real networks, against the optima their instance files record."""
    p = load_instance(ROOT / "instances" / f"{instance}.yaml").with_objective(objective)
    known = next(k.value for k in p.known_optima if k.objective is objective)
    floor = _solver(p).chain_floor()
    assert 0 < floor <= _model_units(p, known) * (1 + 1e-12)


@pytest.mark.parametrize("objective", [Objective.TRAFFIC, Objective.ENERGY],
                         ids=lambda o: o.value)
def test_chain_floor_is_tight_where_the_buffer_does_not_bind(objective: Objective) -> None:
    """``chain_T4`` with an unlimited buffer: both layers fused in one tile move every
    operand once (see the two tests above), which is each layer's floor, so the
    search's first bound is the optimum itself (adding one bit or 1 fJ to
    ``chain_floor`` fails this: the optimum comes back from pJ within 0.5 fJ)."""
    network, ku, _ = CASES["chain_T4"]
    p = make_problem(network, UNLIMITED, ku, objective)
    r = solve(p)
    assert r.gap == 0.0
    assert _solver(p).chain_floor() == pytest.approx(_model_units(p, r.objective_value),
                                                      rel=0.0, abs=0.5)


def test_traffic_floor_is_tight_where_the_buffer_does_not_bind() -> None:
    """``chain_T4`` with an unlimited buffer, energy: the least traffic moves each bit
    once, read or written at its own DRAM rate, so the least traffic at the cheaper
    rate plus the operand floors is at most the optimum, which the chain floor
    reaches (charging the least traffic at the dearer rate would exceed it: the
    mutation ``max`` for ``min`` fails this); traffic: the least traffic itself."""
    network, ku, _ = CASES["chain_T4"]
    p = make_problem(network, UNLIMITED, ku, Objective.ENERGY)
    least = solve(p.with_objective(Objective.TRAFFIC)).objective_value
    best = _model_units(p, solve(p).objective_value)
    cs = _solver(p)
    assert cs.traffic_floor(least) <= best + 0.5
    assert cs.traffic_floor(least) == pytest.approx(best, rel=0.0, abs=0.5)
    traffic = _solver(p.with_objective(Objective.TRAFFIC))
    assert traffic.traffic_floor(least) == least


@pytest.mark.parametrize("case", ["chain_T4", "conv_pool_T2_chunks", "residual_T1"])
def test_traffic_floor_with_loop_nests_never_above_the_optimum(case: str) -> None:
    """With loop nests, at the hand-picked cases' buffers: the floor from the proven
    least traffic is at most the proven least energy."""
    from test_bounds import nest_problem

    network, ku, size = CASES[case]
    p = nest_problem(network, size, ku)
    least = solve(p.with_objective(Objective.TRAFFIC))
    best = solve(p)
    assert least.gap == 0.0 and best.gap == 0.0
    assert _solver(p).traffic_floor(least.objective_value) <= \
        _model_units(p, best.objective_value) * (1 + 1e-12)


@pytest.mark.xdist_group("red_lif_nests")
def test_traffic_floor_lifts_red_lif_and_stays_below_its_optimum() -> None:
    """RED-LIF at 1 MB with loop nests: its least traffic (197,005,056 bits, 88.5 Mbit
    above the compulsory) at the cheaper DRAM rate plus the operand floors lies above
    the chain floor (24,294.1 uJ) and below the proven least energy (25,616.6 uJ),
    both recorded in the instance file. (Leaving the operand floors out drops it below
    the chain floor: that mutation fails the first assertion.)"""
    p = load_instance(ROOT / "instances" / "red_lif_1mb.yaml").with_objective(
        Objective.ENERGY)
    known = {k.objective: k.value for k in p.known_optima}
    cs = _solver(p)
    floor = cs.traffic_floor(known[Objective.TRAFFIC])
    assert floor > cs.chain_floor() * 1.03
    assert floor <= _model_units(p, known[Objective.ENERGY])


@functools.cache
def _nest_best_through_long(case: str, size: int | None = None) -> float:
    """Brute force with loop nests (``tests/test_bounds.py::nest_problem``): the
    least memory energy (model units) of a mapping of ``case`` at its buffer (or
    ``size`` bits) with a segment of more than one layer."""
    from test_bounds import nest_problem

    network, ku, case_size = CASES[case]
    size = size or case_size
    _, space = case_frontiers(case)
    problem = nest_problem(network, size, ku)
    scorer = bf.SegmentScorer(problem, latency=False)
    best = math.inf
    for runs, idx in space.valid_walk():
        if max(len(run) for run in runs) > 1:
            score = scorer.mapping(space, runs, idx)
            if score[2] <= problem.hardware.gb_capacity_bits:
                best = min(best, score[1])
    return best


@pytest.mark.parametrize("case", ["chain_T4", "residual_T1", "ann_snn_reset_T2"])
def test_excluded_bound_with_loop_nests_never_above_brute_force(
        case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With loop nests (each layer's floor the larger of the coarse one and the
    partition floor, ``layer_partition_floor_fj``): at the cheap bounds and after
    tightening every opened column, never above the brute-force best through an
    unopened interval; with an unlimited buffer, equal to it on ``chain_T4`` (one
    tile, each layer's least nests, where the partition floor equals the coarse
    one). Adding 1 fJ to the partition floor makes this fail."""
    from test_bounds import nest_problem

    _one_layer_first(monkeypatch)
    network, ku, size = CASES[case]
    cs = _solver(nest_problem(network, size, ku))
    best = _nest_best_through_long(case)
    assert cs.excluded_bound(fresh=True) <= best
    for col in cs.columns:
        cs.tighten(col)
    assert cs.excluded_bound(fresh=True) <= best
    if case == "chain_T4":
        cs = _solver(nest_problem(network, UNLIMITED, ku))
        assert cs.open_len == 1 < cs.max_len
        assert cs.excluded_bound(fresh=True) == _nest_best_through_long(case, UNLIMITED)
