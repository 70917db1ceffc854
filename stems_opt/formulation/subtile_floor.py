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

import numpy as np


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
