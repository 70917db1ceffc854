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
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import stems_opt.formulation.column_bounds as column_bounds
from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.loops import (
    floor_chunk_counts,
    kind_sums_by_m,
    least_kind_sum,
    prefill_nest_floors,
)
from stems_opt.mapping import Order
from stems_opt.network import Axis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bounds import nest_problem, solver_for

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
    rose = 0
    for s, bound in col.frame_bounds.items():
        frame = cs._frame(s)
        local = None if frame is None else cs._local(*cs._restrict(frame, col.sig), 60.0)
        if local is not None:
            assert bound <= local[0], (s, bound, local[0])
        rose += bound > plain.frame_bounds[s]
    assert rose >= 3


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
