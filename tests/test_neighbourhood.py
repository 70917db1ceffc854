"""The neighbourhood search of :mod:`stems_opt.formulation.neighbourhood`.

It proves nothing; what must hold is that every mapping it leads to is valid
and worth exactly what the cost model says, that it is never worse than the
mappings it started from (seeds and what the dive found), never better than
the proven or brute-force optimum, and that it does improve a deliberately
poor incumbent: re-solving the frame of a segment by its MIP gives at most
that frame's local optimum.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stems_opt.feasibility import check
from stems_opt.formulation.columns import ColumnSolver, Signature
from stems_opt.formulation.neighbourhood import (
    Turns,
    block_runs,
    fewest_tiles,
    frugal_segment,
    improve_column,
    neighbours,
    on_ladder,
    polish_seconds,
    spec_of,
)
from stems_opt.formulation.primal import segment_value
from stems_opt.heuristics import named_schedule
from stems_opt.incumbents import FALLBACK_SCHEDULES
from stems_opt.mapping import Mapping, Order
from stems_opt.network import Axis
from stems_opt.problem import Objective, Problem
from stems_opt.result import SolveStatus
from stems_opt.solvers import solve

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_optimizer import CASES, RANDOM_SETTINGS, make_problem, random_case  # noqa: E402
from test_primal import model_value, solver_for  # noqa: E402

OBJECTIVES = [Objective.TRAFFIC, Objective.ENERGY]
MAX_TURNS = 500


def poor_mapping(cs: ColumnSolver) -> Mapping:
    """One layer per segment, every tensor through DRAM, each segment with the choices
    that hold the least in the buffer (finest sub-tiles, weights in the most chunks,
    state spilled, halos re-read) at the fewest tiles where they fit: valid, and
    usually far from the optimum."""
    segs = []
    for i in range(len(cs.net.layers)):
        sig = Signature(tuple((X, False) for X in cs.crossing_in(i)),
                        tuple((X, False, True) for X in cs.outputs(i, i)))
        col = cs.column_of(i, i, sig)
        assert col is not None
        found = None
        for axis in cs.axes:
            for tb in sorted({s[2] for s in cs.specs[(i, i)]}, reverse=True):
                found = found or fewest_tiles(cs, col, axis, tb)
        assert found is not None, "the one-layer segments of the test cases fit"
        segs.append(frugal_segment(cs, col, *found)[0])
    return Mapping(tuple(segs)).canonical(cs.net)


def search_all(cs: ColumnSolver) -> Turns:
    """Every neighbourhood move until none is left (no time accounting)."""
    turns = Turns(cs, 0.0, None)
    for _ in range(MAX_TURNS):
        turns.turn()
        if turns.exhausted:
            break
    return turns


def assert_exact(p: Problem, cs: ColumnSolver) -> float:
    """The incumbent is a valid mapping the cost model scores at its value."""
    found = cs.incumbent()
    assert found is not None
    mapping, value = cs.mapping_of(found[0]), found[1]
    assert not check(p, mapping)
    assert value == pytest.approx(model_value(p, mapping), rel=1e-12)
    return value


def test_neighbours_of_a_frame() -> None:
    """Tile counts n +- 1..3, 2n, n/2, the other order and axis, neighbouring batches."""
    spec = (0, 1, 2, Axis.OY, 4, Order.TIME_OUTER)
    got = list(neighbours(spec, 4))
    assert [s[4] for s in got[:8]] == [5, 3, 6, 2, 7, 1, 8, 2]
    assert (0, 1, 2, Axis.OY, 4, Order.SPACE_OUTER) in got
    assert (0, 1, 2, Axis.OX, 4, Order.TIME_OUTER) in got
    assert (0, 1, 1, Axis.OY, 4, Order.TIME_OUTER) in got  # time batches 1 and 4 of T = 4
    assert (0, 1, 4, Axis.OY, 4, Order.TIME_OUTER) in got
    assert spec not in got


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_improves_a_poor_incumbent_to_its_frames_local_optima(
        case: str, objective: Objective) -> None:
    """Seed a poor mapping; re-solving each of its columns gives each at most the local
    optimum of its segment's frame (solved here by the MIP with a long limit), so the
    incumbent is at most the sum of those optima, and strictly below the poor mapping
    wherever one of its segments is not optimal in its frame."""
    network, ku, size = CASES[case]
    p = make_problem(network, size, ku, objective)
    cs = solver_for(p)
    cs.seed(poor_mapping(cs))
    found = cs.incumbent()
    assert found is not None
    chosen, poor = found
    optima = []
    for col in chosen:
        spec = spec_of(col)
        assert spec is not None
        frame = cs._frame(spec)
        restricted = None if frame is None else cs._restrict(frame, col.sig)
        local = None if restricted is None else cs._local(*restricted, 60.0)
        # An exact reduction keeps an optimum of every frame it drops options of, so
        # the frame's optimum is at most the seeded segment.
        assert local is not None and local[0] == local[1] and local[0] <= col.upper
        optima.append(local[0])
    for col in chosen:
        improve_column(cs, col)
    for col, opt in zip(chosen, optima, strict=True):
        assert col.upper <= opt
    value = assert_exact(p, cs)
    assert value <= sum(optima) * (1 + 1e-12)
    if sum(optima) < poor * (1 - 1e-12):
        assert value < poor


def test_the_poor_mapping_is_improved_on_some_case() -> None:
    """The test above is not vacuous: on the chain its poor mapping is strictly improved
    (reverting improve_column to a no-op makes this fail)."""
    network, ku, size = CASES["chain_T4"]
    p = make_problem(network, size, ku)
    cs = solver_for(p)
    cs.seed(poor_mapping(cs))
    chosen, poor = cs.incumbent()
    for col in chosen:
        improve_column(cs, col)
    assert assert_exact(p, cs) < poor


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_never_worse_than_its_seeds_nor_better_than_the_optimum(
        case: str, objective: Objective) -> None:
    """After the dive and the named schedules' seeds, every move keeps a valid incumbent
    at most the best seed and at least the proven optimum."""
    network, ku, size = CASES[case]
    p = make_problem(network, size, ku, objective)
    cs = solver_for(p)
    cs.dive(None)
    seeds = []
    for name in FALLBACK_SCHEDULES:
        r = named_schedule(p, name)
        cs.seed(r.mapping)
        if r.feasible:
            seeds.append(model_value(p, r.mapping))
    before = cs.incumbent()[1]
    assert before <= min(seeds, default=math.inf) * (1 + 1e-12)
    turns = Turns(cs, 0.0, None)
    previous = before
    for _ in range(MAX_TURNS):
        turns.turn()
        value = assert_exact(p, cs)
        assert value <= previous * (1 + 1e-12)  # never worse than before a move
        previous = value
        if turns.exhausted:
            break
    optimum = solve(p)
    assert optimum.status is SolveStatus.OPTIMAL
    assert previous >= model_value(p, optimum.mapping) * (1 - 1e-12)


@settings(**RANDOM_SETTINGS)
@given(st.data())
def test_random_never_below_the_brute_force_optimum(data: st.DataObject) -> None:
    """Random tiny problems: the poor mapping, then every move; the incumbent stays
    valid, exact, at most the poor mapping and at least the brute-force optimum."""
    p, point, _ = random_case(data)
    cs = solver_for(p)
    try:
        poor = poor_mapping(cs)
    except AssertionError:  # (a layer whose frugal choices fit nowhere: nothing to seed)
        poor = None
    if poor is not None:
        cs.seed(poor)
    before = cs.incumbent()
    search_all(cs)
    after = cs.incumbent()
    if after is None:
        return
    value = assert_exact(p, cs)
    if before is not None:
        assert value <= before[1] * (1 + 1e-12)
    assert value >= point.rank * (1 - 1e-12)


def test_block_runs_are_unions_of_consecutive_blocks() -> None:
    """Runs of two or more blocks, fewest first, within the longest segment."""
    network, ku, size = CASES["chain_T4"]
    p = make_problem(network, size, ku)
    cs = solver_for(p)
    index = {lay.name: i for i, lay in enumerate(p.network.layers)}
    blocks = [(index[b.layers[0]], index[b.layers[-1]]) for b in p.network.block_list]
    runs = block_runs(cs)
    starts = {b[0] for b in blocks}
    ends = {b[1] for b in blocks}
    for first, last in runs:
        assert first in starts and last in ends
        assert sum(first <= b[0] and b[1] <= last for b in blocks) >= 2
    assert len(runs) == len(blocks) * (len(blocks) - 1) // 2  # (a chain of 2 layers: 1)


def test_fewest_tiles_fit_and_one_fewer_does_not() -> None:
    """The frugal segment at the tile count found fits, and at the ladder's count
    before it (when there is one) it does not: the bisection finds the fewest."""
    for case in CASES:
        network, ku, size = CASES[case]
        p = make_problem(network, size, ku)
        cs = solver_for(p)
        col = cs.column_of(0, 0, Signature((), tuple((X, False, True)
                                                     for X in cs.outputs(0, 0))))
        got = fewest_tiles(cs, col, cs.axes[0], p.network.timesteps)
        if got is None:
            continue
        seg, sctx = frugal_segment(cs, col, *got)
        assert segment_value(p.network, seg, sctx, cs.unit_rates)[1] <= \
            p.hardware.gb_capacity_bits
        spec = got[0]
        fewer = [s for s in cs.specs[(0, 0)] if s[2:4] == spec[2:4] and s[5] is spec[5]
                 and on_ladder(s[4]) and s[4] < spec[4]]
        for s in fewer:
            seg, sctx = frugal_segment(cs, col, s)
            assert segment_value(p.network, seg, sctx, cs.unit_rates)[1] > \
                p.hardware.gb_capacity_bits


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.value)
def test_polish_beats_a_poor_incumbent_once(objective: Objective) -> None:
    """``Turns.polish`` (run under a short limit right after the dive) searches the
    incumbent's columns until one move makes it strictly better, then stops: on the
    chain, from the poor mapping, it returns ``True`` with a strictly better valid
    mapping scored exactly, after one improving move; with its time already past it
    does nothing. Mutations: a polish that never calls ``improve_column``, or that
    does not stop at the first improvement, fail this."""
    network, ku, size = CASES["chain_T4"]
    p = make_problem(network, size, ku, objective)
    cs = solver_for(p)
    cs.seed(poor_mapping(cs))
    poor = cs.incumbent()[1]
    assert Turns(cs, 0.0, None).polish(0.0) is False  # (no time: no move)
    assert cs.incumbent()[1] == poor
    turns = Turns(cs, 0.0, None)
    turns.thorough = False  # (the thorough pass first: the test below)
    assert turns.polish(math.inf) is True
    assert assert_exact(p, cs) < poor
    assert turns.improved == 1


@pytest.mark.parametrize("limit_s", [None, 10.0, 90.0])
def test_the_search_polishes_only_under_a_short_limit(
        limit_s: float | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a limit of at most 60 s the search polishes its incumbent once after the
    dive, within 5 % of the limit (0.5 s of 10 s) where it beats the named schedules
    already (``at_named`` false); without a limit or under a long one (whose dive is
    that of no limit) it does not. Mutation: polishing whatever the limit fails this."""
    import time

    calls: list[float] = []
    real = Turns.polish

    def spy(self: Turns, until: float) -> bool:
        calls.append(until - time.perf_counter())
        return real(self, until)

    monkeypatch.setattr(Turns, "polish", spy)
    monkeypatch.setattr(ColumnSolver, "at_named", lambda self: False)
    network, ku, size = CASES["chain_T4"]
    p = make_problem(network, size, ku, Objective.TRAFFIC)
    assert solve(p, time_limit_s=limit_s).mapping is not None
    if limit_s is not None and limit_s <= 60.0:
        (budget,) = calls
        assert 0.0 < budget <= 0.05 * limit_s
    else:
        assert calls == []


def test_polish_seconds_by_hand() -> None:
    """The polish's time under a limit with ``left`` seconds left: 5 % of it, at most 1 s;
    30 %, at most 3 s, while the incumbent is no better than the best mapping from
    elsewhere."""
    assert polish_seconds(9.0, False) == pytest.approx(0.45)  # 0.05 x 9
    assert polish_seconds(40.0, False) == 1.0  # 0.05 x 40 = 2, capped
    assert polish_seconds(9.0, True) == pytest.approx(2.7)  # 0.3 x 9
    assert polish_seconds(40.0, True) == 3.0  # 0.3 x 40 = 12, capped


def test_at_named_compares_the_incumbent_with_the_best_mapping_from_elsewhere() -> None:
    """``at_named``: the incumbent (the seeds included) is no better than
    ``named_value``'s mapping (an incumbent equal to the named schedule it came from
    has not beaten it); never without one. Mutation: the comparison reversed fails."""
    network, ku, size = CASES["chain_T4"]
    cs = solver_for(make_problem(network, size, ku))
    cs.seed(poor_mapping(cs))
    poor = cs.incumbent()[1]
    assert not cs.at_named()  # (no mapping from elsewhere)
    cs.named_value = lambda: None
    assert not cs.at_named()
    for named, expected in ((poor, True), (2 * poor, False), (poor / 2, True)):
        cs.named_value = lambda named=named: named
        assert cs.at_named() is expected, (named, poor)


def test_the_search_polishes_longer_at_the_named_schedule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a 10 s limit the search hands the polish up to 30 % of the time left while
    its incumbent is no better than the best named schedule arrived, and ``named_value``
    is that schedule's value in model units (bits, for traffic). Mutation: the search
    asking ``polish_seconds`` for the short polish whatever ``at_named`` says fails."""
    import time

    calls: list[float] = []
    named: list[float | None] = []
    real = Turns.polish

    def spy(self: Turns, until: float) -> bool:
        calls.append(until - time.perf_counter())
        named.append(self.cs.named_value())
        return real(self, until)

    monkeypatch.setattr(Turns, "polish", spy)
    monkeypatch.setattr(ColumnSolver, "at_named", lambda self: True)
    network, ku, size = CASES["chain_T4"]
    p = make_problem(network, size, ku, Objective.TRAFFIC)
    assert solve(p, time_limit_s=10.0).mapping is not None
    (budget,) = calls
    assert 0.05 * 10.0 < budget <= 0.3 * 10.0
    best = min(r.objective_value for r in (named_schedule(p, n) for n in FALLBACK_SCHEDULES)
               if r.feasible)
    assert named == [best]


def test_translates_on_the_path_weigh_a_columns_gain_and_are_searched_once() -> None:
    """The incumbent's columns go by found value less bound times the number of its
    translates on the path (shape key and canonical signature: share_found gives them
    what one finds), and one search serves them all.

    ``a``: gain 10 - 4 = 6, alone. ``b1, b2, b3``: gain 5 - 2.5 = 2.5 each, three
    copies, 7.5 > 6, so ``b1`` comes first (the earliest of equal ones), then ``a``,
    then none: ``b2`` and ``b3`` are ``b1``'s search. Mutations: the gain alone gives
    ``a`` first; done keyed by interval and signature gives ``b2`` third."""
    from stems_opt.formulation.column_base import Column

    sig = Signature((), ())
    a = Column(0, 0, sig, bound=4.0, upper=10.0)
    b1, b2, b3 = (Column(i, i, sig, bound=2.5, upper=5.0, share_key=("block", "sig"))
                  for i in (1, 2, 3))
    c = Column(4, 4, sig, bound=1.0, upper=1.0, exact=True, value=1.0)
    path = [a, b1, b2, b3, c]

    class Search:
        def poll_seeds(self) -> None:
            pass

        def incumbent(self) -> tuple[list[Column], float]:
            return path, sum(col.upper for col in path)

    turns = Turns.__new__(Turns)
    turns.cs = Search()
    done: set[tuple] = set()
    picked = [turns._next(done, merges=False) for _ in range(3)]
    assert picked == [b1, a, None]


def test_a_pass_under_way_keeps_the_share_and_a_move_that_does_not_pay_halves_it() -> None:
    """The thorough pass's turns are one move cut into pieces: a turn after one of them
    that did not end keeps the share (0.5), though the incumbent did not improve; the
    turn after the pass's last halves it (0.5 -> 0.25).
    Mutation: without the pass's exception the second turn's share is 0.25."""
    from stems_opt.formulation import neighbourhood

    ends = iter([False, False, True])
    stop = type("Stop", (), {"expired": lambda self: False})()

    class Search:
        def incumbent(self) -> tuple[list, float]:
            return [], 100.0  # never better

        def thorough_dive(self, over) -> bool:
            return next(ends)

    turns = Turns.__new__(Turns)
    turns.cs = Search()
    turns.cs.stop = stop
    turns.turns, turns.used_s, turns.value = 0, 0.0, math.inf
    turns.share = turns.top_share = neighbourhood.SHARE
    turns.dives = turns.long = turns.passing = False
    turns.thorough, turns.repairs = True, True
    shares = []
    for _ in range(3):
        turns.turn()
        shares.append(turns.share)
    # turn 1: the first look (0.5), the pass goes on; turn 2: after a piece of the pass
    # (0.5), it goes on; turn 3: after another piece (0.5), it ends.
    assert shares == [0.5, 0.5, 0.5]
    assert not turns.thorough and not turns.passing
    # Turn 4 (kind 0, nothing left to search): after the pass's end, no better mapping.
    turns.merges, turns.done = [], set()
    turns.cs.poll_seeds = lambda: None
    turns.turn()
    assert turns.share == 0.25


@pytest.mark.parametrize("late", [False, True])
def test_polish_runs_the_thorough_pass_first_until_the_incumbent_improves(
        late: bool) -> None:
    """Where every interval was open for the dive (``late`` false) and the thorough
    pass has not ended, the polish runs the pass first and stops it once the incumbent
    is better: the fake pass improves at its second of five steps, so it is stopped
    after two, the polish returns ``True`` with no frame MIP, and the pass is still
    under way (its next turn keeps the share). A deep network (``late``) polishes by
    frame MIPs alone: here there are none (no column left), so ``False`` and no step.
    Mutations: the pass not stopped at the improvement runs all five steps; the pass
    also on a deep network takes steps there."""
    value = [100.0]
    steps = []

    class Search:
        stop = type("Stop", (), {"expired": lambda self: False})()

        def incumbent(self) -> tuple[list, float]:
            return [], value[0]

        def poll_seeds(self) -> None:
            pass

        def thorough_dive(self, over) -> bool:
            for k in range(5):
                steps.append(k)
                if k == 1:
                    value[0] = 90.0
                if over():
                    return False
            return True

    turns = Turns.__new__(Turns)
    turns.cs = Search()
    turns.thorough, turns.late, turns.passing = True, late, False
    turns.used_s, turns.moves, turns.done = 0.0, 0, set()
    got = turns.polish(math.inf)
    if late:
        assert got is False and steps == [] and turns.thorough
    else:
        assert got is True and steps == [0, 1]
        assert turns.thorough and turns.passing
