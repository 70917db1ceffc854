"""The primal side of the column solver: greedy repair, the dive and named seeds.

None of these proves anything; what must hold is that every segment they
offer fits the buffer and is worth exactly what the cost model says, that a
repaired segment is never better than the frame's proven local optimum
(else one of the two is wrong), and that seeding a mapping's segments gives
an incumbent at most that mapping's value.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stems_opt.cost.evaluation import evaluate
from stems_opt.cost.traffic import SegmentContext
from stems_opt.feasibility import check
from stems_opt.formulation.backend import SolveOptions
from stems_opt.formulation.columns import ColumnSolver
from stems_opt.formulation.cpsat import solve_cpsat
from stems_opt.formulation.data import objective_constant
from stems_opt.formulation.primal import repair, segment_value
from stems_opt.heuristics import named_schedule
from stems_opt.incumbents import FALLBACK_SCHEDULES
from stems_opt.mapping import Placement
from stems_opt.problem import Objective, Problem
from stems_opt.solvers import solve

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_optimizer import CASES, RANDOM_SETTINGS, make_problem, random_case  # noqa: E402

OBJECTIVES = [Objective.TRAFFIC, Objective.ENERGY]


def solver_for(p: Problem) -> ColumnSolver:
    return ColumnSolver(p, solve_cpsat, SolveOptions(threads=1, seed=0))


def bundled(network: str, size: str, objective: Objective) -> Problem:
    """A bundled network (its 1 MB instance's layers) on the edge accelerator with a
    ``size`` global buffer."""
    from stems_opt.io import load_hardware, load_instance

    base = load_instance(ROOT / "instances" / f"{network}_1mb.yaml")
    hw = load_hardware(ROOT / "models" / "hardware" / f"edge_{size}.yaml")
    return Problem(base.network, hw, objective, f"{network}_{size}", (),
                   base.max_segment_layers)


def model_value(p: Problem, mapping) -> float:
    """The cost model's objective in model units (bits, or fJ without the constant)."""
    cost = evaluate(p, mapping)
    if p.objective is Objective.ENERGY:
        return cost.memory_energy_fj
    return cost.traffic_bits


def check_repair(p: Problem) -> int:
    """Every frame of every column repaired from its cheapest choices: the segment
    fits, is scored at its value by the cost model, and is worth at least the
    frame's proven local optimum; nothing is found where the MIP finds nothing.
    Returns how many frames were repaired."""
    cs = solver_for(p)
    repaired = 0
    for col in cs.columns:
        budget = cs._sig_parts(col)[0]
        if budget <= 0:
            continue
        for spec in cs.specs[(col.first, col.last)]:
            seg, sctx = cs._cheapest_segment(col, spec, fine=not cs.energy)
            got = repair(p.network, seg, sctx, cs.ctx.capacity_bits, cs.unit_rates,
                         cs.ctx.k_unroll)
            frame = cs._frame(spec)
            restricted = None if frame is None else cs._restrict(frame, col.sig)
            local = None if restricted is None else cs._local(*restricted, 60.0)
            if got is None or frame is None:  # (a frame dropped by an exact reduction)
                continue
            out, value = got
            assert local is not None, ("repair found a segment the frame MIP says cannot "
                                       "exist", col.sig, spec)
            exact, peak = segment_value(p.network, out, out_context(out, sctx), cs.unit_rates)
            assert peak <= p.hardware.gb_capacity_bits and exact == value
            assert value >= local[0], (col.sig, spec, value, local[0])
            repaired += 1
    return repaired


def out_context(seg, sctx):
    from stems_opt.cost.traffic import SegmentContext
    from stems_opt.mapping import Placement

    dram = {X for X, pl in seg.activations.items() if pl is Placement.DRAM}
    return SegmentContext(sctx.whole, sctx.written | dram)


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_repair_fits_is_scored_exactly_and_never_beats_the_frame_optimum(
        case: str, objective: Objective) -> None:
    network, ku, size = CASES[case]
    assert check_repair(make_problem(network, size, ku, objective)) > 0


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_dive_mapping_is_valid_and_scored_exactly(case: str, objective: Objective) -> None:
    network, ku, size = CASES[case]
    p = make_problem(network, size, ku, objective)
    cs = solver_for(p)
    cs.dive(None)
    found = cs.incumbent()
    assert found is not None, "the dive ends with a mapping on every hand-picked case"
    mapping, value = cs.mapping_of(found[0]), found[1]
    assert not check(p, mapping)
    assert value == pytest.approx(model_value(p, mapping), rel=1e-12)


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_seeded_named_schedules_bound_the_incumbent(case: str, objective: Objective) -> None:
    """Seeding a named schedule gives an incumbent at most its value, scored exactly."""
    network, ku, size = CASES[case]
    p = make_problem(network, size, ku, objective)
    cs = solver_for(p)
    best = None
    for name in FALLBACK_SCHEDULES:
        r = named_schedule(p, name)
        cs.seed(r.mapping)
        if r.feasible:
            v = model_value(p, r.mapping)
            best = v if best is None else min(best, v)
    found = cs.incumbent()
    if best is not None:
        assert found is not None and found[1] <= best * (1 + 1e-12)
    if found is not None:
        mapping, value = cs.mapping_of(found[0]), found[1]
        assert not check(p, mapping)
        assert value == pytest.approx(model_value(p, mapping), rel=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_time_limited_solve_never_worse_than_the_best_named(case: str) -> None:
    network, ku, size = CASES[case]
    p = make_problem(network, size, ku)
    named = [named_schedule(p, n) for n in FALLBACK_SCHEDULES]
    feasible = [r.objective_value for r in named if r.feasible]
    r = solve(p, time_limit_s=30.0)
    assert r.mapping is not None
    if feasible:
        assert r.objective_value <= min(feasible)
    assert objective_constant(p) == 0.0


@pytest.mark.parametrize("case", list(CASES))
def test_named_scored_first_bound_the_answer_with_no_search_time(
        case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where scoring them is cheap, the named schedules are scored in the search's own
    process before the search and seed it: with no time left for the search at all,
    the answer is still at most every named schedule's value, and it is the search's
    own incumbent (the seeded segments), not the fallback substituted at the end.

    Mutation that fails it (every case): dropping the seed (``_hook`` without the
    named mappings) leaves the search with no mapping, so the fallback is needed.
    """
    import stems_opt.solvers as solvers
    from stems_opt.incumbents import in_process

    network, ku, size = CASES[case]
    p = make_problem(network, size, ku)
    assert in_process(p, 20.0)  # (tiny networks: milliseconds)
    named = [r.objective_value for r in (named_schedule(p, n) for n in FALLBACK_SCHEDULES)
             if r.feasible]
    # No search at all: no dive, and the exact loop's share is over at once.
    monkeypatch.setattr(solvers, "_search_share", lambda stop, layers, share: 0.0)
    monkeypatch.setattr(ColumnSolver, "dive", lambda self, *args: None)
    r = solve(p, time_limit_s=20.0)
    if not named:
        return
    assert r.mapping is not None and not check(p, r.mapping)
    assert r.objective_value <= min(named) * (1 + 1e-12), (r.objective_value, named)
    assert "incumbent" not in r.stats, r.stats  # (set only when the fallback is taken)


def test_named_in_process_only_where_cheap_for_the_limit() -> None:
    """The policy of :func:`stems_opt.incumbents.in_process`: SEW-ResNet-18 (1,025
    output rows, about 2.6 s) in process under 10 s but not under 5 s (too dear) nor
    under 60 s or none (the second process delivers in time); SEW-ResNet-152 (3,990
    rows, about 10 s) never."""
    from stems_opt.incumbents import in_process, named_cost_s
    from stems_opt.io import load_instance

    sew18 = load_instance(ROOT / "instances" / "sew_resnet18_1mb.yaml")
    sew152 = load_instance(ROOT / "instances" / "sew_resnet152_1mb.yaml")
    assert named_cost_s(sew18) == pytest.approx(0.0025 * 1025)
    assert in_process(sew18, 10.0) and not in_process(sew18, 5.0)
    assert not in_process(sew18, 60.0) and not in_process(sew18, None)
    assert not in_process(sew152, 10.0) and not in_process(sew152, 30.0)


def test_named_in_process_budget_hands_the_rest_to_the_second_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Within the budget every schedule is scored here. When ST-F and TB-F are predicted
    (at ``FUSED_PER_LAYERWISE`` times TB-LBL's time, here made huge) to overrun it, only
    TB-LBL is, and they are left for the second process; with no budget, or after a
    stop request, all are (a schedule under way is abandoned at its next fill)."""
    import stems_opt.incumbents as incumbents
    from stems_opt.incumbents import SCORING_ORDER, score_in_process
    from stems_opt.stopping import Stop

    network, ku, size = CASES["chain_T4"]
    p = make_problem(network, size, ku)
    feasible = [n for n in SCORING_ORDER if named_schedule(p, n).feasible]
    found, rest = score_in_process(p, Stop(), 100.0)
    assert rest == () and [r.solver for r in found] == [f"named:{n}" for n in feasible]
    monkeypatch.setattr(incumbents, "FUSED_PER_LAYERWISE", 1e12)
    found, rest = score_in_process(p, Stop(), 100.0)
    assert rest == SCORING_ORDER[1:]
    assert [r.solver for r in found] == (["named:TB-LBL"] if "TB-LBL" in feasible else [])
    assert score_in_process(p, Stop(), 0.0) == ([], SCORING_ORDER)
    stopped = Stop()
    stopped.request()
    assert score_in_process(p, stopped, 100.0) == ([], SCORING_ORDER)


def check_repair_all(p: Problem) -> None:
    """Every plain column given :meth:`repair_all`: its segment fits, is scored exactly
    in the column's context, and is never below the column's exact value (priced
    by the frame MIPs afterwards); nor above what the two-frame repairs found."""
    cs = solver_for(p)
    for col in cs._plain_columns():
        while cs.repair_price(col):
            pass
        sampled = col.upper
        cs.repair_all(col)
        if col.upper is None:
            continue
        assert sampled is None or col.upper <= sampled
        found, seg = col.upper, col.segment
        _, written, _, whole = cs._sig_parts(col)
        dram = {X for X, pl in seg.activations.items() if pl is Placement.DRAM}
        value, peak = segment_value(p.network, seg, SegmentContext(whole, written | dram),
                                    cs.unit_rates)
        assert peak <= cs.ctx.capacity_bits and value == found
        cs.price(col)
        assert col.exact and col.value is not None and col.value <= found


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_repair_all_fits_and_never_beats_the_column_optimum(case: str,
                                                            objective: Objective) -> None:
    network, ku, size = CASES[case]
    check_repair_all(make_problem(network, size, ku, objective))


@settings(**RANDOM_SETTINGS)
@given(st.data())
def test_repair_and_repair_all_random(data: st.DataObject) -> None:
    """:func:`check_repair` and :func:`check_repair_all` on one random problem
    (drawing it, which enumerates its whole space, costs most of the time)."""
    p, _, _ = random_case(data)
    check_repair(p)
    check_repair_all(p)


def test_repair_all_finds_red_lif_lif13_at_128_kb() -> None:
    """RED-LIF at 128 KB (optimum 1,277,660,928 bits, proven by ``stems-opt solve``,
    zero gap, in ``benchmarks/results/study_skislope.csv``) has ``lif13`` alone as a
    segment (every tensor through DRAM) worth 107,175,936 bits: the least value of
    that column (an optimal mapping's segment is at its column's optimum, as the
    column meets the rest only through its signature). Every frame repaired in
    bound order reaches it (Tb = 4, 12 tiles along OY, space outer). That frame
    was the 60th by bound, which the two-frame repairs of the sampled frames of
    least bound missed; since a sub-tile's whole input window counts in the frame
    bounds (``bounds._sub_window_rows``) its bound is its value and the least of
    the column's, so the sampled repairs find it too. Mutation: ``repair_all``
    skipping the frame of least bound (``specs[1:]``) fails this."""
    p = bundled("red_lif", "128kb", Objective.TRAFFIC)
    cs = solver_for(p)
    i = [lay.name for lay in p.network.layers].index("lif13")
    col = next(c for c in cs._plain_columns() if c.first == c.last == i)
    cs.repair_all(col)
    assert col.upper == 107_175_936
    seg = col.segment
    assert (seg.time_batch, seg.tiles, seg.axis.value, seg.order.value) == (
        4, 12, "OY", "space_outer")


def test_repair_trades_sub_tiles_for_weight_chunks_together() -> None:
    """SEW-ResNet-152 at 384 KB (energy): ``s3_b2_conv3`` alone, with the block's
    residual ``s3_b1_add`` and its input kept whole on chip and its output kept whole
    (the optimum's segment there, proven in 56 s). At ``Tb`` 4 and one tile its
    streamed weights fit only beside 14 sub-tiles (154.4 uJ); its 32 weight chunks
    fit beside 2 (92.5 uJ, the frame MIP's optimum): neither change alone saves, so
    the greedy repair found the 14 until weights and sub-tiles moved together
    (``_State.joint_moves``). Mutation: ``joint_moves`` yielding nothing fails this
    (154,410,803,200 against 92,455,690,240)."""
    from stems_opt.formulation.column_base import Signature
    from stems_opt.mapping import Axis, Order

    p = bundled("sew_resnet152", "384kb", Objective.ENERGY)
    cs = solver_for(p)
    i = [lay.name for lay in p.network.layers].index("s3_b2_conv3")
    sig = Signature((("s3_b1_add", True), ("s3_b2_conv2", True)),
                    (("s3_b2_conv3", True, False),))
    col = cs.column_of(i, i, sig)
    spec = (i, i, 4, Axis.OY, 1, Order.TIME_OUTER)
    seg, sctx = cs._cheapest_segment(col, spec, fine=True)
    got = repair(p.network, seg, sctx, cs.ctx.capacity_bits, cs.unit_rates, cs.ctx.k_unroll)
    assert got is not None
    frame = cs._frame(spec)
    local = cs._local(*cs._restrict(frame, col.sig), 60.0)
    assert got[1] == local[0]
    assert got[0].sub_tile("s3_b2_conv3") == 2
    assert got[0].weight("s3_b2_conv3").chunks == 32


def test_joint_moves_try_each_sub_tile_height_once() -> None:
    """From 14 sub-tiles of a 14-row tile, the joint moves try each smaller sub-tile
    height's fewest count: heights 2, 3, 4, 5, 7, 14 rows need ceil(14 / h) = 7, 5, 4,
    3, 2, 1 sub-tiles (6 or 13 sub-tiles have the heights of 5 and 14, more steps);
    from 5 sub-tiles of a 56-row tile, ceil(56 / h) below 5: 4 (h 14..18), 3 (h 19..27),
    2 (h 28..55), 1. Mutation: every count below ``m`` (no height filter) fails this."""
    from stems_opt.formulation.primal import _fewer_sub_tiles

    assert _fewer_sub_tiles(14, 14) == [7, 5, 4, 3, 2, 1]
    assert _fewer_sub_tiles(5, 56) == [4, 3, 2, 1]
    assert _fewer_sub_tiles(1, 56) == []
