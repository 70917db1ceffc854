"""The coarse seed of the energy search (:func:`stems_opt.solvers.coarse_seed`).

Under a time limit, energy through loop nests gets a second seed: the second
process also runs a short search of the same objective on the hardware
without loop nests (one access per use below the global buffer: no nests to
solve) and sends its mapping scored with them; its segments seed the search.
What must hold: the seed is that search's mapping worth exactly what the
cost model says with nests, it arrives after the cheapest named schedule and
before the others, only energy through nests gets one, and the energy search
under a limit starts it (and leaves every named schedule to that process).
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import sys
import time
from pathlib import Path

import pytest

from stems_opt.cost.evaluation import evaluate
from stems_opt.feasibility import check
from stems_opt.incumbents import (
    COARSE_SEED,
    SCORING_ORDER,
    SEED_MAX_S,
    TRAFFIC_SEED,
    BackgroundNamed,
    coarse_seed_s,
    traffic_seed_s,
)
from stems_opt.mapping import Mapping
from stems_opt.problem import Objective, Problem
from stems_opt.result import Result, SolveStatus
from stems_opt.solvers import _traffic_bound_arrived, coarse_seed, solve, traffic_seed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_bounds import nest_problem  # noqa: E402
from test_optimizer import CASES  # noqa: E402


def nest_case(name: str = "chain_T4") -> Problem:
    network, ku, size = CASES[name]
    return nest_problem(network, size, ku)


def without_nests(p: Problem) -> Problem:
    return dataclasses.replace(p, hardware=dataclasses.replace(p.hardware, loop_nests=False))


def test_only_energy_through_nests_gets_a_seed_for_a_share_of_the_limit() -> None:
    """A quarter of the limit (the traffic seed: half), at most 10 s, under limits up to
    60 s (none beyond, nor without a limit); no seed for traffic, latency, the EDP
    search's weighted solves, or energy without nests (the search is the coarse one
    itself)."""
    p = nest_case()
    assert coarse_seed_s(p, 8.0) == pytest.approx(2.0)  # 0.25 x 8
    assert traffic_seed_s(p, 8.0) == pytest.approx(4.0)  # 0.5 x 8
    assert coarse_seed_s(p, 60.0) == traffic_seed_s(p, 60.0) == SEED_MAX_S == 10.0
    assert traffic_seed_s(p, 30.0) == 10.0  # min(10, 15)
    for seconds in (coarse_seed_s, traffic_seed_s):
        assert seconds(p, 61.0) is None and seconds(p, None) is None
        for objective in (Objective.TRAFFIC, Objective.LATENCY):
            assert seconds(p.with_objective(objective), 8.0) is None
        assert seconds(p.weighted(1, 1), 8.0) is None
        assert seconds(without_nests(p), 8.0) is None


@pytest.mark.parametrize("case", ["chain_T4", "conv_pool_T2_chunks"])
def test_the_seed_is_the_coarse_optimum_scored_with_nests(case: str) -> None:
    """On a tiny network the search without nests proves its optimum within the seed's
    seconds: the seed's mapping has exactly that optimum without nests, fits, and its
    value is the cost model's energy of that mapping through its nests (which charge
    the inner buffers: more than without)."""
    p = nest_case(case)
    coarse = solve(without_nests(p), time_limit_s=30.0)
    assert coarse.gap == 0.0
    seed = coarse_seed(p, 5.0)
    assert seed.feasible and seed.solver == COARSE_SEED and seed.objective == "energy"
    assert not check(p, seed.mapping)
    # (two searches may find different mappings of the same optimum: equal to 1e-9)
    assert evaluate(without_nests(p), seed.mapping).total_energy_pj == pytest.approx(
        coarse.objective_value, rel=1e-9)
    with_nests = evaluate(p, seed.mapping).total_energy_pj
    assert seed.objective_value == with_nests
    assert with_nests > coarse.objective_value * (1 + 1e-9)


def test_the_second_process_sends_the_seed_after_the_cheapest_named() -> None:
    """Results arrive in the order they are run: TB-LBL (the cheapest), the seed, then
    ST-F and TB-F; the child counts the seed among what it must deliver."""
    p = nest_case()
    seeds = ((COARSE_SEED, functools.partial(coarse_seed, seconds=3.0)),)
    with BackgroundNamed(p, SCORING_ORDER, seeds) as background:
        assert background.names == (*SCORING_ORDER, COARSE_SEED)
        end = time.perf_counter() + 60.0
        while not background.done() and time.perf_counter() < end:
            time.sleep(0.05)
        assert background.done(), background.errors
        arrived = [*background.results, *background.errors]
    assert arrived == [SCORING_ORDER[0], COARSE_SEED, *SCORING_ORDER[1:]]
    assert background.results[COARSE_SEED].feasible


@pytest.mark.parametrize("nests", [True, False], ids=["nests", "no-nests"])
def test_the_energy_search_through_nests_starts_the_seed(
        nests: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a limit the energy search through nests hands every named schedule and the
    seed (for a quarter of the limit) to the second process; without nests the named
    schedules are scored first here, where that is cheap (tiny networks:
    milliseconds), and there is no seed.

    Mutation that fails it: ``solve_columns`` without the seed (``seed_s`` left
    ``None``), with the named schedules still scored here for the seeded search, or
    its second process not a ``helper``."""
    import stems_opt.incumbents as incumbents

    started: list[tuple[tuple[str, ...], tuple, bool]] = []

    class Spy(BackgroundNamed):
        def __init__(self, problem, names=SCORING_ORDER, seeds=(), helper=False) -> None:
            started.append((names, tuple((name, job.func, job.keywords)
                                         for name, job in seeds), helper))
            super().__init__(problem, names, seeds, helper)

    monkeypatch.setattr(incumbents, "BackgroundNamed", Spy)
    p = nest_case() if nests else without_nests(nest_case())
    r = solve(p, time_limit_s=20.0)
    assert r.mapping is not None
    if nests:
        # (the coarse seed for 0.25 x 20 s, the traffic seed for min(10, 0.5 x 20 s))
        # (a helper: its first job at the search's priority, the rest lower)
        assert started == [(SCORING_ORDER, ((COARSE_SEED, coarse_seed, {"seconds": 5.0}),
                                            (TRAFFIC_SEED, traffic_seed, {"seconds": 10.0})),
                            True)]
    else:
        assert started == []  # (every named schedule scored here: nothing left over)


@pytest.mark.parametrize("nests", [True, False], ids=["nests", "no-nests"])
def test_a_search_seeded_as_it_goes_dives_for_a_shorter_share(
        nests: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dive may go on improving for 20 % of the time left where the coarse seed
    comes (40 % otherwise): its deadlines are start + 0.1, 0.5 and that share of the
    span, so (improving - first) / (none - first) is (0.2 - 0.1) / 0.4 = 0.25 seeded
    and (0.4 - 0.1) / 0.4 = 0.75 not. (Mutation: the seeded share left at 0.4 fails.)"""
    from stems_opt.formulation.columns import ColumnSolver

    deadlines: list[tuple[float, float, float]] = []
    real = ColumnSolver.dive

    def spy(self, until, until_none=None, until_improving=None):
        deadlines.append((until, until_none, until_improving))
        return real(self, until, until_none, until_improving)

    monkeypatch.setattr(ColumnSolver, "dive", spy)
    p = nest_case() if nests else without_nests(nest_case())
    assert solve(p, time_limit_s=20.0).mapping is not None
    (first, none, improving), = deadlines
    assert (improving - first) / (none - first) == pytest.approx(0.25 if nests else 0.75)


@pytest.mark.parametrize("limit_s", [None, 59.0, 90.0, 300.0])
def test_under_a_long_limit_the_dive_is_that_of_no_limit(
        limit_s: float | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to ``DIVE_ANYTIME_UP_TO_S`` (60 s) of limit the dive's deadlines are shares of
    the time left (0.1, 0.5, and 0.4 capped at 10 s); past it they are those of a search
    without a limit: 0.1 and 0.5 of ``DIVE_CAP_S`` (3 s and 15 s) and no improving
    extension, so the proof gets the time. The deadlines are compared by their
    differences, which the time before the dive does not change. (Mutation: the
    long-limit rule dropped fails at 90 s and 300 s.)"""
    from stems_opt.formulation.columns import ColumnSolver

    got: list[tuple[float | None, ...]] = []
    real = ColumnSolver.dive

    def spy(self, until, until_none=None, until_improving=None):
        got.append((until, until_none, until_improving))
        return real(self, until, until_none, until_improving)

    monkeypatch.setattr(ColumnSolver, "dive", spy)
    p = without_nests(nest_case())
    assert solve(p, time_limit_s=limit_s).mapping is not None
    (first, none, improving), = got
    if limit_s is not None and limit_s <= 60.0:
        # span = the time left, a little under the limit: first = 0.1 span, none = 0.5
        # span, improving = min(0.4 span, 10 s) = 10 s after the dive's start
        span = (none - first) / 0.4
        assert span == pytest.approx(limit_s, rel=0.05)
        assert improving - first == pytest.approx(10.0 - 0.1 * span)
    else:
        assert none - first == pytest.approx(0.4 * 30.0)  # 15 s - 3 s
        assert improving is None


@pytest.mark.parametrize("case", ["chain_T4", "conv_pool_T2_chunks"])
def test_the_traffic_seed_sends_the_least_traffic_and_a_seed(case: str) -> None:
    """The traffic seed proves the least traffic of a tiny network within its seconds:
    its bound is that optimum (bits), its mapping moves exactly that and is scored in
    energy through the nests; from the second process the bound arrives as such."""
    p = nest_case(case)
    least = solve(p.with_objective(Objective.TRAFFIC), time_limit_s=30.0)
    assert least.gap == 0.0
    seed = traffic_seed(p, 5.0)
    assert seed.feasible and seed.solver == TRAFFIC_SEED
    assert seed.stats["traffic_bound_bits"] == least.objective_value
    assert evaluate(p, seed.mapping).traffic_bits == least.objective_value
    assert seed.objective_value == evaluate(p, seed.mapping).total_energy_pj
    seeds = ((TRAFFIC_SEED, functools.partial(traffic_seed, seconds=5.0)),)
    with BackgroundNamed(p, (), seeds) as background:
        end = time.perf_counter() + 60.0
        while not background.done() and time.perf_counter() < end:
            time.sleep(0.05)
        assert _traffic_bound_arrived(background) == least.objective_value
    assert _traffic_bound_arrived(None) is None


def test_the_answer_takes_the_traffic_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """A search stopped before any master reports, as its bound, the floor from the least
    traffic the second process proved (chain_T4 with nests: the least traffic at the
    cheaper DRAM rate plus the operand floors, above the chain floor there), never
    above the proven optimum. (Mutation: the answer without the traffic floor fails
    this.)"""
    import stems_opt.solvers as solvers
    from stems_opt.formulation.backend import SolveOptions
    from stems_opt.formulation.columns import ColumnSolver
    from stems_opt.formulation.data import objective_constant

    p = nest_case()
    least = solve(p.with_objective(Objective.TRAFFIC)).objective_value
    best = solve(p)
    assert best.gap == 0.0
    # No search at all; the traffic bound as if it had arrived.
    monkeypatch.setattr(solvers, "_search_share", lambda stop, layers, share: 0.0)
    monkeypatch.setattr(ColumnSolver, "dive", lambda self, *args: None)
    monkeypatch.setattr(solvers, "_traffic_bound_arrived", lambda background: least)
    r = solve(p, time_limit_s=20.0)
    cs = ColumnSolver(p, solvers._backend("cpsat"), SolveOptions(threads=1))
    assert cs.traffic_floor(least) > cs.chain_floor()  # (else the test shows nothing)
    floor = (cs.traffic_floor(least) + objective_constant(p)) / 1000  # pJ
    assert r.bound == pytest.approx(floor, rel=1e-12)
    assert r.bound <= best.objective_value


def test_a_seed_no_better_than_what_was_sent_goes_without_its_mapping() -> None:
    """The second process sends a seed's mapping only when it beats every value sent
    before it (seeding costs the search time); what else it carries, such as the least
    traffic, still goes. (Mutation: ``<=`` for ``<`` keeps a tie's mapping: fails.)"""
    from stems_opt.incumbents import _unless_worse

    p = nest_case()
    seed = traffic_seed(p, 5.0)
    value = seed.objective_value
    assert _unless_worse(seed, value + 1.0) is seed  # better than what went before
    for best in (value, value - 1.0):  # a tie or worse: no mapping
        kept = _unless_worse(seed, best)
        assert kept.mapping is None and kept.cost is None and not kept.feasible
        assert kept.stats["traffic_bound_bits"] == seed.stats["traffic_bound_bits"]


def _niceness(problem: Problem, name: str = "probe") -> Result:
    """A job for the second process that reports its scheduling priority."""
    import os

    return Result(SolveStatus.UNKNOWN, name, problem.objective.value,
                  stats={"nice": float(os.nice(0))})


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="the patched scorer reaches the child by fork")
@pytest.mark.parametrize("helper", [True, False], ids=["helper", "schedules"])
def test_a_helper_lowers_its_priority_after_its_first_job(
        helper: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The search's second process (``helper``) runs its first job, the cheapest named
    schedule, at the search's priority (under a short limit on a loaded machine it may
    be the only answer: a child niced from its start sent nothing within 2 s in CI),
    then yields to the search (``CHILD_NICE``): the seed and the other schedules. A
    child scoring schedules a user asked for (``compare``) never lowers it.
    (Mutations: niced from the start fails the helper case's first job; never niced,
    its later jobs; niced without ``helper``, the other case.)"""
    import os

    import stems_opt.heuristics as heuristics
    from stems_opt.incumbents import CHILD_NICE

    own = os.nice(0)
    if own >= 19:
        pytest.skip("already at the lowest priority: lowering it changes nothing")
    monkeypatch.setattr(heuristics, "named_schedule",
                        lambda problem, name, **_: _niceness(problem, name))
    seeds = (("probe", _niceness),)
    with BackgroundNamed(nest_case(), SCORING_ORDER[:2], seeds, helper=helper) as background:
        end = time.perf_counter() + 30.0
        while not background.done() and time.perf_counter() < end:
            time.sleep(0.02)
        got = {name: r.stats["nice"] for name, r in background.poll().items()}
    later = min(19, own + CHILD_NICE) if helper else own
    # (the order run: the first schedule, the seed, the second schedule)
    assert got == {SCORING_ORDER[0]: own, "probe": later, SCORING_ORDER[1]: later}


def _large(problem: Problem, name: str = "large") -> Result:
    """A job for the second process whose result is far larger than a pipe's buffer
    (64 KB on Linux), as a deep network's mapping with its nests can be."""
    return Result(SolveStatus.UNKNOWN, name, problem.objective.value, message="x" * 2**20)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="the test hands the child the parent's end as a fork does")
def test_the_second_process_ends_once_its_parent_is_gone() -> None:
    """A parent gone (killed, or a second Ctrl-C: its end of the pipe closed) while the
    second process sends a result larger than the pipe's buffer: that process ends with
    exit code 0 and no traceback. Mutations: keeping the parent's end that the fork gave
    it fails this (its send waits forever: no exit code), and so does sending without
    catching the broken pipe (exit code 1)."""
    from stems_opt.incumbents import _child

    ctx = multiprocessing.get_context("fork")
    mine, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, daemon=True,
                       args=(nest_case(), (), (("large", _large),), theirs, False, mine))
    proc.start()
    theirs.close()
    mine.close()
    try:
        proc.join(30)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="the patched scorer reaches the child by fork")
def test_a_second_process_killed_mid_job_is_no_longer_alive(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The second process killed while it scores its second schedule (as the kernel's
    out-of-memory killer would): what it sent before arrives, and it is no longer
    ``alive`` (``stems-opt compare`` waits while it is, without a time limit forever).
    Mutation: ``alive`` as the child running or its pipe polling readable fails this
    (a pipe whose writer has closed polls readable)."""
    import os

    import stems_opt.heuristics as heuristics

    def scored_or_killed(problem: Problem, name: str, **_: object) -> Result:
        if name != SCORING_ORDER[0]:
            os._exit(9)
        return Result(SolveStatus.UNKNOWN, name, problem.objective.value)

    monkeypatch.setattr(heuristics, "named_schedule", scored_or_killed)
    with BackgroundNamed(nest_case(), SCORING_ORDER[:2]) as background:
        end = time.perf_counter() + 30.0
        while background.alive() and time.perf_counter() < end:
            time.sleep(0.02)
        assert not background.alive() and not background.done()
        assert list(background.results) == [SCORING_ORDER[0]]


def test_the_parent_takes_the_nests_the_second_process_found(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapping from the second process arrives with the optimal nests found there to
    score it, so scoring it in the search's process (from an empty table) finds no nest
    again: under a short limit that scoring is the answer's last step. Mutation: a
    ``poll`` that drops the nests fails this (the scoring solves the mapping's nests)."""
    from stems_opt.cost import loops

    p = nest_case()
    loops.clear_nest_table()
    with BackgroundNamed(p, SCORING_ORDER[:1], ()) as background:
        end = time.perf_counter() + 30.0
        while not background.done() and time.perf_counter() < end:
            time.sleep(0.02)
        (result,) = background.poll().values()
    assert result.mapping is not None
    solved: list[int] = []
    real = loops._ChainSearch.solve

    def counting(self: loops._ChainSearch, nests: bool = True) -> list:
        solved.append(len(self.shapes))
        return real(self, nests)

    monkeypatch.setattr(loops._ChainSearch, "solve", counting)
    cost = evaluate(p, result.mapping)
    assert solved == []
    assert cost.objective_value("energy", None) == result.objective_value


@pytest.mark.parametrize("case", ["chain_T4", "conv_pool_T2_chunks"])
def test_a_search_bound_first_proves_the_optimum_without_dive_polish_or_turns(
        case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bound_first`` (the traffic seed) runs masters and pricing alone: no dive, no
    polish, no neighbourhood turn is even asked for, and it proves the same least
    traffic, with a mapping that moves exactly that, as the search that has them all
    (which does call them here, or this test would show nothing). Mutation: ignoring
    ``bound_first`` at any one of the three fails it."""
    from stems_opt.formulation import neighbourhood
    from stems_opt.formulation.columns import ColumnSolver
    from stems_opt.solvers import solve_columns

    calls: list[str] = []
    dive, polish, due = ColumnSolver.dive, neighbourhood.Turns.polish, neighbourhood.Turns.due

    def spy(name: str, real):
        def called(self, *args, **kwargs):
            calls.append(name)
            return real(self, *args, **kwargs)
        return called

    monkeypatch.setattr(ColumnSolver, "dive", spy("dive", dive))
    monkeypatch.setattr(neighbourhood.Turns, "polish", spy("polish", polish))
    monkeypatch.setattr(neighbourhood.Turns, "due", spy("due", due))
    p = nest_case(case).with_objective(Objective.TRAFFIC)
    full = solve_columns(p, time_limit_s=30.0, threads=1, warm_start=False)
    assert {"dive", "polish", "due"} <= set(calls)
    calls.clear()
    first = solve_columns(p, time_limit_s=30.0, threads=1, warm_start=False,
                          bound_first=True)
    assert calls == []
    assert full.gap == first.gap == 0.0
    assert first.objective_value == first.bound == full.objective_value
    assert evaluate(p, first.mapping).traffic_bits == full.objective_value


def _bound_masters(monkeypatch: pytest.MonkeyPatch) -> list[list[float]]:
    """Per search, the search's bound (model units) as each of its masters over bounds
    starts (not the dive's, nor the incumbent's over found segments); a new search
    appends a new list."""
    from stems_opt.formulation.columns import ColumnSolver

    searches: list[list[float]] = []
    real = ColumnSolver.master_path

    def spy(self, *args, **kwargs):
        if not (kwargs.get("primal") or kwargs.get("exact_only") or args):
            searches[-1].append(self._lower)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ColumnSolver, "master_path", spy)
    return searches


def test_a_floor_from_elsewhere_is_the_bound_from_the_next_master_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A floor from elsewhere (``floor_source``: the least traffic's, once the second
    process proved it) above the masters' bound is the search's bound from the next
    master on, and from then the neighbourhood search gets the larger share
    (``Turns.favour_mapping``). chain_T4 with nests: its masters start at the chain
    floor, 23,789,280 (model units), the optimum is 26,096,160, the floor here one
    below it; the proof still ends at the optimum. With the optimum seeded, a floor at
    it proves it at the first master that sees the floor, where the search without
    a floor needs masters that raise its own bound. (Mutations: ignoring the floor, or
    not returning at it, fail this.)"""
    import stems_opt.solvers as solvers
    from stems_opt.formulation import neighbourhood
    from stems_opt.formulation.backend import SolveOptions
    from stems_opt.formulation.columns import ColumnSolver

    p = nest_case()
    searches = _bound_masters(monkeypatch)

    def search(floor: float | None, seed: Mapping | None = None
               ) -> tuple[Mapping, float, float, list[float]]:
        searches.append([])
        cs = ColumnSolver(p, solvers._backend("cpsat"), SolveOptions(threads=1))
        if seed is not None:
            cs.seed(seed)
        if floor is not None:
            cs.floor_source = lambda: floor
        return (*cs.solve(), searches[-1])

    best, optimum, bound, _ = search(None)
    assert optimum == bound == 26_096_160
    favoured: list[bool] = []
    real_favour = neighbourhood.Turns.favour_mapping
    monkeypatch.setattr(neighbourhood.Turns, "favour_mapping",
                        lambda self: favoured.append(True) or real_favour(self))
    _, value, bound, seen = search(optimum - 1)
    assert value == bound == optimum
    assert seen[0] == 23_789_280 and optimum - 1 in seen and favoured
    _, value, bound, seen_seeded = search(None, best)
    _, value_at, bound_at, seen_at = search(optimum, best)
    assert value == bound == value_at == bound_at == optimum
    assert seen_at == [23_789_280] and len(seen_seeded) > 1  # (the floor: one master)


def test_favouring_the_mapping_gives_the_neighbourhood_search_its_larger_share() -> None:
    """Ten seconds into a search (the first two its warm-up), with 5 s already in
    neighbourhood moves: at half the time after the warm-up (``SHARE``) that is too
    much, 5 > 0.5 / 0.5 x 3; at ``BOUND_ELSEWHERE_SHARE`` it is not, 5 < 0.8 / 0.2 x 3;
    and the share that moves that pay return to (``top_share``) is the larger one."""
    import stems_opt.solvers as solvers
    from stems_opt.formulation import neighbourhood
    from stems_opt.formulation.backend import SolveOptions
    from stems_opt.formulation.columns import ColumnSolver

    assert (neighbourhood.SHARE, neighbourhood.BOUND_ELSEWHERE_SHARE) == (0.5, 0.8)
    assert neighbourhood.WARMUP_S == 2.0
    cs = ColumnSolver(nest_case(), solvers._backend("cpsat"), SolveOptions(threads=1))
    turns = neighbourhood.Turns(cs, time.perf_counter() - 10.0, None)
    turns.used_s = 5.0
    assert not turns.due()
    turns.favour_mapping()
    assert turns.due() and turns.top_share == turns.share == 0.8
