"""The nest energy of the sub-tiles the buffer forces (``nest_floor.nest_forced_excess``).

With loop nests a frame's operand floor is the least nest energy of each conv
or linear layer over every sub-tile count ``m``; but the buffer leaves only the
``m`` whose sub-tile buffers fit beside a weight chunk, at least the fewest
``f`` the capacity bound knows (``bounds._weight_steps_of``). The frame bound
adds, per layer, the least over ``m >= f`` less the least over every ``m``.
Checked here against the exact local MIP of a frame where it is tight, on the
per-``m`` sums of the nest table, and (with every frame of random tiny networks)
by ``test_bounds.py::test_frame_bounds_with_loop_nests_random`` and
``test_item_cover.py::test_random_nest_frames_below_their_optimum``.

Mutations that make these tests fail:

* one more sub-tile than the buffer forces (``np.minimum(at[sel] + 1, ...)`` in
  ``bounds._signature_rows``): ``test_forced_sub_tiles_reach_the_frame_optimum``
  (the bound passes the exact optimum);
* the rise inflated by 1 fJ (``+ 1`` in ``nest_forced_excess``): the same test.

With the item cover, each sub-tile count ``m`` of a layer's weights is one choice
priced by its rise of the nest floor (``nest_floor.nest_sub_tile_excess``,
``bounds._nest_prices``). Mutations that make these tests fail:

* the price inflated by 1 fJ (``np.maximum(got, 0.0) + 1`` in ``_nest_prices``):
  ``test_sub_tile_choices_priced_by_nests_reach_the_optimum`` (52,614,881 against
  52,614,880);
* the price not less the forced sub-tiles' rise the frame already counts (``got =
  rise[idx[sel]][:, m]``): the same test (52,966,880: the 352,000 counted twice).

Without the choices (the knapsack of shallow networks, which are not covered in the
search), one sub-tile more than the fewest is an item at the layer's row, its excess
the floor's rise from ``m >= f`` to ``m >= f + 1`` (``bounds.NEST_ITEM``). Mutations
that make these tests fail:

* its excess inflated by 1 fJ (``- here) + 1`` for ``more`` in
  ``bounds._signature_rows``): ``test_one_more_sub_tile_item_reaches_the_optimum``
  (53,659,361 and 52,614,881);
* its excess not less the forced rise (``- 0 * here``): the same test (52,966,880 >
  52,614,880).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stems_opt.formulation.bounds as bounds_mod
import stems_opt.formulation.column_bounds as column_bounds
import stems_opt.formulation.nest_floor as nest_floor
from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.loops import (
    floor_chunk_counts,
    kind_sums_by_m,
    least_kind_sum,
    prefill_nest_floors,
)
from stems_opt.io import load_hardware, network_from_dict
from stems_opt.mapping import Order
from stems_opt.network import Axis
from stems_opt.problem import Objective, Problem

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bounds import nest_problem, solver_for
from test_item_cover import check_random, every_frame
from test_optimizer import RANDOM_SETTINGS

ROOT = Path(__file__).resolve().parent.parent

#: One 3x3 LIF conv (2 -> 4 channels, 8 x 4 map, T = 4) on a 740-bit GB with loop nests.
ONE_CONV = {"name": "one", "timesteps": 4,
            "input": {"channels": 2, "height": 8, "width": 4, "bits": 1},
            "layers": [{"name": "c1", "type": "conv", "inputs": ["input"],
                        "loop_dims": {"K": 4, "FY": 3, "FX": 3}, "neuron": "lif"}]}


def frame_bounds(forced: bool) -> tuple[object, dict]:
    p = nest_problem(ONE_CONV, 740, 4)
    cs = solver_for(p)
    (col,) = cs.columns
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(column_bounds, "NEST_FORCED", forced)
        cs.tighten(col)
    return cs, col


def frames_below_their_optimum(cs, col, plain, most_tiles: int | None = None) -> int:
    """Assert every frame bound of ``col`` (of at most ``most_tiles`` tiles) is at most
    the frame's local optimum; return how many rose above ``plain``'s bound."""
    rose = 0
    for s, bound in col.frame_bounds.items():
        if most_tiles is not None and s[4] > most_tiles:
            continue
        frame = cs._frame(s)
        local = None if frame is None else cs._local(*cs._restrict(frame, col.sig), 60.0)
        if local is not None:
            assert bound <= local[0], (s, bound, local[0])
        rose += bound > plain.frame_bounds[s]
    return rose


def test_forced_sub_tiles_reach_the_frame_optimum() -> None:
    """The one-tile frame at ``Tb = 4`` along OY: its cheapest choices cost 51,998,880 fJ
    and the knapsack adds nothing (every item's cheap side fits), but the layer's
    8-row tile cannot run as one sub-tile beside a weight chunk; with the nests of
    the sub-tile counts that fit the bound is 52,614,880 fJ, the frame's exact
    optimum."""
    spec = (0, 0, 4, Axis.OY, 1, Order.TIME_OUTER)
    cs, plain = frame_bounds(False)
    assert cs._cheapest(spec) == 51_998_880 and plain.frame_bounds[spec] == 51_998_880
    cs, col = frame_bounds(True)
    value, proven, _ = cs._local(*cs._restrict(cs._frame(spec), col.sig), 60.0)
    assert value == proven == 52_614_880
    assert col.frame_bounds[spec] == value
    # Every frame stays at most its optimum (and some rise).
    assert frames_below_their_optimum(cs, col, plain) >= 3


def test_sums_by_sub_tile_count_have_the_floor_as_least() -> None:
    """:func:`kind_sums_by_m` per ``m``: their least is the floor
    (:func:`least_kind_sum`), and one sub-tile of the whole 8-row map costs what
    one step of it costs (the sums of larger ``m`` add their steps)."""
    p = nest_problem(ONE_CONV, 740, 4)
    lay, nh = p.network.layers[0], nest_hardware(p.hardware)
    bounds = (0, 8)
    (memo,) = prefill_nest_floors([(lay, Axis.OY, bounds, floor_chunk_counts(lay.k, 4))], 4, nh)
    sums = kind_sums_by_m(lay, Axis.OY, bounds, memo)
    assert len(sums) == 8  # (m = 1 .. 8 rows)
    assert sums.min() == least_kind_sum(lay, Axis.OY, bounds, memo)
    assert np.isfinite(sums).all()


#: SEW-ResNet-152's ``s4_b0_conv2`` alone (3x3/2, 512 -> 512 channels, 14 x 14 -> 7 x 7,
#: T = 4): its 9,437,184 weight bits overflow the 1 MB global buffer (8,388,608 bits).
S4_CONV2 = {"name": "s4_conv2", "timesteps": 4,
            "input": {"channels": 512, "height": 14, "width": 14, "bits": 1},
            "layers": [{"name": "c2", "type": "conv", "inputs": ["input"],
                        "loop_dims": {"K": 512, "C": 512, "FY": 3, "FX": 3, "OY": 7, "OX": 7},
                        "stride": 2, "padding": "same", "neuron": "if"}]}


def s4_conv2_bounds(forced: bool) -> tuple[object, dict]:
    hw = replace(load_hardware(ROOT / "models" / "hardware" / "edge_1mb.yaml"), loop_nests=True)
    p = Problem(network_from_dict(S4_CONV2), hw, Objective.ENERGY)
    with pytest.MonkeyPatch.context() as mp:
        if not forced:
            mp.setattr(nest_floor, "nest_chunk_counts",
                       lambda lay, k_unroll, _: floor_chunk_counts(lay.k, k_unroll))
        cs = solver_for(p)
        (col,) = cs.columns
        cs.tighten(col)
    return cs, col


def test_weights_over_the_buffer_force_chunks() -> None:
    """No option holds weights larger than the buffer whole, so the nest floor
    takes its least over two chunks or more (``loops.nest_chunk_counts``). Here
    two chunks cost 100,352,000 fJ more than one (the 100,352 input bits filled
    into the input buffer once more per time batch, at 0.13 + 0.12 pJ per bit):
    the one-tile frame at ``Tb = 4`` along OY had a bound of 157,468,508,160 fJ
    and now has 157,568,860,160 fJ, its exact optimum; every frame stays at most
    its optimum. Dropping two chunks from the counts (``chunk_counts(...)[2:]``
    in ``nest_chunk_counts``) puts the bound 200,704,000 fJ above the optimum."""
    spec = (0, 0, 4, Axis.OY, 1, Order.TIME_OUTER)
    _, plain = s4_conv2_bounds(False)
    assert plain.frame_bounds[spec] == 157_468_508_160
    cs, col = s4_conv2_bounds(True)
    value, proven, _ = cs._local(*cs._restrict(cs._frame(spec), col.sig), 60.0)
    assert value == proven == 157_568_860_160
    assert col.frame_bounds[spec] == value
    # (the finer tilings take longer to solve and show nothing new)
    assert frames_below_their_optimum(cs, col, plain, most_tiles=2) >= 3


def test_sub_tile_choices_priced_by_nests_reach_the_optimum() -> None:
    """:data:`ONE_CONV` on a 900-bit GB, the two-tile frame at ``Tb = 4`` along OY
    (tiles of 4 rows), covered. Its cheapest choices cost 52,086,880 fJ. Each sub-tile
    count ``m`` has its own nest energy, 4,698,880 + 176,000 (m - 1) fJ for the one
    time batch; the buffer forces at least three sub-tiles beside a weight chunk, so
    the bound was 52,438,880 (the floor's rise at ``m >= 3``, 352,000). With the
    weights (288 bits) resident, three sub-tiles' buffers do not fit, four do: the
    choice of ``m = 4`` pays 176,000 more, and the bound becomes 52,614,880 fJ, the
    frame's exact optimum (four sub-tiles, resident weights, spilled state; the local
    MIP). Every frame stays at most its optimum."""
    spec = (0, 0, 4, Axis.OY, 2, Order.TIME_OUTER)
    p = nest_problem(ONE_CONV, 900, 4)
    lay, nh = p.network.layers[0], nest_hardware(p.hardware)
    (memo,) = prefill_nest_floors([(lay, Axis.OY, (0, 4, 8), floor_chunk_counts(lay.k, 4))],
                                  4, nh)
    assert kind_sums_by_m(lay, Axis.OY, (0, 4, 8), memo).tolist() == [
        4_698_880, 4_874_880, 5_050_880, 5_226_880]
    got = {}
    for on in (False, True):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(column_bounds, "SUBTILE_NESTS", on)
            mp.setattr(bounds_mod, "NEST_ITEM", on)  # (off, it would reach the optimum too)
            every_frame(mp)  # (not only each signature's least frames)
            cs = solver_for(p)
            (col,) = cs.columns
            cs.tighten(col, cover=True)
            got[on] = col
    assert cs._cheapest(spec) == 52_086_880
    assert got[False].frame_bounds[spec] == 52_438_880
    value, proven, _ = cs._local(*cs._restrict(cs._frame(spec), col.sig), 60.0)
    assert value == proven == 52_614_880
    assert got[True].frame_bounds[spec] == value
    assert frames_below_their_optimum(cs, got[True], got[False]) >= 1


@pytest.mark.parametrize(("size", "spec", "plain", "optimum"), [
    (800, (0, 0, 2, Axis.OY, 4, Order.SPACE_OUTER), 53_019_360, 53_659_360),
    (900, (0, 0, 4, Axis.OY, 2, Order.TIME_OUTER), 52_438_880, 52_614_880)])
def test_one_more_sub_tile_item_reaches_the_optimum(size: int, spec: tuple, plain: int,
                                                    optimum: int) -> None:
    """The knapsack alone (no item cover, no sub-tile choices), :data:`ONE_CONV`: one
    sub-tile more than the fewest ``f`` is an item at the layer's row whose cheap side
    holds the larger buffers of ``f`` sub-tiles and whose expensive side pays the nest
    floor's rise to ``m >= f + 1`` (176,000 fJ per time batch at ``Tb = 4``: see
    :func:`test_sub_tile_choices_priced_by_nests_reach_the_optimum`; twice 320,000 fJ
    at ``Tb = 2``). Where ``f`` sub-tiles do not fit beside what the other items hold,
    the bound reaches the frame's optimum (measured, the local MIP); every frame stays
    at most its optimum."""
    p = nest_problem(ONE_CONV, size, 4)
    got = {}
    for on in (False, True):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(bounds_mod, "NEST_ITEM", on)
            cs = solver_for(p)
            (col,) = cs.columns
            cs.tighten(col)
            got[on] = col
    assert got[False].frame_bounds[spec] == plain
    value, proven, _ = cs._local(*cs._restrict(cs._frame(spec), col.sig), 60.0)
    assert value == proven == optimum
    assert got[True].frame_bounds[spec] == optimum
    assert frames_below_their_optimum(cs, got[True], got[False]) >= 1


@settings(**{**RANDOM_SETTINGS, "max_examples": 12})
@given(st.data())
def test_random_nest_item_frames_below_their_optimum(data: st.DataObject) -> None:
    """With the one-more-sub-tile item in the knapsack and the item cover (the
    sub-tile choices off, so that the item is in both), every frame of random tiny
    networks is at most its local optimum, and the covered master at most the brute
    force (:func:`test_item_cover.check_random`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(column_bounds, "SUBTILE_NESTS", False)
        check_random(data, "nests")
