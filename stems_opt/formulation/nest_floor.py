"""Every frame's operand-energy floor of an interval at once (``docs/model.md`` 6.3).

:func:`stems_opt.formulation.operand_floors.frame_operand_floor_fj` bounds one frame
(interval, axis, tile count ``n``, time batch) layer by layer; the columns
method asks it for every frame of every interval it tightens, tens of
thousands of times. :func:`interval_operand_floors` gives the same values for
every tile count of an interval in one array, from parts shared between
intervals:

* a conv or linear layer's nest floor depends on its own tile boundaries
  only, and those depend on the layers after it up to the interval's last
  (the halos run backwards), not on where the interval starts. So the floor
  of layer ``j`` for every tile count is solved once per ``(j, last, axis,
  Tb)`` (:func:`_nest_row`), its nests in one batch, and shared by every
  interval ``first..last`` with ``first <= j``;
* pools, adds and the coarse floors are linear in the tile geometry's
  active tiles and windows, read as arrays from the interval's table.

The values equal :func:`~stems_opt.formulation.operand_floors.frame_operand_floor_fj`
exactly (``tests/test_nest_floor.py``), so every proof using it is unchanged.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.loops import (
    NestHardware,
    floor_chunk_counts,
    kind_sums_by_m,
    layer_floor_fj,
    layer_partition_floor_fj,
    least_kind_sum,
    prefill_nest_floors,
)
from stems_opt.formulation.bounds import _interval_table, all_tile_bounds
from stems_opt.hardware import Hardware
from stems_opt.network import Axis, LayerKind, Network


@lru_cache(maxsize=8192)
def _bounds_rows(network: Network, j: int, last: int, axis: Axis) -> tuple[tuple[int, ...], ...]:
    """Layer ``j``'s tile boundaries in ``j..last`` for every tile count ``n``
    (index ``n - 1``): the same as in any interval ``first..last`` with
    ``first <= j``, since only the layers after ``j`` shape them."""
    b = all_tile_bounds(network, j, last, axis)[0]
    return tuple(tuple(b[n - 1, :n + 1].tolist()) for n in range(1, b.shape[0] + 1))


LAST_BLOCK = 16
"""Last layers whose intervals' nests are solved together (one batch per layer
and time batch: small batches cost several times more per nest)."""


@lru_cache(maxsize=16384)
def _nest_row(network: Network, j: int, last: int, axis: Axis, tb: int,
              nh: NestHardware, k_unroll: int) -> np.ndarray:
    """:func:`~stems_opt.cost.loops.layer_nest_floor_fj` of layer ``j`` (one time
    batch) for every tile count of ``j..last``."""
    lay = network.layers[j]
    memo, sums = _prefill_block(network, j, (last - j) // LAST_BLOCK, axis, tb, nh, k_unroll)
    out = []
    for b in _bounds_rows(network, j, last, axis):
        got = sums.get(b)
        if got is None:  # (the intervals ending at other layers share most tile bounds)
            got = sums[b] = least_kind_sum(lay, axis, b, memo)
        out.append(got)
    return np.array(out, dtype=np.int64)


@lru_cache(maxsize=16384)
def _prefill_block(network: Network, j: int, block: int, axis: Axis, tb: int,
                   nh: NestHardware, k_unroll: int
                   ) -> tuple[dict[int, tuple[int, ...]], dict[tuple[int, ...], int]]:
    """Solve the nests of every step of layer ``j`` for every tile count of the
    intervals ``j..last`` with ``last - j`` in block ``block`` of
    :data:`LAST_BLOCK`, in one batch; the layer's kind table, and an empty
    table of its floor per tile boundaries for :func:`_nest_row` to fill."""
    lay = network.layers[j]
    chunks = floor_chunk_counts(lay.k, k_unroll)
    lasts = range(j + block * LAST_BLOCK, min(len(network.layers), j + (block + 1) * LAST_BLOCK))
    return prefill_nest_floors(((lay, axis, b, chunks) for last in lasts
                                for b in dict.fromkeys(_bounds_rows(network, j, last, axis))),
                               tb, nh)[0], {}


@lru_cache(maxsize=16384)
def _nest_forced_row(network: Network, j: int, last: int, axis: Axis, tb: int,
                     nh: NestHardware, k_unroll: int) -> np.ndarray:
    """Per tile count of ``j..last`` (index ``n - 1``) and fewest sub-tiles ``f``
    (column ``f``; 0 is 1's, columns past the finest split repeat its value), what
    layer ``j``'s least nest energy of one time batch over ``m >= f`` sub-tiles adds
    to its least over every ``m`` (:func:`_nest_row`), in fJ (read-only)."""
    lay = network.layers[j]
    memo, _ = _prefill_block(network, j, (last - j) // LAST_BLOCK, axis, tb, nh, k_unroll)
    rows = _bounds_rows(network, j, last, axis)
    sums = [kind_sums_by_m(lay, axis, b, memo) for b in rows]
    most = max((len(v) for v in sums), default=0)
    out = np.zeros((len(rows), most + 1))
    for n, v in enumerate(sums):
        if not len(v) or not np.isfinite(v).any():
            continue  # (no nest fits: the floor counts nothing, nor does this)
        suffix = np.minimum.accumulate(v[::-1])[::-1]  # least over m >= f, f = 1 .. limit
        out[n, 1:len(v) + 1] = suffix - suffix[0]
        out[n, len(v) + 1:] = out[n, len(v)]  # (no m past the finest: the finest's)
        out[n, 0] = out[n, 1]
    out = np.where(np.isfinite(out), out, 0.0)  # (no m >= f fits: counted elsewhere)
    out.flags.writeable = False
    return out


def nest_forced_excess(network: Network, first: int, last: int, axis: Axis, hw: Hardware,
                       position: int, tb: int) -> np.ndarray:
    """What the operand floor of the conv or linear layer at ``position`` of
    ``first..last`` rises by when it runs at least ``f`` sub-tiles per tile, at time
    batch ``tb`` (all ``T / tb`` batches): ``[n - 1, f]`` in fJ, for the frame bound
    of :func:`~stems_opt.formulation.bounds.signatures_excess_bounds` (its ``f`` the
    fewest sub-tiles that fit beside a weight chunk). Every option of the layer runs
    one ``m`` per frame, costs at least the least energy of its steps at that ``m``,
    and the buffer leaves only ``m >= f``: so it costs at least the least over
    ``m >= f``, this much over the floor :func:`interval_operand_floors` counts."""
    nh = nest_hardware(hw)
    return network.timesteps // tb * _nest_forced_row(network, first + position, last, axis,
                                                      tb, nh, hw.array.factor("K"))


def interval_operand_floors(network: Network, first: int, last: int, axis: Axis,
                            hw: Hardware, tb: int | None = None) -> np.ndarray:
    """:func:`~stems_opt.formulation.operand_floors.frame_operand_floor_fj` of the
    frames of ``first..last`` along ``axis`` at time batch ``tb`` (``None``:
    any) for every tile count ``n`` (index ``n - 1``), in fJ (read-only)."""
    return _floors(network, first, last, axis, nest_hardware(hw), hw.loop_nests,
                   hw.array.factor("K"), tb)


@lru_cache(maxsize=65536)
def _floors(network: Network, first: int, last: int, axis: Axis, nh: NestHardware,
            loop_nests: bool, k_unroll: int, tb: int | None) -> np.ndarray:
    tab = _interval_table(network, first, last, axis)
    T = network.timesteps
    N = tab.active.shape[0]
    out = np.zeros(N, dtype=np.int64)
    for i, lay in enumerate(network.layers[first:last + 1]):
        if lay.kind is LayerKind.FLATTEN:
            continue
        active, windows = tab.active[:, i], tab.windows[:, i]
        if lay.has_weights and loop_nests:
            if tb is None:
                base = layer_floor_fj(lay, 0, T, nh)  # linear in the active tiles
                out += np.maximum(base + (layer_floor_fj(lay, 1, T, nh) - base) * active,
                                  layer_partition_floor_fj(lay, axis, T, nh))
            else:
                out += T // tb * _nest_row(network, first + i, last, axis, tb, nh,
                                           k_unroll)[:N]
            continue
        reads = lay.weight_size_bits * T * active + lay.state_size_bits * T
        for src in dict.fromkeys(lay.inputs):
            reads = reads + windows * network.tensor_row_bits(src, axis) * T
        writes = lay.output_size_bits(T) + lay.state_size_bits * T
        out += reads * nh.gb_read_fj_per_bit + writes * nh.gb_write_fj_per_bit
    out.flags.writeable = False
    return out


def frame_operand_floor(network: Network, first: int, last: int, axis: Axis, n: int,
                        hw: Hardware, tb: int | None = None) -> int:
    """One frame's value of :func:`interval_operand_floors` (tile count ``n``)."""
    return int(interval_operand_floors(network, first, last, axis, hw, tb)[n - 1])
