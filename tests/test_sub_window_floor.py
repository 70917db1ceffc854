"""A sub-tile holds its whole input window: the frame bound's floor of that window.

Every sub-tile of a layer holds the window of its input rows while it runs
(from DRAM: read whole under ``reread``, its new rows beside the rows kept
under ``keep``; on chip: the producer's line buffer and current tile cover
it). The fewest sub-tiles that fit beside a weight chunk
(``bounds._weight_steps_of``) count, per timestep of the batch, at least
:func:`stems_opt.formulation.bounds._sub_window_rows` input rows for the
widest of them. Here that floor is checked against every tile and sub-tile
split of the cost model's own windows (brute force), by hand on a 3x3
stride-2 conv, and, on the instance it was made for (RED-LIF at 128 KB),
every bounded frame against its exact local optimum.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from stems_opt.formulation.bounds import _sub_window_floor, _sub_window_rows
from stems_opt.io import load_hardware, load_instance, network_from_dict
from stems_opt.mapping import Order
from stems_opt.network import Axis
from stems_opt.problem import Objective, Problem

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_bounds import check_bounds, frame_optima, solver_for  # noqa: E402
from test_optimizer import make_problem  # noqa: E402


def one_conv(height: int, f: int, s: int, same: bool, k: int = 2, bits: int = 1) -> dict:
    """One LIF conv, ``f x f`` stride ``s``, 2 -> ``k`` channels, on a 2 x ``height`` x
    ``max(4, f)`` map, T = 2."""
    return {"name": f"c{f}s{s}", "timesteps": 2,
            "input": {"channels": 2, "height": height, "width": max(4, f), "bits": bits},
            "layers": [{"name": "c", "type": "conv", "inputs": ["input"],
                        "loop_dims": {"K": k, "FY": f, "FX": f}, "stride": s,
                        "padding": "same" if same else 0, "neuron": "lif"}]}


def widest_window(layer, lo: int, hi: int, m: int) -> int:
    """The cost model's widest sub-tile window of output rows ``[lo, hi)`` in ``m``
    sub-tiles (the split of ``SegmentGeometry.max_sub_rows``)."""
    rows = hi - lo
    most = 0
    for j in range(m):
        a, b = lo + j * rows // m, lo + (j + 1) * rows // m
        if b > a:
            w0, w1 = layer.window(Axis.OY, a, b)
            most = max(most, w1 - w0)
    return most


def floor_of(layer, lo: int, hi: int, m: int) -> int:
    least, off_top, shared = _sub_window_floor(layer, Axis.OY)
    w0, w1 = layer.window(Axis.OY, lo, hi)
    got = _sub_window_rows(np.array([hi - lo]), np.array([w1 - w0]), np.array([lo > 0]),
                           np.array([m]), least, off_top, shared)
    return int(got[0])


def test_by_hand_3x3_stride_2() -> None:
    """3x3, stride 2, padding 1, 8 input rows -> 4 output rows. Output rows
    ``[lo, lo + r)`` read input rows ``[max(0, 2 lo - 1), min(8, 2 (lo + r)))``:
    ``2 r`` rows from the top, ``2 r + 1`` elsewhere; adjacent one-row windows
    share 1 row (``[2b - 1, 2b)``).

    * ``least = [0, 2, 4, 6, 8]``, ``off_top = [0, 3, 5, 7, 8]`` (4 rows start
      only at the top), ``shared = 1``.
    * The whole map (8 input rows) in 2 sub-tiles: ``[0, 2)`` reads 4 rows,
      ``[2, 4)`` reads ``[3, 8)``, 5: average ``ceil((8 + 1) / 2) = 5``, the
      largest (2 rows, not the first) ``off_top[2] = 5``: exactly 5.
    * In 3 sub-tiles ``[0, 1) [1, 2) [2, 4)``: 2, 3 and 5 rows; average
      ``ceil((8 + 2) / 3) = 4``, the largest (2 rows, after the first) 5: 5.
    * One sub-tile of the top 2 rows: ``least[2] = 4`` (``[0, 4)``); of rows
      ``[1, 3)``: ``off_top[2] = 5`` (``[1, 6)``).

    Mutation: the largest sub-tile taken past the top also with one sub-tile
    of a top tile (``(k >= 1)`` for ``(k >= 2)`` in ``_sub_window_rows``) gives 5
    for the top 2 rows: this test and the brute-force one fail.
    """
    layer = network_from_dict(one_conv(8, 3, 2, True)).layer("c")
    least, off_top, shared = _sub_window_floor(layer, Axis.OY)
    assert least.tolist() == [0, 2, 4, 6, 8]
    assert off_top.tolist() == [0, 3, 5, 7, 8]
    assert shared == 1
    assert [floor_of(layer, 0, 4, m) for m in (2, 3)] == [5, 5]
    assert [widest_window(layer, 0, 4, m) for m in (2, 3)] == [5, 5]
    assert floor_of(layer, 0, 2, 1) == 4 == widest_window(layer, 0, 2, 1)
    assert floor_of(layer, 1, 3, 1) == 5 == widest_window(layer, 1, 3, 1)


@pytest.mark.parametrize("f", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize("same", [True, False])
def test_never_above_the_widest_window(f: int, s: int, same: bool) -> None:
    """Every tile ``[lo, hi)`` of every layer shape, every sub-tile count: the floor
    is at most the cost model's widest sub-tile window, and it never grows with
    ``m`` (the bisection for the fewest sub-tiles relies on that).

    Kernels narrower than their stride (gapped windows, whose sub-tiles do
    not cover the tile's window span) are left out: the bound gives them no
    window floor (``_interval_table``), as here ``f = 1, s = 2`` would fail.

    Mutations that make this fail: ``shared + 1`` rows per adjacent pair in the
    average; ``least[size + 1]`` for the largest sub-tile (both in
    ``_sub_window_rows``)."""
    if f < s:
        pytest.skip("gapped windows get no window floor")
    for height in range(max(f, 4), 14):
        layer = network_from_dict(one_conv(height, f, s, same)).layer("c")
        extent = layer.extent(Axis.OY)
        for lo in range(extent):
            for hi in range(lo + 1, extent + 1):
                got = [floor_of(layer, lo, hi, m) for m in range(1, hi - lo + 1)]
                for m, floor in enumerate(got, start=1):
                    assert floor <= widest_window(layer, lo, hi, m), (height, lo, hi, m)
                assert all(a >= b for a, b in itertools.pairwise(got)), (height, lo, hi, got)


@pytest.mark.parametrize("size", [900, 1200, 1500, 2000])
@pytest.mark.parametrize("objective", [Objective.TRAFFIC, Objective.ENERGY],
                         ids=lambda o: o.value)
def test_strided_conv_frames_below_their_optimum(size: int, objective: Objective) -> None:
    """A 3x3 stride-2 LIF conv with 4-bit inputs (rows of 2 x 4 x 4 = 32 bits) and
    weights that fit only in chunks: every frame bound of every column at most
    the frame's proven optimum, where the buffer forces finer sub-tiles (at
    1200 bits the window floor is reached: one more row per window fails)."""
    p = make_problem(one_conv(12, 3, 2, True, k=8, bits=4), size, 4, objective)
    assert check_bounds(p) > 0


@pytest.fixture(scope="module")
def red_lif_128kb():
    base = load_instance(ROOT / "instances" / "red_lif_1mb.yaml")
    hw = load_hardware(ROOT / "models" / "hardware" / "edge_128kb.yaml")
    p = Problem(base.network, hw, Objective.TRAFFIC, "red_lif_128kb", (),
                base.max_segment_layers)
    return solver_for(p)


@pytest.mark.parametrize(("first", "last"), [(12, 12), (11, 13)])
def test_red_lif_128kb_lif_frames_below_their_optimum(red_lif_128kb, first: int,
                                                      last: int) -> None:
    """RED-LIF at 128 KB, ``lif12`` (its 1.18 Mbit of weights never fit whole) and
    ``add11..lif13``: the 12 frames with the least bounds, each at most its
    exact local optimum; the least of them, the column's bound, at least
    96 % of the best frame's optimum (``lif12``: 410.1 against 426.3 Mbit;
    ``add11..lif13``: 833.3 against 844.4; before the window floor 320.9 and
    506.6, from frames that do not fit at all).

    One frame is reached exactly: ``lif12`` at ``Tb = 2`` along OX in 41 tiles,
    space outer, 433,963,008 bits (tile-resident state, one sub-tile).

    Mutations that make ``add11..lif13`` fail: one more input row per sub-tile
    window (``+ 1`` on ``_sub_window_rows``'s result; the strided conv above at
    1200 bits fails too); the windows of inputs made in the interval counted
    twice (``2 *`` in ``win_row``)."""
    cs = red_lif_128kb
    (col,) = [c for c in cs.columns if (c.first, c.last) == (first, last)]
    cs.tighten(col)
    extra = cs._extra(first, last, col.sig)
    specs = sorted(cs.specs[(first, last)], key=lambda s: col.frame_bounds[s])[:12]
    best = None
    for spec, value in frame_optima(cs, col, specs):
        assert col.frame_bounds[spec] + extra <= value, (spec, col.frame_bounds[spec], value)
        best = value if best is None else min(best, value)
    assert best is not None
    assert col.bound >= 0.96 * best
    if (first, last) == (12, 12):
        spec = (12, 12, 2, Axis.OX, 41, Order.SPACE_OUTER)
        frame = cs._frame(spec)
        value, _, _ = cs._local(*cs._restrict(frame, col.sig), 60.0)
        assert col.frame_bounds[spec] + extra == value == 433_963_008
