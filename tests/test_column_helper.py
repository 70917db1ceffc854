"""The column helper (``column_helper.py``, the search's side in ``column_helped.py``):
the columns least path first (``MasterMixin.master_through``), bounds tightened in a
second process and raised in the search by their keys, and which solves get one.

Mutations that make these tests fail (each tried, then reverted):
- the least path through a column without the cost from its end to the network's
  end (``suf[dst]`` dropped in ``_through``);
- the columns chosen in rank order, not least path first (no ``argsort``);
- an arrived bound not re-pricing its column (no ``touch`` in ``_columns_arrived``);
- the helper sending each bound plus one, or the bound before its tightening;
- no last master after the search (``_last_master`` not called in ``_search``), or
  one that builds the master's graph for it;
- the seeds kept beside the helper (``columns_help`` ignored in ``solve_columns``);
- no bound raised after the answer (``_bound_until_deadline`` not called, or
  ``bound_until`` without its loop), or its margin without the limit's share;
- rounds beside a helper without their 0.5 s cap, or without their share; rounds
  past the search's share of the limit (``left_s`` ignored);
- a stop request during the bound after the answer not caught (it raised).
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

import pytest

from stems_opt.formulation import column_helper
from stems_opt.formulation.backend import SolveOptions
from stems_opt.formulation.column_helper import ColumnHelper, helper_takes
from stems_opt.formulation.columns import ColumnSolver
from stems_opt.formulation.cpsat import solve_cpsat
from stems_opt.io import load_instance
from stems_opt.problem import Problem

sys.path.insert(0, str(Path(__file__).parent))
from test_bounds import nest_problem
from test_optimizer import CASES, make_problem

ROOT = Path(__file__).parent.parent
BIG = 10**6
"""Far more than any random price below: a column priced so is on the master's path."""


def opened(problem: Problem) -> ColumnSolver:
    """A column solver for ``problem`` with every interval opened."""
    cs = ColumnSolver(problem, solve_cpsat, SolveOptions(threads=1, seed=0))
    cs._open_lengths(cs.max_len)
    return cs


def random_prices(cs: ColumnSolver, seed: int) -> None:
    """Small random bounds (many equal paths), a few columns with no segment."""
    rng = random.Random(seed)
    for col in cs.columns:
        col.bound = rng.randint(0, 6)
        col.exact, col.value = (True, None) if rng.random() < 0.1 else (False, None)
        col.tight = rng.random() < 0.3
        cs.touch(col)


def least_path_using(cs: ColumnSolver, col) -> float:
    """The least path that uses ``col``, by the master itself: ``col`` made cheaper by
    :data:`BIG` is on its path, which is then the least through it (``inf`` when it is
    not: no path from the start to the end uses it)."""
    col.bound -= BIG
    cs.touch(col)
    res = cs.master_path()
    col.bound += BIG
    cs.touch(col)
    assert res is not None
    return res[1] + BIG if col in res[0] else math.inf


@pytest.mark.parametrize("case", ["residual_T1", "sew_resnet18"])
def test_columns_least_path_first_are_those_below_the_target(case: str) -> None:
    """Each column's least path through it (``_through``) is the master's value with the
    column forced onto the path; ``master_through`` gives exactly the columns not
    tightened (nor without a segment) that ``keep`` keeps and whose least path is below
    the target, least first (ties by rank), cut at the limit."""
    if case == "sew_resnet18":
        cs = opened(load_instance(ROOT / "instances" / "sew_resnet18_1mb.yaml"))
    else:
        network, ku, size = CASES[case]
        cs = opened(make_problem(network, size, ku))
    random_prices(cs, 5)
    rng = random.Random(7)
    on_paths = [c for c in cs.columns if not c.exact]
    sample = on_paths if len(on_paths) <= 40 else rng.sample(on_paths, 40)
    expected = {c.rank: least_path_using(cs, c) for c in sample}
    assert cs.master_path() is not None
    through = cs._through(cs._graph)
    assert {r: through[r] for r in expected} == expected
    # (the test can tell columns apart)
    assert len({v for v in expected.values() if v < math.inf}) > 1
    value = cs.master_path()[1]
    target = value + 3
    keep = [c for c in cs.columns if c.rank % 3]
    want = sorted((c for c in keep if not c.tight and not c.exact and through[c.rank] < target),
                  key=lambda c: (through[c.rank], c.rank))
    got = cs.master_through(len(cs.columns), target, lambda c: c.rank % 3 != 0)
    assert got == want and got
    assert cs.master_through(2, target, lambda c: c.rank % 3 != 0) == want[:2]


def test_bounds_from_elsewhere_raise_their_columns_by_key() -> None:
    """A bound that arrived raises its column (found by interval and signature) and the
    master's price of it; a lower one changes nothing; ``inf`` is a column no frame of
    which fits. Every column raised so is one the search does not tighten again."""
    network, ku, size = CASES["residual_T1"]
    cs = opened(nest_problem(network, size, ku))
    assert cs.master_path() is not None
    up, down, gone = cs.columns[3], cs.columns[5], cs.columns[7]
    old_down = down.bound
    sent = [(up.first, up.last, up.sig, up.bound + 1000.0),
            (down.first, down.last, down.sig, down.bound - 1.0),
            (gone.first, gone.last, gone.sig, math.inf)]
    raised_to = up.bound + 1000.0
    cs.column_source = lambda: sent
    cs._columns_arrived()
    assert up.bound == raised_to and not up.exact
    assert down.bound == old_down
    assert gone.exact and gone.value is None
    assert cs._from_elsewhere == {up.rank, gone.rank}
    cs.master_path()
    price = cs._graph.price["bound"]
    assert price[up.rank] == round(raised_to) and price[gone.rank] == math.inf


def helper_bounds(problem: Problem) -> list[tuple]:
    """Everything a helper for ``problem`` sends until it runs out of columns."""
    helper = ColumnHelper(problem, solve_cpsat)
    got: list[tuple] = []
    end = time.monotonic() + 60
    try:
        while not helper._conn.closed and time.monotonic() < end:
            got.extend(helper.poll())
            time.sleep(0.01)
    finally:
        helper.close()
    return got


@pytest.mark.parametrize("case", ["chain_T4", "residual_T1"])
def test_the_helper_sends_the_bounds_the_search_computes(case: str) -> None:
    """The helper's bounds, raised in the search by their keys, are the bounds the
    search gets by tightening those columns itself (the same code, so never above a
    column's exact value where the search's own are not); they are the helper's share
    (``helper_takes``), and some rose, so the test can fail."""
    network, ku, size = CASES[case]
    problem = nest_problem(network, size, ku)
    sent = helper_bounds(problem)
    assert sent
    cs = opened(problem)
    for first, last, sig, bound in sent:
        col = cs._by_key[(first, last, sig)]
        assert helper_takes(col)
        cheap = col.bound
        cs.tighten(col)
        if bound == math.inf:
            assert col.exact and col.value is None
        else:
            assert col.bound == bound > cheap


def test_the_last_master_counts_the_bounds_that_arrived_after_the_search() -> None:
    """A search stopped at once (limit 0: no master in its loop) still answers with the
    master over the bounds that arrived: the columns of its path raised there lift
    its bound above the chain floor to that master's value; but not when its master's
    graph would have to be built for it (none was)."""
    network, ku, size = CASES["residual_T1"]
    problem = nest_problem(network, size, ku)
    ref = opened(problem)
    for col in ref.columns:
        ref.tighten(col)
    sent = [(c.first, c.last, c.sig, math.inf if c.exact and c.value is None else c.bound)
            for c in ref.columns]
    tight = ref.master_path()[1]
    def stopped_at_once(graph: bool) -> float:
        cs = opened(problem)
        if graph:  # (a search that ran masters has its graph)
            assert cs.master_path() is not None
        cs.column_source = lambda: sent
        cs.helper_takes = helper_takes
        return cs.solve(0.0)[2]

    floor = opened(problem).chain_floor()
    assert tight > floor
    assert stopped_at_once(True) == tight
    # No graph to use: none is built for it (on a deep network that takes a second).
    assert stopped_at_once(False) == floor


def test_which_solves_get_a_column_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    """Networks deeper than ``EAGER_LAYERS`` on two cores or more; not shallow ones, nor
    one thread. A short energy limit through nests on such a network (where seeds would
    run) forks the helper and runs no seed beside it."""
    from stems_opt import incumbents, solvers
    from stems_opt.cost import nest_helper

    deep = load_instance(ROOT / "instances" / "sew_resnet152_1mb.yaml")
    shallow = load_instance(ROOT / "instances" / "sew_resnet18_1mb.yaml")
    monkeypatch.setattr(nest_helper, "wanted", lambda threads: threads != 1)
    assert solvers._column_helper_wanted(deep, None)
    assert not solvers._column_helper_wanted(deep, 1)
    assert not solvers._column_helper_wanted(shallow, None)

    network, ku, size = CASES["chain_T4"]
    problem = nest_problem(network, size, ku)
    seen: dict[str, object] = {}

    class StoppedHereError(Exception):
        pass

    def background(problem, names, seeds, helper=False):
        seen["seeds"] = seeds
        raise StoppedHereError

    monkeypatch.setattr(solvers, "_column_helper_wanted", lambda p, threads: True)
    monkeypatch.setattr(incumbents, "BackgroundNamed", background)
    with pytest.raises(StoppedHereError):
        solvers.solve_columns(problem, time_limit_s=10.0)
    assert seen["seeds"] == ()
    monkeypatch.setattr(solvers, "_column_helper_wanted", lambda p, threads: False)
    with pytest.raises(StoppedHereError):
        solvers.solve_columns(problem, time_limit_s=10.0)
    assert len(seen["seeds"]) == 2


def test_a_search_with_the_helper_proves_the_optimum_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With a helper (forced on a small network) the search proves the optimum it
    proves without one, and the helper was there."""
    from stems_opt import solvers

    network, ku, size = CASES["residual_T1"]
    problem = nest_problem(network, size, ku)
    alone = solvers.solve_columns(problem)
    assert alone.gap == 0.0
    forks: list[int] = []
    real = column_helper.ColumnHelper

    def counted(*args, **kwargs):
        forks.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(column_helper, "ColumnHelper", counted)
    monkeypatch.setattr(solvers, "_column_helper_wanted", lambda p, threads: True)
    helped = solvers.solve_columns(problem, time_limit_s=30.0)
    assert forks == [1]
    assert helped.gap == 0.0
    assert math.isclose(helped.objective_value, alone.objective_value, rel_tol=1e-9)


def test_after_the_answer_the_bound_rises_until_the_deadline_less_a_margin() -> None:
    """``bound_until`` keeps raising the bound with the helper's bounds (here those of
    its share, as it would send them) and tightens the search's own share: it ends at
    the master over every column tightened, above what the helper's share alone gives.
    ``_bound_until_deadline`` gives it the time left less the margin: a 2 s limit with
    its deadline 1.0 s away ends it 1.0 - max(0.25, 0.03 * 2) = 0.75 s from now, a 20 s
    limit 1.0 - max(0.25, 0.03 * 20) = 0.4 s."""
    from stems_opt import solvers
    from stems_opt.stopping import Stop

    network, ku, size = CASES["residual_T1"]
    problem = nest_problem(network, size, ku)
    ref = opened(problem)
    for col in ref.columns:
        ref.tighten(col)
    tight = ref.master_path()[1]
    theirs = [(c.first, c.last, c.sig, math.inf if c.exact and c.value is None else c.bound)
              for c in ref.columns if helper_takes(c)]
    half = opened(problem)
    half.column_source = lambda: theirs
    half._columns_arrived()
    assert half.master_path()[1] < tight  # (the search's own share counts)

    cs = opened(problem)
    pending = [theirs]
    cs.column_source = lambda: pending.pop() if pending else []
    cs.helper_takes = helper_takes
    assert cs.master_path() is not None
    assert cs.bound_until(time.perf_counter() + 1.0) == tight

    ends: list[float] = []

    class Recorder:
        def bound_until(self, end: float) -> float:
            ends.append(end - time.perf_counter())
            return 0.0

    for limit, expected in ((2.0, 0.75), (20.0, 0.4)):
        stop = Stop(limit)  # (started limit - 1 s ago)
        stop.start = time.perf_counter() + 1.0 - limit
        stop.deadline = stop.start + limit
        solvers._bound_until_deadline(Recorder(), stop)
        assert abs(ends.pop() - expected) < 0.05


def test_a_helped_search_stopped_short_raises_its_bound_before_its_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A search with a helper whose answer comes back unproven (its bound the chain
    floor, as if stopped early) spends the time left on its bound: the answer is
    proven, before the limit."""
    from stems_opt import solvers

    network, ku, size = CASES["residual_T1"]
    problem = nest_problem(network, size, ku)
    real = ColumnSolver.solve

    def short(self: ColumnSolver, *args, **kwargs):
        mapping, value, _ = real(self, *args, **kwargs)
        return mapping, value, self.chain_floor()

    monkeypatch.setattr(ColumnSolver, "solve", short)
    monkeypatch.setattr(solvers, "_column_helper_wanted", lambda p, threads: True)
    start = time.perf_counter()
    got = solvers.solve_columns(problem, time_limit_s=1.5)
    assert got.gap == 0.0
    assert time.perf_counter() - start < 1.5


def test_rounds_beside_a_helper_are_short_and_take_a_share_of_the_search() -> None:
    """Beside a helper a round takes at most 0.5 s, and all rounds at most 0.35 of the
    search: 10 s in with 2.0 s spent, min(0.5, 0.35 * 10 - 2.0 = 1.5) = 0.5 s; with
    3.4 s spent, 0.35 * 10 - 3.4 = 0.1 s. Without one, what the tie budget allows
    (``TIE_S`` times its growth: 3 * 2 = 6 s)."""
    from stems_opt.formulation.master import TieBudget

    network, ku, size = CASES["chain_T4"]
    cs = ColumnSolver(make_problem(network, size, ku), solve_cpsat, SolveOptions(threads=1))
    budget = TieBudget(growth=2, spent_s=2.0)
    assert cs._round_s(budget, 10.0) == 6.0
    cs.helper_takes = helper_takes
    assert cs._round_s(budget, 10.0) == pytest.approx(0.5)
    budget.spent_s = 3.4
    assert cs._round_s(budget, 10.0) == pytest.approx(0.1)
    # With 0.05 s of the search's share left, a round takes no more (with a helper or
    # without): past the share nothing would count it.
    assert cs._round_s(budget, 10.0, 0.05) == pytest.approx(0.05)
    cs.helper_takes = None
    assert cs._round_s(budget, 10.0, 0.05) == pytest.approx(0.05)


def test_a_solver_that_keeps_no_frame_bounds_tightens_to_the_same_bounds() -> None:
    """The helper keeps no frame bounds (it prices nothing): its columns' bounds are
    those of a solver that keeps them, and it holds none."""
    network, ku, size = CASES["residual_T1"]
    problem = nest_problem(network, size, ku)
    kept, lean = opened(problem), opened(problem)
    lean.keep_frame_bounds = False
    for a, b in zip(kept.columns, lean.columns, strict=True):
        kept.tighten(a)
        lean.tighten(b)
        assert (a.bound, a.exact, a.value) == (b.bound, b.exact, b.value)
        assert not b.frame_bounds and not b.frame_slack
    assert any(a.frame_bounds for a in kept.columns)


@pytest.mark.parametrize(("budget", "longest"), [(1, 1), (10**6, 3)])
def test_the_helper_opens_what_the_column_budget_allows(
        budget: int, longest: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The helper builds the intervals the search builds: within ``COLUMN_BUDGET``
    (residual_T1's 3 layers: one-layer intervals alone under a budget of 1, which are
    the search's share, so it sends nothing; every length under a large one, where
    it sends some of 2 or 3 layers). (A 1000-layer chain's helper would otherwise
    build every interval of up to 16 layers.)"""
    from stems_opt.formulation import column_base

    monkeypatch.setattr(column_base, "COLUMN_BUDGET", budget)
    network, ku, size = CASES["residual_T1"]
    sent = helper_bounds(nest_problem(network, size, ku))
    lengths = {last - first + 1 for first, last, _, _ in sent}
    assert max(lengths, default=1) == longest


def test_a_stop_request_ends_the_bound_after_the_answer_with_the_bound_so_far() -> None:
    """Ctrl-C while the bound rises after the answer (the stop requested): no exception,
    the bound as it was, at once."""
    network, ku, size = CASES["residual_T1"]
    cs = opened(nest_problem(network, size, ku))
    cs.column_source = lambda: []
    cs.helper_takes = helper_takes
    assert cs.master_path() is not None
    cs._lower = 7.0
    cs.stop.request()
    start = time.perf_counter()
    assert cs.bound_until(time.perf_counter() + 30.0) == 7.0
    assert time.perf_counter() - start < 1.0
