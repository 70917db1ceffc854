"""The GB weight reads the buffer forces, for the energy bound without loop nests.

Without ``loop_nests`` the weights go from the GB to the array once per
sub-tile and timestep in every active tile
(:func:`stems_opt.cost.energy.layer_gb_access_bits`), and the operand floor
of a frame (:func:`stems_opt.formulation.operand_floors.frame_operand_floor_fj`)
counts one sub-tile per tile: the least any mapping reads. When the buffer
cannot hold a layer's state and output sub-tiles for a whole tile beside a
weight chunk, every mapping runs more sub-tiles, and each reads the weights
again. The capacity-aware bound (:func:`~stems_opt.formulation.bounds.frames_excess_bounds`)
knows the fewest sub-tiles that fit beside a chunk (its ``_weight_steps``,
which the DRAM traffic of chunked weights already uses); this module turns
them into GB read energy.

The term is added to a frame's bound beside the row knapsack: it is a cost
the knapsack's items (DRAM traffic) never count, and it holds for every
choice of the frame, whatever the items take.
"""

from __future__ import annotations

import itertools

import numpy as np

from stems_opt.cost.geometry import _window_reads
from stems_opt.network import Axis, Layer, Network


def subtile_weight_excess(fewest: np.ndarray, active: np.ndarray, timesteps: int,
                          weight_bits: int, use_rate: int) -> np.ndarray:
    """GB weight reads past one sub-tile per tile, per frame, in model units.

    Parameters
    ----------
    fewest
        Per frame, the fewest sub-tiles per tile that fit beside a weight chunk
        (0 where none fits: that frame is infeasible and bounded apart).
    active
        Per frame, the layer's non-empty tiles.
    timesteps
        The network's ``T``: the weights are read once per sub-tile per timestep.
    weight_bits
        The layer's weights.
    use_rate
        Cost of one GB weight read per bit (model units).
    """
    extra_subtiles = np.maximum(fewest, 1) - 1
    return (extra_subtiles * active * timesteps * weight_bits * use_rate).astype(np.float64)


def subtile_item(fewest: np.ndarray, finest: np.ndarray, rows: np.ndarray, fresh: np.ndarray,
                 row_bits: np.ndarray, input_bits: np.ndarray, active: np.ndarray,
                 timesteps: int, weight_bits: int, use_rate: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One more sub-tile than the fewest, as a knapsack item at the layer's own row.

    Per frame: the cheap side runs the fewest sub-tiles (``fewest``; what
    :func:`subtile_weight_excess` charges) and holds, over the finest
    sub-tiles the row's budget already reserves, the state and output rows
    (``row_bits`` each) and fresh input rows (``input_bits`` each) of its
    larger sub-tile in the bounded tile (``rows``, ``fresh``); the expensive
    side runs more and reads the weights at least once more per active tile
    and timestep (its smaller buffers are counted as freeing everything: a
    relaxation).

    Returns the item's excess (model units) and hold (bits), per frame.
    """
    fewest = np.maximum(fewest, 1)
    finest = np.maximum(finest, 1)

    def held(m: np.ndarray) -> np.ndarray:
        return -(-rows // m) * row_bits + -(-fresh // m) * input_bits

    hold = np.where(rows > 0, np.maximum(0, held(fewest) - held(finest)), 0)
    excess = active * timesteps * weight_bits * use_rate
    return excess.astype(np.float64), hold.astype(np.float64)


def gapped_costs(network: Network, lay: Layer, axis: Axis, bounds: np.ndarray,
                 src_row_bits: int, union_rows: int, read_rate: int, use_rate: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """What a gapped layer's weights and input cost with ``m`` sub-tiles, per tile count
    and ``m``, past what a frame's cheapest choices count: for the frame bound's
    sub-tiles the buffer forces, and its input's gap rows read from DRAM.

    A layer whose kernel is narrower than its stride (the 1x1 stride-2
    downsampling convs) reads ``rows(m)`` input rows per timestep with ``m``
    sub-tiles per tile: its sub-tiles' windows, gaps included
    (``docs/model.md`` 4), down to the union of the one-row windows with one
    output row per sub-tile; the GB sends it its weights ``T active m`` times.
    So its GB reads cost ``GB(m) = (T active m |W| + T rows(m) row) use_rate``
    (``row`` the input's bits per row and timestep: its only input), and the
    operand floor of the frame counts their least over ``m``
    (:func:`~stems_opt.formulation.operand_floors.gapped_weight_input_fj`).
    From DRAM (an input from outside the frame, not kept whole) it also reads
    the gap rows past the union the cheap bound charges (``union_rows``):
    ``(rows(m) - union) T row read_rate`` more. No capacity item counts any of
    these bits (a gapped reader's halo item has no excess: its windows do not
    overlap; chunked weights re-read from DRAM per sub-tile only add).

    A frame whose layer runs at least ``f`` sub-tiles per tile (the fewest that
    fit beside a weight chunk) therefore pays at least ``min over m >= f`` of
    the cost, less ``min over m`` of ``GB``. Returns both tables, without and
    with DRAM, as suffix minima over ``m`` less the least ``GB``: ``[n - 1,
    f]`` is the excess of a frame of ``n`` tiles with at least ``f``
    sub-tiles (columns past the finest split repeat its value; column 0 is
    column 1's).

    Parameters
    ----------
    bounds
        ``(tile counts, N + 1)`` row boundaries of the layer for every tile count
        (:func:`~stems_opt.formulation.bounds.all_tile_bounds`).
    src_row_bits, union_rows
        The input's bits per row and timestep and its union rows along ``axis``.
    read_rate, use_rate
        Model units per DRAM read bit and per GB read bit.
    """
    gb_tab, gaps = _gapped_tables(network, lay, axis, bounds, src_row_bits, union_rows,
                                  read_rate, use_rate)
    dram_tab = gb_tab + gaps
    least = gb_tab.min(axis=1, keepdims=True)

    def suffix(tab: np.ndarray) -> np.ndarray:
        out = np.minimum.accumulate(tab[:, ::-1], axis=1)[:, ::-1]
        out[:, 0] = out[:, 1]
        # (past the finest split no frame runs: repeat the finest's value)
        return np.where(np.isfinite(out), out, np.nanmin(np.where(np.isfinite(out), out, np.nan),
                                                         axis=1, keepdims=True)) - least

    return suffix(gb_tab), suffix(dram_tab)


def _gapped_tables(network: Network, lay: Layer, axis: Axis, bounds: np.ndarray,
                   src_row_bits: int, union_rows: int, read_rate: int, use_rate: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`gapped_costs`'s ``GB(m)`` and the gap rows' DRAM reads per tile count and
    ``m`` (``[n - 1, m]``, ``inf`` where no frame runs ``m``: column 0 and past the
    finest split), not yet suffix minima."""
    T, w = network.timesteps, lay.weight_size_bits
    N = bounds.shape[0]
    most = lay.extent(axis)
    gb_tab = np.full((N, most + 1), np.inf)
    gaps = np.full((N, most + 1), np.inf)
    for idx in range(N):
        b = tuple(int(x) for x in bounds[idx, :idx + 2])
        spans = [hi - lo for lo, hi in itertools.pairwise(b) if hi > lo]
        for m in range(1, min(spans) + 1):
            rows = _window_reads(network, lay.name, axis, b, m, False, 0)[0]
            gb_tab[idx, m] = (w * len(spans) * m + rows * src_row_bits) * T * use_rate
            gaps[idx, m] = max(0, rows - union_rows) * src_row_bits * T * read_rate
    return gb_tab, gaps


def gapped_dram_reads(network: Network, lay: Layer, axis: Axis, bounds: np.ndarray,
                      src_row_bits: int, union_rows: int, read_rate: int) -> np.ndarray:
    """The gap rows a gapped layer reads from DRAM past the union the cheap bound
    charges, with exactly ``m`` sub-tiles per tile: ``(rows(m) - union) T row
    read_rate`` per tile count and ``m`` (``[n - 1, m]``, ``inf`` where no frame runs
    ``m``), as :func:`gapped_costs` counts them (no capacity item counts these bits).
    With loop nests the layer's GB reads are its nests' energies: the frame bound
    prices each ``m`` by its nest energy and these reads together
    (:func:`gapped_nest_tables`)."""
    return _gapped_tables(network, lay, axis, bounds, src_row_bits, union_rows, read_rate,
                          0)[1]


def gapped_nest_tables(forced: np.ndarray, by_m: np.ndarray, gaps: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~stems_opt.formulation.nest_floor.nest_forced_excess` and
    :func:`~stems_opt.formulation.nest_floor.nest_sub_tile_excess` (``forced``,
    ``by_m``: ``[n - 1, f]`` and ``[n - 1, m]``, model units) of a gapped layer
    reading its input from DRAM, with the gap rows it reads there at each ``m``
    (``gaps``, :func:`gapped_dram_reads`)
    counted beside its nest energy.

    Fewer sub-tiles cost less nest energy but read more gap rows (SEW-ResNet-152's
    ``s3_b0_down`` at 384 KB, one tile at ``Tb = 4``: two sub-tiles read 26 of the
    input's 28 rows per timestep, 12 more than the 14 its windows need, 7.65 uJ,
    which the nest floor alone left out). A layer running ``m >= f`` sub-tiles pays
    at least ``nest(m) + gaps(m)`` over the least nest energy, so the frame bound
    counts ``min over m >= f`` of it (at least ``forced``: each term is at least
    the nest's; 0 where no ``m`` has both, as ``forced`` then is) and each sub-tile
    choice ``m`` pays ``nest(m) + gaps(m)`` (``by_m`` with the gaps; ``nan`` where
    ``by_m`` is). No capacity item counts the gap rows (``gapped_costs``)."""
    width = by_m.shape[1]
    g = np.full(by_m.shape, np.inf)
    k = min(width, gaps.shape[1])
    g[:, :k] = gaps[:by_m.shape[0], :k]
    joint = np.where(np.isnan(by_m), np.inf, by_m) + g
    suffix = np.minimum.accumulate(joint[:, ::-1], axis=1)[:, ::-1]
    # (past the finest split no frame runs: the finest's value, as ``forced`` holds)
    finite = np.isfinite(joint)
    last = np.where(finite.any(axis=1), width - 1 - np.argmax(finite[:, ::-1], axis=1), 0)
    past = np.arange(width)[None, :] > last[:, None]
    suffix = np.where(past, suffix[np.arange(len(last)), last][:, None], suffix)
    suffix[:, 0] = suffix[:, 1] if width > 1 else suffix[:, 0]
    cols = min(forced.shape[1], width)
    out = forced.copy()
    got = np.where(np.isfinite(suffix[:, :cols]), suffix[:, :cols], 0.0)
    out[:, :cols] = np.maximum(out[:, :cols], got)
    if forced.shape[1] > cols:  # (columns past ``by_m``'s: the last one's)
        out[:, cols:] = np.maximum(out[:, cols:], got[:, -1:])
    return out, np.where(np.isnan(by_m), np.nan, by_m + np.where(np.isfinite(g), g, 0.0))
