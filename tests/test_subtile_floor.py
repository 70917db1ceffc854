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

from stems_opt.formulation.operand_floors import frame_operand_floor_fj, operand_floor_fj
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
    that force none.

    Mutation of the one-more-sub-tile item (``subtile_floor.subtile_item``): its
    hold counting the state rows also where a time batch keeps the state (the
    kept-state item holds them already: ``v_row`` without ``np.where(S == 1, ...)``
    in ``frames_excess_bounds``) makes 600 and 1000 fail, and ``chain_T4`` energy
    in ``test_bounds``."""
    assert check_bounds(make_problem(ONE_CONV, size, 4, Objective.ENERGY)) > 0


def gapped_conv(k: int) -> dict:
    """A 1x1 stride-2 conv, 2 -> ``k`` channels, on a 2 x 8 x 8 spike map, T = 2."""
    return {"name": f"gapped_k{k}", "timesteps": 2,
            "input": {"channels": 2, "height": 8, "width": 8, "bits": 1},
            "layers": [{"name": "d", "type": "conv", "inputs": ["input"],
                        "loop_dims": {"K": k}, "stride": 2, "neuron": "lif"}]}


@pytest.mark.parametrize(("k", "want_bits"), [(1, 96), (16, 240)])
def test_gapped_layer_floor_trades_weights_against_input_rows(k: int, want_bits: int) -> None:
    """Weights and input rows of a gapped layer, least over the sub-tile count together.

    One tile of 4 output rows along OY, ``m`` sub-tiles of ``k`` rows each reading
    ``2k - 1`` input rows: ``8 - m`` rows of 2 x 8 = 16 bits, and the weights
    (``K x 2 x 4`` bits) ``m`` times; per timestep (T = 2) at 130 fJ a bit.

    * K = 1 (8 weight bits): ``8 m + 16 (8 - m)`` is least at m = 4: 32 + 64 = 96 bits
      (the weights once and the union of the one-row windows would be 8 + 64 = 72);
    * K = 16 (128 bits): ``128 m + 16 (8 - m)`` is least at m = 1: 128 + 112 = 240 bits
      (apart: 128 + 64 = 192).

    Mutations: only ``m = 1`` in ``gapped_weight_input_fj`` (``range(1, 2)``) makes
    the K = 1 case fail here and in ``test_gapped_bound_below_every_frame_optimum``
    (the floor passes the optimum); only the finest ``m`` makes the K = 16 case fail.
    """
    p = make_problem(gapped_conv(k), 4096, 4, Objective.ENERGY)
    hw, net = p.hardware, p.network
    T, gb_read_fj = 2, 130
    state_and_output_fj = (k * 16 * 12 * T * gb_read_fj  # state read per timestep
                           + (k * 16 * T + k * 16 * 12 * T) * 175)  # outputs, state written
    got = operand_floor_fj(net, 0, 0, Axis.OY, 1, hw)
    assert got == want_bits * T * gb_read_fj + state_and_output_fj
    assert got == frame_operand_floor_fj(net, 0, 0, Axis.OY, 1, hw)


@pytest.mark.parametrize("k", [1, 16])
@pytest.mark.parametrize("size", [900, 2000, 1 << 16])
def test_gapped_bound_below_every_frame_optimum(k: int, size: int) -> None:
    """Never above a frame's optimum, also where the buffer forces more sub-tiles
    (which read more weights but fewer input rows: the sub-tile term of
    ``subtile_floor`` leaves gapped layers out; with it, K = 16 at 900 bits fails);
    with room for everything and small weights (K = 1: the finest split reads
    the weights 4 times and no gap) the one-layer column's bound is its optimum;
    with K = 16 so is it now that the gap rows the optimum's one sub-tile reads
    from DRAM are counted (``test_gapped_input_gaps_from_dram_hand_case``)."""
    p = make_problem(gapped_conv(k), size, 4, Objective.ENERGY)
    assert check_bounds(p) > 0
    if size == 1 << 16:
        cs = solver_for(p)
        (col,) = cs.columns
        cs.price(col)
        assert col.exact and col.value == col.bound


def test_gapped_input_gaps_from_dram_hand_case() -> None:
    """``gapped_conv(16)`` with room for everything: one tile of 4 output rows, the
    network input from DRAM (16 bits a row per timestep, T = 2), |W| = 16 x 2 x 4 =
    128 bits. With ``m`` sub-tiles the layer reads ``8 - m`` input rows (4 in their
    union). Per ``m``, GB reads ``(128 m + 16 (8 - m)) * 2 * 130`` fJ and the gap rows
    from DRAM ``(4 - m) * 16 * 2 * 11,115`` fJ:

    * m = 1: 62,400 + 1,067,040 = 1,129,440;   m = 2: 91,520 + 711,360 = 802,880;
    * m = 3: 120,640 + 355,680 = 476,320;      m = 4: 149,760 + 0 = 149,760.

    The operand floor counts the least GB reads (62,400, m = 1) and the cheap bound
    the union from DRAM, so the one-tile frame pays 149,760 - 62,400 = 87,360 fJ more,
    and the column's bound reaches its exact value (four one-row sub-tiles).

    Mutation: the gap rows counted whole (``rows`` for ``rows - union_rows`` in
    ``subtile_floor.gapped_costs``) makes the frame's excess 4 * 355,680 + ... above
    its optimum: this test and ``test_gapped_bound_below_every_frame_optimum`` fail.
    """
    p = make_problem(gapped_conv(16), 1 << 16, 4, Objective.ENERGY)
    cs = solver_for(p)
    (col,) = cs.columns
    cs.tighten(col)
    spec = (0, 0, 2, Axis.OY, 1, Order.TIME_OUTER)
    assert col.frame_bounds[spec] - cs._cheapest(spec) == 87_360
    bound = col.bound
    cs.price(col)
    assert col.exact and col.value == bound


@pytest.mark.parametrize(("size", "extra_fj"), [(40_000, 1_239_680), (60_000, 1_067_040)])
def test_gapped_sub_tiles_the_buffer_forces(size: int, extra_fj: int) -> None:
    """``gapped_conv(256)``: |W| = 256 x 2 x 4 = 2,048 bits, so a sub-tile's weight reads
    (2,048 * 2 * 130 = 532,480 fJ) cost more than the gap rows it saves from DRAM
    (16 * 2 * 11,115 = 355,680 fJ a row): per ``m`` (as in the hand case above)
    ``(2,048 m + 16 (8 - m)) * 260 + (4 - m) * 355,680``:

    * m = 1: 561,600 + 1,067,040 = 1,628,640;  m = 2: 1,089,920 + 711,360 = 1,801,280.

    The least GB reads are m = 1's 561,600. With room (60,000 bits) the one-tile frame
    pays 1,628,640 - 561,600 = 1,067,040 fJ over it; at 40,000 bits one sub-tile's state
    (4 rows of 256 x 4 x 12 = 12,288 bits) and output do not fit beside a weight chunk,
    at least two run: 1,801,280 - 561,600 = 1,239,680 fJ. The column's bound is its
    exact value at both sizes.

    Mutation: one sub-tile more than the fewest (``at = fewest + 1`` in
    ``frames_excess_bounds``) puts the 60,000-bit frame 172,640 fJ above its optimum,
    and this test fails.
    """
    p = make_problem(gapped_conv(256), size, 4, Objective.ENERGY)
    cs = solver_for(p)
    (col,) = cs.columns
    cs.tighten(col)
    spec = (0, 0, 2, Axis.OY, 1, Order.TIME_OUTER)
    assert col.frame_bounds[spec] - cs._cheapest(spec) == extra_fj
    bound = col.bound
    cs.price(col)
    assert col.exact and col.value == bound
