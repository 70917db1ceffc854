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
    T, w = network.timesteps, lay.weight_size_bits
    N = bounds.shape[0]
    most = lay.extent(axis)
    gb_tab = np.full((N, most + 1), np.inf)
    dram_tab = np.full((N, most + 1), np.inf)
    for idx in range(N):
        b = tuple(int(x) for x in bounds[idx, :idx + 2])
        spans = [hi - lo for lo, hi in itertools.pairwise(b) if hi > lo]
        for m in range(1, min(spans) + 1):
            rows = _window_reads(network, lay.name, axis, b, m, False, 0)[0]
            g = (w * len(spans) * m + rows * src_row_bits) * T * use_rate
            gb_tab[idx, m] = g
            dram_tab[idx, m] = g + max(0, rows - union_rows) * src_row_bits * T * read_rate
    least = gb_tab.min(axis=1, keepdims=True)

    def suffix(tab: np.ndarray) -> np.ndarray:
        out = np.minimum.accumulate(tab[:, ::-1], axis=1)[:, ::-1]
        out[:, 0] = out[:, 1]
        # (past the finest split no frame runs: repeat the finest's value)
        return np.where(np.isfinite(out), out, np.nanmin(np.where(np.isfinite(out), out, np.nan),
                                                         axis=1, keepdims=True)) - least

    return suffix(gb_tab), suffix(dram_tab)
