"""The bound master over arrays of its transitions (``master.PathGraph``) against the loop
over boundary states it replaces, and its tied columns against their definition.

Mutations that make these tests fail (each tried, then reverted): the array path's
ties to the largest rank and node instead of the smallest
(``np.lexsort((-src_o, -col_o, total_o, dst_o))``); columns touched between the pass
and the tie round keeping their price in ``_through`` (no masking of
``graph.dirty``); tied columns judged without the cost from their end to the
network's end (``0 * suf[dst]``); an exact pass reusing its labels when a price changed
(``changed = False``). (Putting the node before the rank in the tie order
changes nothing here: columns are built in the order of their first layer and
signature, nodes numbered by boundary and sorted state, so the two orders agree.)
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from stems_opt.formulation import master
from stems_opt.formulation.backend import SolveOptions
from stems_opt.formulation.columns import ColumnSolver
from stems_opt.formulation.cpsat import solve_cpsat
from stems_opt.io import load_instance

sys.path.insert(0, str(Path(__file__).parent))
from test_optimizer import CASES, make_problem

ROOT = Path(__file__).parent.parent
#: The small networks of the optimizer tests, and SEW-ResNet-18 (3,776 columns over 30
#: layers, with residual tensors that may stay whole: many boundary states).
NETWORKS = [*CASES, "sew_resnet18"]


def solver_for(case: str) -> ColumnSolver:
    if case == "sew_resnet18":
        problem = load_instance(ROOT / "instances" / "sew_resnet18_1mb.yaml")
    else:
        network, ku, size = CASES[case]
        problem = make_problem(network, size, ku)
    return ColumnSolver(problem, solve_cpsat, SolveOptions(threads=1, seed=0))


def both(cs: ColumnSolver, limit: int, monkeypatch: pytest.MonkeyPatch
         ) -> dict[bool, tuple]:
    """The path (ranks, value) and the tied columns' ranks, by the arrays and the loop."""
    out = {}
    for arrays in (False, True):
        monkeypatch.setattr(master, "PATH_ARRAYS", arrays)
        paths = []
        for kind in ({"primal": True}, {"exact_only": True}, {}):  # (bound last: the ties)
            res = cs.master_path(**kind)
            paths.append(None if res is None else ([c.rank for c in res[0]], res[1]))
        out[arrays] = (paths, [c.rank for c in cs.master_ties(limit)])
    return out


@pytest.mark.parametrize("case", NETWORKS)
def test_array_path_and_ties_equal_the_loop(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random small prices (many ties), a few columns exact or with no segment, some
    tightened, some with a segment found or repaired: the same paths and values in the
    three price modes (bound, primal, exact) and the same tied columns, step after
    step; a column touched after the pass has no price in the tie round either way."""
    cs = solver_for(case)
    rng = random.Random(3)
    for step in range(30):
        changed = cs.columns if step % 3 == 0 else rng.sample(cs.columns,
                                                              min(4, len(cs.columns)))
        for col in changed:
            col.bound = rng.randint(0, 6)  # (few values: many equal paths)
            col.exact = rng.random() < 0.15
            col.value = None if col.exact and rng.random() < 0.3 else col.bound
            col.tight = rng.random() < 0.3
            # (a segment found at or above the bound, or a greedy repair that found none)
            col.upper = col.bound + rng.randint(0, 3) if rng.random() < 0.6 else None
            col.repaired = {()} if col.upper is None and rng.random() < 0.5 else set()
            cs.touch(col)
        got = both(cs, 1000, monkeypatch)
        assert got[True] == got[False]
        if got[True][1]:  # touched after the pass: skipped by the tie round
            cs.touch(cs.columns[got[True][1][0]])
            ties = {}
            for arrays in (False, True):
                monkeypatch.setattr(master, "PATH_ARRAYS", arrays)
                ties[arrays] = [c.rank for c in cs.master_ties(1000)]
            assert ties[True] == ties[False]
            assert got[True][1][0] not in ties[True]
        for arrays in (False, True):  # (the limit keeps the first by rank)
            monkeypatch.setattr(master, "PATH_ARRAYS", arrays)
            cs.master_path()
            assert [c.rank for c in cs.master_ties(2)] == got[True][1][:2]


@pytest.mark.parametrize("case", NETWORKS)
def test_ties_are_the_columns_on_some_optimal_path(case: str) -> None:
    """A column not tight nor exact is tied exactly when lowering its price by one
    lowers the master's value (integer prices: only a column on an optimal path can;
    a path uses a column at most once, so by exactly one)."""
    cs = solver_for(case)
    rng = random.Random(5)
    for col in cs.columns:
        col.bound, col.exact, col.tight = rng.randint(1, 4), False, False
        cs.touch(col)
    res = cs.master_path()
    assert res is not None
    value = res[1]
    ties = {c.rank for c in cs.master_ties(len(cs.columns))}
    assert ties
    for col in rng.sample(cs.columns, min(40, len(cs.columns))):
        col.bound -= 1
        cs.touch(col)
        lower = cs.master_path()
        assert lower is not None
        assert lower[1] == (value - 1 if col.rank in ties else value)
        col.bound += 1
        cs.touch(col)


def test_past_the_deadline_the_graph_is_not_rebuilt() -> None:
    """SEW-ResNet-152 (its intervals open a few lengths at a time): once columns were
    added after the last graph and the deadline has passed, a bound pass raises
    ``MasterStoppedError`` (a path over some columns bounds nothing); a primal pass
    keeps the last graph (its path uses the columns that graph had); an exact pass, the
    answer's, gets a graph of the found columns alone, new ones included, so it finds
    the path through them, and the kept graph stays the old one. The found-only path
    equals the full graph's exact path, checked once the deadline is lifted.
    Mutations: rebuilding the kept graph whatever the deadline (dropping the
    stale-graph return of ``_path_graph``) makes the primal pass see the new columns;
    the exact pass given every column (``lambda c: True`` in ``_path_graph``), or
    ``_build_graph`` ignoring ``keep``, puts columns with no segment in its graph;
    an exact pass before the deadline rebuilding the kept graph: each fails."""
    from stems_opt.formulation.column_base import MasterStoppedError
    from stems_opt.stopping import Stop

    problem = load_instance(ROOT / "instances" / "sew_resnet152_1mb.yaml")
    cs = ColumnSolver(problem, solve_cpsat, SolveOptions(threads=1, seed=0, stop=Stop()))
    for col in cs.columns:  # every column a found segment at its bound: a mapping pass
        col.upper = float(round(col.price))
    assert cs.master_path() is not None  # (a bound pass: the graph kept)
    first = cs.master_path(exact_only=True)
    built = len(cs.columns)
    assert first is not None and cs.open_more()  # longer intervals: more columns
    found = [c for c in cs.columns[built:] if c.first == 0][:3]
    assert found
    for col in found:
        col.upper = 0.0  # far cheaper than any path the old graph has
    for col in cs.columns[built:]:
        cs.touch(col)  # (as the search does: not in the graph, so no price to refresh)
    # Before the deadline too, an exact pass does not rebuild the kept graph.
    early = cs.master_path(exact_only=True)
    assert early is not None and any(c.rank >= built for c in early[0])
    assert cs._graph is not None and cs._graph.columns == built
    cs.stop.request()
    with pytest.raises(MasterStoppedError):
        cs.master_path()
    primal = cs.master_path(primal=True)
    assert primal is not None and max(c.rank for c in primal[0]) < built
    graphs = []
    build = cs._build_graph

    def spy(keep: object, bound: bool) -> master.PathGraph:
        graphs.append(build(keep, bound))  # type: ignore[arg-type]
        return graphs[-1]

    cs._build_graph = spy  # type: ignore[method-assign]
    late = cs.master_path(exact_only=True)
    assert late is not None and late[1] < first[1]
    assert any(c.rank >= built for c in late[0])
    assert cs._graph is not None and cs._graph.columns == built
    assert len(graphs) == 1  # (the pass's own graph: found columns alone)
    used = {int(r) for _, col, _ in graphs[0].out_of for r in col}
    assert used and all(cs.columns[r].upper is not None for r in used)
    cs.stop = Stop()  # (the deadline lifted: the full graph)
    full = cs.master_path(exact_only=True)
    assert full is not None and full[1] == late[1]


def test_ties_after_columns_were_added() -> None:
    """A neighbourhood turn may open longer intervals between the master's bound pass
    and its tie round, and the search touches what it changes: the tie round reads the
    pass's labels over the graph they were made on, whose columns are the ones it
    may return (a CLI solve of SEW-ResNet-152 at 256 KB once ended with an IndexError
    here). Mutation: marking every touched column stale in the graph, built for it or
    not (``touch`` without its rank check), fails with that IndexError."""
    problem = load_instance(ROOT / "instances" / "sew_resnet152_1mb.yaml")
    cs = ColumnSolver(problem, solve_cpsat, SolveOptions(threads=1, seed=0))
    assert cs.master_path() is not None  # (a bound pass: the graph and its labels)
    built = len(cs.columns)
    assert cs.open_more() and len(cs.columns) > built
    for col in cs.columns[built:]:
        cs.touch(col)
    ties = cs.master_ties(len(cs.columns))
    assert ties and all(c.rank < built for c in ties)
    assert cs.master_path() is not None  # (the next pass builds the graph again)
    assert cs._graph is not None and cs._graph.columns == len(cs.columns)
