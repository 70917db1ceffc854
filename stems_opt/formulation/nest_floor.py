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
* every other layer's part (pools, adds, the coarse floors) depends on its
  active tiles and windows, which its tile boundaries fix: also shared by the
  intervals ending at the same layer;
* so the intervals ending at ``last`` add up suffix sums of these parts,
  filled from ``last`` down (:class:`_Suffix`): an interval's floor is one of
  them, with no geometry table per interval.

The values equal :func:`~stems_opt.formulation.operand_floors.frame_operand_floor_fj`
exactly (``tests/test_nest_floor.py``), so every proof using it is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.loops import (
    NestHardware,
    kind_sums,
    layer_floor_fj,
    layer_partition_floor_fj,
    nest_chunk_counts,
    prefill_nest_floors,
)
from stems_opt.formulation.bounds import _gapped, _window_hi, _window_lo, read_bits
from stems_opt.hardware import Hardware
from stems_opt.network import Axis, LayerKind, Network


class _Down:
    """Layer ``j``'s tile boundaries in ``j..last`` along ``axis`` for every tile
    count, for ``j`` from ``last`` down, filled on demand: ``at(j)`` is
    :func:`~stems_opt.formulation.bounds.all_tile_bounds` ``(network, j, last,
    axis)[0]``, shape ``(N, N + 1)`` with ``N`` the least extent of ``j..last``.

    Only the layers after ``j`` shape its boundaries (the halos run backwards),
    and ``all_tile_bounds`` gives each tile count ``n`` the same row whatever
    its largest ``N``, so layer ``j``'s array is its consumers' first rows and
    columns run through their windows: one step per layer, not a table per
    interval."""

    def __init__(self, network: Network, last: int, axis: Axis) -> None:
        self.network, self.last, self.axis = network, last, axis
        self.outputs = frozenset(network.output_names)
        self.arrays: dict[int, np.ndarray] = {}
        self.least = np.iinfo(np.int64).max  # the least extent of the layers filled

    def at(self, j: int) -> np.ndarray:
        """Layer ``j``'s boundaries (read-only)."""
        for i in range(min(self.arrays, default=self.last + 1) - 1, j - 1, -1):
            self._fill(i)
        return self.arrays[j]

    def _fill(self, i: int) -> None:
        net, axis = self.network, self.axis
        lay = net.layers[i]
        extent = lay.extent(axis)
        N = self.least = min(self.least, extent)
        consumers = net.consumers(lay.name)
        inner = [k for k in map(net.index, consumers) if i < k <= self.last]
        n = np.arange(1, N + 1)[:, None]
        t = np.minimum(np.arange(N + 1)[None, :], n)  # (N, N + 1): t past n is n
        is_out = lay.name in self.outputs or not consumers or len(inner) < len(consumers)
        b = (t * extent) // n if is_out else np.zeros_like(t)
        for k in inner:
            b = np.maximum(b, _window_hi(net.layers[k], axis, self.arrays[k][:N, :N + 1]))
        b = np.minimum(b, extent)
        b[:, 0] = 0
        b[t == n] = extent
        b.flags.writeable = False
        self.arrays[i] = b


@lru_cache(maxsize=1024)
def _down(network: Network, last: int, axis: Axis) -> _Down:
    return _Down(network, last, axis)


@lru_cache(maxsize=8192)
def _bounds_rows(network: Network, j: int, last: int, axis: Axis) -> tuple[tuple[int, ...], ...]:
    """Layer ``j``'s tile boundaries in ``j..last`` for every tile count ``n``
    (index ``n - 1``): the same as in any interval ``first..last`` with
    ``first <= j``, since only the layers after ``j`` shape them."""
    b = _down(network, last, axis).at(j)
    return tuple(tuple(b[n - 1, :n + 1].tolist()) for n in range(1, b.shape[0] + 1))


LAST_BLOCK = 16
"""Last layers whose intervals' nests are solved together (one batch per layer
and time batch: small batches cost several times more per nest)."""


@lru_cache(maxsize=16384)
def _nest_row(network: Network, j: int, last: int, axis: Axis, tb: int,
              nh: NestHardware, k_unroll: int, capacity_bits: int) -> np.ndarray:
    """:func:`~stems_opt.cost.loops.layer_nest_floor_fj` of layer ``j`` (one time
    batch) for every tile count of ``j..last``."""
    sums = _block_sums(network, j, last, axis, tb, nh, k_unroll, capacity_bits)
    return np.array([sums(b)[0] for b in _bounds_rows(network, j, last, axis)],
                    dtype=np.int64)


def _block_sums(network: Network, j: int, last: int, axis: Axis, tb: int, nh: NestHardware,
                k_unroll: int, capacity_bits: int
                ) -> Callable[[tuple[int, ...]], tuple[int, np.ndarray]]:
    """Layer ``j``'s :func:`~stems_opt.cost.loops.kind_sums` by tile boundaries,
    each computed once per kind table: the intervals ending at other layers
    share most tile boundaries, and the layers of one shape (SEW-ResNet's
    repeated blocks) share the table and, translated, the boundaries."""
    lay = network.layers[j]
    memo, sums = _prefill_block(network, j, (last - j) // LAST_BLOCK, axis, tb, nh, k_unroll,
                                 capacity_bits)

    def of(b: tuple[int, ...]) -> tuple[int, np.ndarray]:
        got = sums.get(b)
        if got is None:
            got = sums[b] = kind_sums(lay, axis, b, memo)
        return got
    return of


_SUMS: dict[int, tuple[dict, dict]] = {}
"""Per kind table (by identity, kept with it), its layer's
:func:`~stems_opt.cost.loops.kind_sums` per tile boundaries: the table's key
(the layer's shape, axis, time batch, hardware, chunk counts) and the
boundaries fix them."""


def _table_sums(memo: dict[int, tuple[int, ...]]
                ) -> dict[tuple[int, ...], tuple[int, np.ndarray]]:
    hit = _SUMS.get(id(memo))
    if hit is None or hit[0] is not memo:
        hit = _SUMS[id(memo)] = (memo, {})
    return hit[1]


@lru_cache(maxsize=16384)
def _prefill_block(network: Network, j: int, block: int, axis: Axis, tb: int,
                   nh: NestHardware, k_unroll: int, capacity_bits: int
                   ) -> tuple[dict[int, tuple[int, ...]],
                              dict[tuple[int, ...], tuple[int, np.ndarray]]]:
    """Solve the nests of every step of layer ``j`` for every tile count of the
    intervals ``j..last`` with ``last - j`` in block ``block`` of
    :data:`LAST_BLOCK`, in one batch (tile boundaries whose sums are known
    have every kind solved); the layer's kind table, and its
    :func:`~stems_opt.cost.loops.kind_sums` per tile boundaries
    (:func:`_table_sums`) for :func:`_block_sums` to fill."""
    lay = network.layers[j]
    chunks = nest_chunk_counts(lay, k_unroll, capacity_bits)
    lasts = range(j + block * LAST_BLOCK, min(len(network.layers), j + (block + 1) * LAST_BLOCK))
    every = dict.fromkeys(b for last in lasts for b in _bounds_rows(network, j, last, axis))
    memo = prefill_nest_floors(((lay, axis, b, chunks) for b in every), tb, nh)[0]
    return memo, _table_sums(memo)


@lru_cache(maxsize=16384)
def _nest_forced_row(network: Network, j: int, last: int, axis: Axis, tb: int,
                     nh: NestHardware, k_unroll: int, capacity_bits: int) -> np.ndarray:
    """Per tile count of ``j..last`` (index ``n - 1``) and fewest sub-tiles ``f``
    (column ``f``; 0 is 1's, columns past the finest split repeat its value), what
    layer ``j``'s least nest energy of one time batch over ``m >= f`` sub-tiles adds
    to its least over every ``m`` (:func:`_nest_row`), in fJ (read-only)."""
    of = _block_sums(network, j, last, axis, tb, nh, k_unroll, capacity_bits)
    rows = _bounds_rows(network, j, last, axis)
    sums = [of(b)[1] for b in rows]
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


@lru_cache(maxsize=16384)
def _nest_by_m_row(network: Network, j: int, last: int, axis: Axis, tb: int,
                   nh: NestHardware, k_unroll: int, capacity_bits: int) -> np.ndarray:
    """Per tile count of ``j..last`` (index ``n - 1``) and sub-tile count ``m``
    (column ``m``; column 0 and the ``m`` past the finest split are ``nan``), what
    layer ``j``'s least nest energy of one time batch with exactly ``m`` sub-tiles
    adds to its least over every ``m`` (:func:`_nest_row`), in fJ; ``nan`` where some
    step of ``m`` fits no nest (read-only)."""
    of = _block_sums(network, j, last, axis, tb, nh, k_unroll, capacity_bits)
    sums = [of(b) for b in _bounds_rows(network, j, last, axis)]
    most = max((len(v) for _, v in sums), default=0)
    out = np.full((len(sums), most + 1), np.nan)
    for n, (least, v) in enumerate(sums):
        out[n, 1:len(v) + 1] = np.where(np.isfinite(v), v - least, np.nan)
    out.flags.writeable = False
    return out


def nest_sub_tile_excess(network: Network, first: int, last: int, axis: Axis, hw: Hardware,
                         position: int, tb: int) -> np.ndarray:
    """What the operand floor of the conv or linear layer at ``position`` of
    ``first..last`` rises by when it runs exactly ``m`` sub-tiles per tile, at time
    batch ``tb`` (all ``T / tb`` batches): ``[n - 1, m]`` in fJ, ``nan`` where no
    option runs ``m`` (past the finest split, or a step no nest fits). Every option
    of the layer with ``m`` sub-tiles costs at least its steps' least nest energy at
    that ``m`` (least over the chunk counts), this much over the floor
    :func:`interval_operand_floors` counts: the price of each sub-tile count in the
    item cover's choices (:mod:`~stems_opt.formulation.subtile_cover`)."""
    nh = nest_hardware(hw)
    return network.timesteps // tb * _nest_by_m_row(network, first + position, last, axis,
                                                    tb, nh, hw.array.factor("K"),
                                                    hw.gb_capacity_bits)


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
                                                      tb, nh, hw.array.factor("K"),
                                                      hw.gb_capacity_bits)


def interval_operand_floors(network: Network, first: int, last: int, axis: Axis,
                            hw: Hardware, tb: int | None = None) -> np.ndarray:
    """:func:`~stems_opt.formulation.operand_floors.frame_operand_floor_fj` of the
    frames of ``first..last`` along ``axis`` at time batch ``tb`` (``None``:
    any) for every tile count ``n`` (index ``n - 1``), in fJ (read-only)."""
    return _floors(network, first, last, axis, nest_hardware(hw), hw.loop_nests,
                   hw.array.factor("K"), hw.gb_capacity_bits, tb)


@lru_cache(maxsize=65536)
def _floors(network: Network, first: int, last: int, axis: Axis, nh: NestHardware,
            loop_nests: bool, k_unroll: int, capacity_bits: int, tb: int | None) -> np.ndarray:
    return _suffix(network, last, axis, nh, loop_nests, k_unroll, capacity_bits, tb).at(first)


class _Suffix:
    """The floors of the intervals ending at ``last`` (one ``(network, last, axis,
    hardware, time batch)``), filled from ``last`` down: ``at(first)`` is
    ``first``'s layer part plus ``at(first + 1)``'s first ``N`` entries, ``N``
    the least extent of ``first..last`` (the interval's tile counts)."""

    def __init__(self, network: Network, last: int, axis: Axis, nh: NestHardware,
                 loop_nests: bool, k_unroll: int, capacity_bits: int, tb: int | None) -> None:
        self.key = (network, last, axis, nh, loop_nests, k_unroll, capacity_bits, tb)
        self.sums: dict[int, np.ndarray] = {}

    def at(self, first: int) -> np.ndarray:
        """The floors of ``first..last`` for every tile count (read-only)."""
        network, last = self.key[:2]
        for j in range(min(self.sums, default=last + 1) - 1, first - 1, -1):
            part = _layer_part(network, j, *self.key[1:])
            out = part + self.sums[j + 1][:len(part)] if j < last else part.copy()
            out.flags.writeable = False
            self.sums[j] = out
        return self.sums[first]


@lru_cache(maxsize=4096)
def _suffix(network: Network, last: int, axis: Axis, nh: NestHardware, loop_nests: bool,
            k_unroll: int, capacity_bits: int, tb: int | None) -> _Suffix:
    return _Suffix(network, last, axis, nh, loop_nests, k_unroll, capacity_bits, tb)


def _layer_part(network: Network, j: int, last: int, axis: Axis, nh: NestHardware,
                loop_nests: bool, k_unroll: int, capacity_bits: int, tb: int | None
                ) -> np.ndarray:
    """Layer ``j``'s part of the floor of every interval ``first..last`` with
    ``first <= j``, per tile count of ``j..last`` (index ``n - 1``): it depends
    on the layer's tile boundaries only, which the layers after it fix."""
    lay = network.layers[j]
    T = network.timesteps
    if lay.has_weights and loop_nests and tb is not None:
        return T // tb * _nest_row(network, j, last, axis, tb, nh, k_unroll, capacity_bits)
    b = _down(network, last, axis).at(j)
    if lay.kind is LayerKind.FLATTEN:
        return np.zeros(b.shape[0], dtype=np.int64)
    rows = b[:, 1:] - b[:, :-1]  # empty past n
    active = np.count_nonzero(rows, axis=1)
    if lay.has_weights and loop_nests:
        base = layer_floor_fj(lay, 0, T, nh)  # linear in the active tiles
        return np.maximum(base + (layer_floor_fj(lay, 1, T, nh) - base) * active,
                          layer_partition_floor_fj(lay, axis, T, nh))
    if _gapped(lay, axis):  # (as bounds._interval_table: the union of the one-row windows)
        src = lay.inputs[0]
        windows = np.full(b.shape[0], read_bits(network, src, lay.name, axis) // (
            network.tensor_row_bits(src, axis) * T), dtype=np.int64)
    else:
        windows = np.where(rows > 0, _window_hi(lay, axis, b[:, 1:])
                           - _window_lo(lay, axis, b[:, :-1]), 0).sum(axis=1)
    reads = lay.weight_size_bits * T * active + lay.state_size_bits * T
    for src in dict.fromkeys(lay.inputs):
        reads = reads + windows * network.tensor_row_bits(src, axis) * T
    writes = lay.output_size_bits(T) + lay.state_size_bits * T
    return reads * nh.gb_read_fj_per_bit + writes * nh.gb_write_fj_per_bit


_FRAME_FLOORS: dict[tuple, tuple[Hardware, np.ndarray]] = {}
""":func:`interval_operand_floors` by ``(network, first, last, axis, id(hw), tb)``,
the hardware kept to check identity: the columns method asks for one frame at a
time, over a hundred thousand times a search."""


def frame_operand_floor(network: Network, first: int, last: int, axis: Axis, n: int,
                        hw: Hardware, tb: int | None = None) -> int:
    """One frame's value of :func:`interval_operand_floors` (tile count ``n``)."""
    key = (network, first, last, axis, id(hw), tb)
    hit = _FRAME_FLOORS.get(key)
    if hit is None or hit[0] is not hw:
        if len(_FRAME_FLOORS) >= 65536:
            _FRAME_FLOORS.clear()
        hit = _FRAME_FLOORS[key] = (hw, interval_operand_floors(network, first, last, axis,
                                                                hw, tb))
    return int(hit[1][n - 1])
