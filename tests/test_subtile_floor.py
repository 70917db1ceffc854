"""The GB weight reads the buffer forces (``subtile_floor.py``): energy without loop nests.

A layer whose state and output sub-tiles for a whole tile do not fit beside
a weight chunk runs at least two sub-tiles, and without ``loop_nests`` each
sub-tile reads the weights from the GB again (once per timestep). The frame
bound charges those reads; here it is checked never to exceed the frame's
exact optimum (the local MIP, solved to optimality) on every frame and
signature, and to reach it where the buffer forces the split.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from stems_opt.formulation.subtile_floor import subtile_weight_excess
from stems_opt.mapping import Order
from stems_opt.network import Axis
from stems_opt.problem import Objective

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bounds import check_bounds, solver_for
from test_optimizer import make_problem

# One 1x1 conv, 2 -> 4 channels on a 4 x 4 map, T = 2, LIF state (12 bits).
ONE_CONV = {"name": "one_conv", "timesteps": 2,
            "input": {"channels": 2, "height": 4, "width": 4, "bits": 1},
            "layers": [{"name": "c1", "type": "conv", "inputs": ["input"],
                        "loop_dims": {"K": 4}, "neuron": "lif"}]}


def test_excess_counts_the_sub_tiles_past_one() -> None:
    # 3 sub-tiles in each of 2 tiles, T = 4, 32 weight bits at 130 fJ:
    # (3 - 1) * 2 * 4 * 32 * 130 = 66,560; "no sub-tile fits" (0) counts as 1.
    got = subtile_weight_excess(np.array([3, 1, 0]), np.array([2, 2, 2]), 4, 32, 130)
    assert got.tolist() == [66_560.0, 0.0, 0.0]


def test_one_tile_frame_bound_reaches_the_forced_split() -> None:
    """600 bits of GB: the layer's state alone is 4 x 4 x 4 x 12 = 768 bits, so one
    sub-tile per tile cannot fit and the one-tile frame runs at least 2 sub-tiles.
    Its weights (4 x 2 x 4 = 32 bits) are then read from the GB once more per
    timestep: 32 * 2 * 130 fJ = 8,320 fJ over the one-sub-tile floor, and the
    frame's exact optimum is exactly that (the bound is reached).

    Mutation: counting every sub-tile (``np.maximum(fewest, 1)`` without the
    ``- 1`` in ``subtile_weight_excess``) puts the bound 8,320 fJ above the
    optimum, and this test and ``test_bound_below_every_frame_optimum`` fail.
    """
    p = make_problem(ONE_CONV, 600, 4, Objective.ENERGY)
    cs = solver_for(p)
    (col,) = cs.columns
    cs.tighten(col)
    spec = (0, 0, 2, Axis.OY, 1, Order.TIME_OUTER)  # the whole T in one tile
    frame = cs._frame(spec)
    value, proven, chosen = cs._local(*cs._restrict(frame, col.sig), 60.0)
    assert value == proven
    assert chosen["c1"].m == 2
    assert col.frame_bounds[spec] == value
    assert col.frame_bounds[spec] - cs._cheapest(spec) == 32 * 2 * 130


@pytest.mark.parametrize("size", [280, 440, 600, 840, 1000])
def test_bound_below_every_frame_optimum(size: int) -> None:
    """Every frame of every column, from buffers that force 4 sub-tiles to ones
    that force none."""
    assert check_bounds(make_problem(ONE_CONV, size, 4, Objective.ENERGY)) > 0
