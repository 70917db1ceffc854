"""The column solver's bounds, direct pricing and shortest-path master.

Every proof of optimality rests on three things checked here on random tiny
problems (hypothesis) and on the hand-picked cases of ``test_optimizer``:

* the capacity-aware frame bound never exceeds the frame's exact optimum
  under any signature (the frame's local MIP, solved to optimality);
* a frame priced directly (every decision at its cheapest choice) is a
  feasible segment whose value the cost model confirms;
* the shortest path over boundary states has the optimum of the master MIP,
  whatever the column prices.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stems_opt.cost.evaluation import evaluate
from stems_opt.cost.geometry import tile_bounds
from stems_opt.cost.traffic import SegmentContext, segment_terms
from stems_opt.feasibility import check
from stems_opt.formulation.backend import SolveOptions
from stems_opt.formulation.bounds import (
    all_tile_bounds,
    frames_excess_bounds,
    interval_excess_bounds,
    tile_bounds_array,
)
from stems_opt.formulation.column_base import Column
from stems_opt.formulation.columns import ColumnSolver
from stems_opt.formulation.cpsat import solve_cpsat
from stems_opt.formulation.data import FrameKey, frame_specs, interval_specs
from stems_opt.io import hardware_from_dict, load_instance, network_from_dict
from stems_opt.mapping import Mapping
from stems_opt.network import Axis
from stems_opt.problem import Objective, Problem

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_optimizer import (  # noqa: E402
    CASES,
    RANDOM_SETTINGS,
    STRIDED,
    STRIDED_GB,
    hardware_dict,
    make_problem,
    tiny_networks,
)


def solver_for(p: Problem) -> ColumnSolver:
    return ColumnSolver(p, solve_cpsat, SolveOptions(threads=1, seed=0))


def check_bounds(p: Problem) -> int:
    """Assert every frame bound of every column is at most the frame's optimum;
    returns how many (column, frame) pairs were compared.

    Mutations of :func:`stems_opt.formulation.bounds.frames_excess_bounds`
    that each make ``test_frame_bounds_below_the_frame_optimum`` fail (the
    bounds are reached): one more sub-tile of chunked weights than the buffer
    forces (``_weight_steps`` giving ``lo + 1``); the DRAM inputs' rows
    counted twice beside a weight chunk (``2 * in_row * tbs`` in
    ``_weight_steps``); one more row in a DRAM input's sub-tile in the row
    floor (``1 + ceil(fresh / finest)``); an item forced when its hold
    exceeds 70 % of the row's budget (``knapsack_excess``); one more sub-tile
    for weights chunked at their own row (``e_own`` with ``fewest + 1``:
    ``conv_pool_T2_chunks`` fails).
    """
    cs = solver_for(p)
    compared = 0
    for col in cs.columns:
        cs.tighten(col, cover=True)  # (the proof's bounds: item_cover.py for traffic)
        extra = cs._extra(col.first, col.last, col.sig)
        for spec in cs.specs[(col.first, col.last)]:
            frame = cs._frame(spec)
            restricted = None if frame is None else cs._restrict(frame, col.sig)
            local = None if restricted is None else cs._local(*restricted, 60.0)
            if col.exact and col.value is None:  # declared infeasible: it must be
                assert local is None, (col, spec)
                continue
            if local is None:
                continue
            value, proven, _ = local
            assert value == proven, "the local solve must finish"
            bound = col.frame_bounds[spec] + extra
            assert bound <= value * (1 + 1e-12), (col.sig, spec, bound, value)
            compared += 1
    return compared


@pytest.mark.parametrize("objective", [Objective.TRAFFIC, Objective.ENERGY],
                         ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_frame_bounds_below_the_frame_optimum(case: str, objective: Objective) -> None:
    network, ku, size = CASES[case]
    assert check_bounds(make_problem(network, size, ku, objective)) > 0


@pytest.mark.parametrize("objective", [Objective.TRAFFIC, Objective.ENERGY],
                         ids=lambda o: o.value)
@pytest.mark.parametrize("name", ["tiny_ann_snn", "tiny_linear", "tiny_reset", "strided"])
def test_frame_bounds_on_strided_linear_and_ann_layers(name: str, objective: Objective) -> None:
    """Strided and 7x7 windows, linear layers, multi-bit activations."""
    if name == "strided":
        p = make_problem(STRIDED, STRIDED_GB, 1, objective)
    else:
        p = load_instance(ROOT / "instances" / f"{name}.yaml").with_objective(objective)
    assert check_bounds(p) > 0


@settings(**{**RANDOM_SETTINGS, "max_examples": 12})
@given(st.data())
def test_frame_bounds_below_the_frame_optimum_random(data: st.DataObject) -> None:
    network = network_from_dict(data.draw(tiny_networks(), label="network"))
    size = data.draw(st.integers(40, 1200), label="GB bits")
    objective = data.draw(st.sampled_from([Objective.TRAFFIC, Objective.ENERGY]))
    check_bounds(make_problem(network, size, data.draw(st.sampled_from([1, 4])), objective))


def nest_problem(network: object, size: int, k_unroll: int) -> Problem:
    """An energy problem on the tiny accelerator's inner buffers with loop nests."""
    hw = {**hardware_dict(size, k_unroll), "loop_nests": True, "inner_levels": [
        {"name": "weight_buffer", "size": 512, "operands": ["W"], "read_pj_per_bit": 0.10,
         "write_pj_per_bit": 0.12},
        {"name": "input_buffer", "size": 256, "operands": ["I"], "read_pj_per_bit": 0.10,
         "write_pj_per_bit": 0.12}]}
    net = network_from_dict(network) if isinstance(network, dict) else network
    return Problem(net, hardware_from_dict(hw), Objective.ENERGY)


@settings(**{**RANDOM_SETTINGS, "max_examples": 12})
@given(st.data())
def test_frame_bounds_with_loop_nests_random(data: st.DataObject) -> None:
    """With loop nests, every frame bound (its operand floor the least nest
    energy over the layer's sub-tile and chunk counts at the frame's time
    batch) is at most the frame's optimum under every signature. Adding 1 fJ
    per time batch to ``layer_nest_floor_fj`` makes this fail (the bound is
    tight on frames whose cheapest choices fit)."""
    network = network_from_dict(data.draw(tiny_networks(), label="network"))
    size = data.draw(st.integers(40, 1200), label="GB bits")
    check_bounds(nest_problem(network, size, data.draw(st.sampled_from([1, 4]))))


@settings(**RANDOM_SETTINGS)
@given(st.data())
def test_vector_tile_bounds_equal_the_cost_model(data: st.DataObject) -> None:
    net = network_from_dict(data.draw(tiny_networks(), label="network"))
    L = len(net.layers)
    for first in range(L):
        for last in range(first, L):
            names = [lay.name for lay in net.layers[first:last + 1]]
            for axis in (Axis.OY, Axis.OX):
                for n in range(1, min(lay.extent(axis) for lay in net.layers[first:last + 1])
                               + 1):
                    want = tile_bounds(net, names, axis, n)
                    got = tile_bounds_array(net, first, last, axis, n)
                    assert [tuple(int(v) for v in g) for g in got] == [want[x] for x in names]
                    table = all_tile_bounds(net, first, last, axis)
                    assert [tuple(int(v) for v in table[i, n - 1, :n + 1])
                            for i in range(len(names))] == [want[x] for x in names]
                    # Past n the tiles are empty (boundaries at the extent).
                    assert all((table[i, n - 1, n:] == table[i, n - 1, n]).all()
                               for i in range(len(names)))


@settings(**RANDOM_SETTINGS)
@given(st.data())
def test_frames_bounded_together_equal_frames_bounded_apart(data: st.DataObject) -> None:
    """Bounding every frame of an axis in one call gives each frame the bound
    and slack of a call with its time batch and order alone."""
    net = network_from_dict(data.draw(tiny_networks(), label="network"))
    L = len(net.layers)
    first = data.draw(st.integers(0, L - 1), label="first")
    last = data.draw(st.integers(first, L - 1), label="last")
    axis = data.draw(st.sampled_from([Axis.OY, Axis.OX]), label="axis")
    budget = data.draw(st.integers(40, 1200), label="budget")
    names = [lay.name for lay in net.layers[first:last + 1]]
    written = frozenset(data.draw(st.sets(st.sampled_from(names)), label="written"))
    specs = [s for s in interval_specs(net, first, last, (axis,))]
    together = frames_excess_bounds(net, first, last, axis, [(s[2], s[5], s[4]) for s in specs],
                                    budget, written, frozenset())
    for k, spec in enumerate(specs):
        alone = interval_excess_bounds(net, first, last, spec[2], axis, spec[5], [spec[4]],
                                       budget, written, frozenset())
        assert (together[0][k], together[1][k]) == (alone[0][0], alone[1][0]), spec


@pytest.mark.parametrize("objective", [Objective.TRAFFIC, Objective.ENERGY],
                         ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_direct_pricing_is_a_feasible_segment_at_its_cost(case: str,
                                                          objective: Objective) -> None:
    network, ku, size = CASES[case]
    p = make_problem(network, size, ku, objective)
    cs = solver_for(p)
    found = 0
    for col in cs.columns:
        cs.tighten(col)
        if col.exact:
            continue
        extra = cs._extra(col.first, col.last, col.sig)
        for spec in cs.specs[(col.first, col.last)]:
            for fine in (True, False):
                direct = cs._direct(col, spec, fine)
                if direct is None:
                    continue
                seg, value = direct
                found += 1
                _, written, _, whole = cs._sig_parts(col)
                terms = segment_terms(p.network, seg, SegmentContext(whole, written))
                traffic = sum(t.read_bits + t.write_bits for t in terms)
                # The segment's own terms include what the signature forces.
                if objective is Objective.TRAFFIC:
                    assert value == traffic
                assert value * (1 + 1e-12) >= col.frame_bounds[spec] + extra
    assert found > 0


@pytest.mark.parametrize("case", list(CASES))
def test_shortest_path_master_equals_the_master_mip(case: str) -> None:
    """Random prices on every column: the path and the MIP agree on the optimum."""
    network, ku, size = CASES[case]
    p = make_problem(network, size, ku)
    cs = solver_for(p)
    rng = random.Random(7)
    for step in range(40):
        # Every column repriced, or a few (the path then relabels from the first touched).
        changed = cs.columns if step % 2 == 0 else rng.sample(cs.columns, 3)
        for col in changed:
            col.bound = rng.randint(0, 50)
            col.exact = rng.random() < 0.2
            col.value = None if col.exact and rng.random() < 0.3 else col.bound
            cs.touch(col)
        mip = cs.master()
        path = cs.master_path()
        assert (mip is None) == (path is None)
        if mip is not None:
            assert mip[1] == path[1]
            assert sum(c.price for c in path[0]) == path[1]
        cs._table = {}  # a fresh path gives the same labels
        fresh = cs.master_path()
        assert (fresh is None) == (path is None)
        if fresh is not None:
            assert fresh[1] == path[1] and fresh[0] == path[0]


def test_solution_is_checked_and_scored_by_the_cost_model() -> None:
    network, ku, size = CASES["residual_T1"]
    p = make_problem(network, size, ku)
    cs = solver_for(p)
    mapping, value, bound = cs.solve(None)
    assert isinstance(mapping, Mapping) and value == bound
    assert not check(p, mapping)
    assert evaluate(p, mapping).traffic_bits == value


def test_every_frame_spec_has_a_bound() -> None:
    network, ku, size = CASES["chain_T4"]
    p = make_problem(network, size, ku)
    cs = solver_for(p)
    for col in cs.columns:
        cs.tighten(col)
        if not col.exact:
            assert set(col.frame_bounds) == {s for s in frame_specs(p)
                                             if (s[0], s[1]) == (col.first, col.last)}


def frame_optima(cs: ColumnSolver, col: Column, specs: Iterable[FrameKey] | None = None
                 ) -> Iterator[tuple[FrameKey, float]]:
    """Each frame of ``col`` (of ``specs``, else all) that fits under its signature,
    with its local optimum (the local solve must finish)."""
    for spec in cs.specs[(col.first, col.last)] if specs is None else specs:
        frame = cs._frame(spec)
        restricted = None if frame is None else cs._restrict(frame, col.sig)
        local = None if restricted is None else cs._local(*restricted, 60.0)
        if local is None:
            continue
        value, proven, _ = local
        assert value == proven, "the local solve must finish"
        yield spec, value


def check_interval_bounds(p: Problem) -> int:
    """Assert the signature-free bound of every frame of an interval, plus the
    signature's forced cost, is at most the frame's optimum under every
    signature; returns how many (column, frame) pairs were compared.

    Mutation: adding 1 (bit, or fJ) to every bound of
    ``ColumnSolver.interval_frame_bounds`` makes ``residual_T1`` (both
    objectives) and ``ann_snn_reset_T2`` (energy) fail: the bound is reached.
    """
    cs = solver_for(p)
    compared = 0
    for col in cs.columns:
        bounds = cs.interval_frame_bounds(col.first, col.last)
        extra = cs._extra(col.first, col.last, col.sig)
        for spec, value in frame_optima(cs, col):
            assert bounds[spec] + extra <= value * (1 + 1e-12), (col.sig, spec,
                                                                 bounds[spec] + extra, value)
            compared += 1
        before = col.bound
        cs.raise_interval(col.first, col.last)
        assert col.bound >= before
    return compared


@pytest.mark.parametrize("objective", [Objective.TRAFFIC, Objective.ENERGY],
                         ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_interval_bounds_below_every_signature_optimum(case: str, objective: Objective) -> None:
    network, ku, size = CASES[case]
    assert check_interval_bounds(make_problem(network, size, ku, objective)) > 0



def check_relevant_sets(p: Problem) -> int:
    """Assert that the capacity-aware bound of every column is the same with the
    signature's tensors written and kept whole as with the part
    ``ColumnSolver._relevant`` keeps (which lets signatures share one bound);
    returns how many (column, axis) pairs were compared.

    Mutation: keeping only the interval's own tensors (``touched`` without
    the layers' inputs) makes ``test_relevant_sets_give_the_same_bound``
    fail on every case: a tensor kept whole and read in the interval would
    hold its line buffer again.
    """
    cs = solver_for(p)
    compared = 0
    for col in cs.columns:
        budget, written, _, whole = cs._sig_parts(col)
        if budget <= 0:
            continue
        kept = cs._relevant(col.first, col.last, written, whole)
        for axis, specs in cs._by_axis(cs.specs[(col.first, col.last)]).items():
            frames = [(s[2], s[5], s[4]) for s in specs]
            args = dict(read_rate=cs.rates[0], write_rate=cs.rates[1], k_unroll=cs.ctx.k_unroll)
            full = frames_excess_bounds(p.network, col.first, col.last, axis, frames, budget,
                                        written, whole, **args)
            part = frames_excess_bounds(p.network, col.first, col.last, axis, frames, budget,
                                        *kept, **args)
            assert (full[0] == part[0]).all() and (full[1] == part[1]).all(), (col.sig, axis)
            compared += 1
    return compared


@pytest.mark.parametrize("case", list(CASES))
def test_relevant_sets_give_the_same_bound(case: str) -> None:
    network, ku, size = CASES[case]
    assert check_relevant_sets(make_problem(network, size, ku)) > 0


def check_unbuilt_signatures(p: Problem) -> int:
    """Assert that every signature the column solver does not build (its whole
    tensors alone overflow the buffer) has no feasible frame: each frame's local
    MIP under it is infeasible; returns how many were checked.

    Mutation: building only signatures whose whole tensors take less than
    half the buffer (``< cap // 2`` in ``IntervalsMixin._add_interval``) makes
    ``test_unbuilt_signatures_have_no_segment`` fail (``conv_pool_T2_chunks``,
    ``ann_snn_reset_T2``): a feasible column is left out.
    """
    from stems_opt.formulation.column_base import Column

    cs = solver_for(p)
    built = {(c.first, c.last, c.sig) for c in cs.columns}
    checked = 0
    for first, last in {(c.first, c.last) for c in cs.columns}:
        for sig in cs.signatures(first, last):
            if (first, last, sig) in built:
                continue
            col = Column(first, last, sig, 0.0)
            assert cs._sig_parts(col)[0] <= 0, sig
            for spec in cs.specs[(first, last)]:
                frame = cs._frame(spec)
                restricted = None if frame is None else cs._restrict(frame, sig)
                assert restricted is None or cs._local(*restricted, 60.0) is None, (sig, spec)
            checked += 1
    return checked


@pytest.mark.parametrize("case", list(CASES))
def test_unbuilt_signatures_have_no_segment(case: str) -> None:
    network, ku, size = CASES[case]
    check_unbuilt_signatures(make_problem(network, size, ku))


# Pooling from one whole tensor into another holds nothing else (found by the random test).
POOL_CHAIN = {
    "name": "pool_chain", "timesteps": 1, "state_persistence": "streaming",
    "input": {"channels": 1, "height": 4, "width": 4, "bits": 1},
    "layers": [
        {"name": "l0", "type": "conv", "inputs": ["input"],
         "loop_dims": {"K": 1, "FY": 1, "FX": 1}, "neuron": "stateless"},
        {"name": "l1", "type": "pool", "inputs": ["l0"], "kernel": 2},
        {"name": "l2", "type": "pool", "inputs": ["l1"], "kernel": 2},
    ],
}


def test_signature_filling_the_buffer_exactly_is_built() -> None:
    """``l0`` (4x4 spikes: 16 bits) kept whole and ``l1`` (2x2: 4 bits) written
    whole fill a 20-bit buffer exactly, and pooling ``l0`` into ``l1`` holds
    nothing else: that column of ``l1`` has a segment, so it is built, and
    tightening leaves it feasible.

    Mutation: skipping signatures whose whole tensors reach the buffer
    (``< cap`` in ``IntervalsMixin._add_interval``, ``budget <= 0`` in
    ``tighten``) fails this test and ``check_unbuilt_signatures``.
    """
    p = make_problem(POOL_CHAIN, 20, 1)
    check_unbuilt_signatures(p)
    cs = solver_for(p)
    full = [c for c in cs.columns if (c.first, c.last) == (1, 1)
            and dict(c.sig.whole_in).get("l0")
            and any(X == "l1" and w for X, w, _ in c.sig.outputs)]
    assert full
    for col in full:
        cs.tighten(col)
        assert not (col.exact and col.value is None)  # (None when exact: no frame fits)
        assert col.bound < math.inf


@settings(**RANDOM_SETTINGS)
@given(st.data())
def test_interval_bounds_relevant_sets_and_unbuilt_signatures_random(
        data: st.DataObject) -> None:
    """:func:`check_interval_bounds`, :func:`check_relevant_sets` and
    :func:`check_unbuilt_signatures` on one random problem (drawing it, which
    enumerates its whole space, costs most of the time)."""
    from test_optimizer import random_case

    p, _, _ = random_case(data)
    check_interval_bounds(p)
    check_relevant_sets(p)
    check_unbuilt_signatures(p)


def test_tie_budget_grows_while_tied_columns_rise() -> None:
    """The tied columns' budget by hand (TIE_BATCH 400, TIE_S 3 s, TIE_SHARE 0.25,
    TIE_USEFUL 0.25, TIE_USEFUL_MIN 25)."""
    from stems_opt.formulation.master import TieBudget

    b = TieBudget()
    assert (b.batch(), b.seconds(20.0)) == (400, 3.0)  # min(3, 0.25 * 20)
    b.record(400, 20, 4.0)  # 5 % rose: not useful, 4 s charged
    assert b.growth == 1 and b.charged_s == 4.0
    assert b.seconds(17.0) == pytest.approx(0.25)  # 0.25 * 17 - 4
    assert b.seconds(15.0) < 0  # the share is spent: no round
    b.record(8, 8, 0.5)  # all 8 rose, but fewer than 25: not useful
    assert b.growth == 1 and b.charged_s == 4.5
    b.record(101, 87, 1.7)  # a round cut by its seconds: 86 % and 87 rose, useful
    assert (b.growth, b.charged_s) == (2, 4.5)
    b.record(10, 3, 0.1)  # 30 % but 3 rose: back to 1, charged
    assert (b.growth, b.charged_s) == (1, pytest.approx(4.6))
    b.charged_s = 4.5
    b.record(400, 100, 2.0)  # 25 % and 100 rose: useful, nothing charged, growth 2
    assert (b.growth, b.batch(), b.charged_s) == (2, 800, 4.5)
    assert b.seconds(0.0) == 6.0  # after a useful round the next one always runs
    b.record(800, 800, 10.0)
    assert (b.growth, b.charged_s) == (4, 4.5)
    b.record(1000, 200, 1.0)  # 20 % rose: back to one round's batch, charged
    assert (b.growth, b.charged_s) == (1, 5.5)
    assert (b.growth, b.batch()) == (1, 400)


def test_knapsack_in_slices_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The row knapsack taken in slices of rows (to bound its memory) gives every
    row the value one pass gives. Random rows of 7 items, some overflowing
    everything, some freed by the first item; a slice of 3 rows means 12 slices
    with a ragged last one. Off-by-one slicing (``need[i:i + step - 1]``, or a
    step from the row count) fails this."""
    import numpy as np

    from stems_opt.formulation import bounds as bounds_mod

    rng = np.random.default_rng(7)
    e = rng.integers(0, 50, size=(7, 34)).astype(np.float64)
    h = rng.integers(0, 40, size=(7, 34)).astype(np.float64)
    need = rng.integers(1, 300, size=34).astype(np.float64)
    whole = bounds_mod._knapsack_rows(e, h, need)
    monkeypatch.setattr(bounds_mod, "KNAPSACK_CHUNK", 3 * 7)
    sliced = bounds_mod._knapsack_rows(e, h, need)
    assert sliced.shape == whole.shape
    assert np.array_equal(sliced, whole)
