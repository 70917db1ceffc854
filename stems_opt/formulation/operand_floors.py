"""The operand-energy floor of frames, for every tile count of an interval at once.

Every energy bound of the columns method adds
:func:`frame_operand_floor_fj` (the reference, at the end of this module) of the frame:
the least operand energy below DRAM at its tile count (any time batch). That
function walks the interval's layers in Python for one tile count; the
search asks for it for every column opened (one tile) and for every tile
count of every column it tightens. Here the same integers come from arrays:

* With one tile every layer's tile is its whole extent whatever the
  interval, so the floor is a sum of per-layer parts and an interval's is a
  difference of two prefix sums (no geometry table per interval).
* For every tile count, the floor is linear in the table's active tiles and
  window rows per layer (:func:`~stems_opt.formulation.bounds._interval_table`),
  so one integer matrix product gives all tile counts.

Layers with weights whose windows have gaps (a kernel narrower than its
stride, as the 1x1 stride-2 downsampling convs of the ResNets) are the
exception (:func:`gapped_weight_input_fj`): without loop nests their
sub-tiles trade weight reads (once per sub-tile and timestep) against input
rows (one sub-tile reads the gaps between its one-row windows, the finest
split only the rows used), so their floor is the least over the sub-tile
count of both together, not the least of each apart.

``tests/test_share.py`` checks both against ``frame_operand_floor_fj`` on
every interval and tile count of several networks, with and without loop nests.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.geometry import _window_reads
from stems_opt.cost.loops import (
    NestHardware,
    chunk_counts,
    layer_floor_fj,
    layer_nest_floor_fj,
    layer_partition_floor_fj,
    prefill_nest_floors,
)
from stems_opt.formulation.bounds import (
    _gapped,
    _interval_table,
    _window_hi,
    all_tile_bounds,
    read_bits,
    tile_bounds_array,
)
from stems_opt.hardware import Hardware
from stems_opt.network import Axis, Layer, LayerKind, Network


def operand_floor_fj(network: Network, first: int, last: int, axis: Axis, n: int,
                     hw: Hardware) -> int:
    """``frame_operand_floor_fj(network, first, last, axis, n, hw)`` (any time batch)."""
    nh = nest_hardware(hw)
    if n == 1:
        prefix = _prefix(network, axis, nh, hw.loop_nests)
        return prefix[last + 1] - prefix[first]
    return int(_all_counts(network, first, last, axis, nh, hw.loop_nests)[n - 1])


def layer_operand_floors_fj(network: Network, axes: tuple[Axis, ...], hw: Hardware
                            ) -> tuple[int, ...]:
    """Per layer, a floor of its part of :func:`operand_floor_fj` in every frame
    along any of ``axes`` (fJ): the least over ``axes`` of its one-tile part.

    :func:`operand_floor_fj` is a sum of per-layer parts, each least with one
    tile (the columns' starting bound rests on that: ``docs/model.md`` 6.3),
    and the one-tile part does not depend on the interval; so these add up
    to a floor of every frame's operand energy, for the intervals the search
    has not opened yet (:meth:`~stems_opt.formulation.intervals.IntervalsMixin.excluded_bound`).
    """
    nh = nest_hardware(hw)
    prefixes = [_prefix(network, axis, nh, hw.loop_nests) for axis in axes]
    return tuple(min(p[j + 1] - p[j] for p in prefixes) for j in range(len(network.layers)))


def joint_gapped(lay: Layer, axis: Axis, loop_nests: bool) -> bool:
    """Whether ``lay``'s weight and input floor is :func:`gapped_weight_input_fj`."""
    return lay.has_weights and not loop_nests and _gapped(lay, axis)


def gapped_weight_input_fj(network: Network, lay: Layer, axis: Axis, bounds: tuple[int, ...],
                           nh: NestHardware) -> int:
    """The least GB energy of a gapped layer's weight and input reads (fJ) over
    its sub-tile counts, for tile ``bounds`` (one access per use, as
    :func:`stems_opt.cost.energy.layer_gb_access_bits` counts them).

    With ``m`` sub-tiles the weights are read ``m`` times per active tile and
    timestep and the inputs the rows of every sub-tile's window
    (:meth:`~stems_opt.cost.geometry.SegmentGeometry.window_reads`), for
    every ``m`` the option builder allows (1 to the smallest tile's rows).
    """
    spans = [hi - lo for lo, hi in itertools.pairwise(bounds) if hi > lo]
    row_bits = sum(network.tensor_row_bits(src, axis) for src in dict.fromkeys(lay.inputs))
    bits = min(lay.weight_size_bits * len(spans) * m
               + _window_reads(network, lay.name, axis, bounds, m, False, 0)[0] * row_bits
               for m in range(1, min(spans) + 1))
    return bits * network.timesteps * nh.gb_read_fj_per_bit


@lru_cache(maxsize=64)
def _prefix(network: Network, axis: Axis, nh: NestHardware, loop_nests: bool
            ) -> tuple[int, ...]:
    out = [0]
    for lay in network.layers:
        per_active, per_window, const = _layer_parts(network, lay, axis, nh, loop_nests)
        if joint_gapped(lay, axis, loop_nests):
            const += gapped_weight_input_fj(network, lay, axis, (0, lay.extent(axis)), nh)
        const += int(_partition_lift(network, lay, axis, nh, loop_nests, per_active + const))
        # One tile: the layer is active once, its window is its input's rows for its
        # whole extent (starting at input row 0).
        out.append(out[-1] + per_active + per_window * _one_tile_windows(network, lay, axis)
                   + const)
    return tuple(out)


def _partition_lift(network: Network, lay: Layer, axis: Axis, nh: NestHardware,
                    loop_nests: bool, coarse: int | np.ndarray) -> int | np.ndarray:
    """How far :func:`~stems_opt.cost.loops.layer_partition_floor_fj` lies above a
    conv or linear layer's coarse floor ``coarse`` (0 elsewhere): with loop
    nests, a layer's floor for any time batch is the larger of the two."""
    if not (lay.has_weights and loop_nests):
        return 0
    return np.maximum(0, layer_partition_floor_fj(lay, axis, network.timesteps, nh) - coarse)


def _one_tile_windows(network: Network, lay: Layer, axis: Axis) -> int:
    if lay.kind is LayerKind.FLATTEN:
        return 0
    if _gapped(lay, axis):
        src = lay.inputs[0]
        return read_bits(network, src, lay.name, axis) // (
            network.tensor_row_bits(src, axis) * network.timesteps)
    return int(_window_hi(lay, axis, np.array([lay.extent(axis)], dtype=np.int64))[0])


@lru_cache(maxsize=65536)
def _all_counts(network: Network, first: int, last: int, axis: Axis, nh: NestHardware,
                loop_nests: bool) -> np.ndarray:
    """The floor for every tile count ``n`` (index ``n - 1``) of ``first..last``."""
    tab = _interval_table(network, first, last, axis)
    layers = network.layers[first:last + 1]
    parts = np.array([_layer_parts(network, lay, axis, nh, loop_nests) for lay in layers],
                     dtype=np.int64)
    out = tab.active.astype(np.int64) @ parts[:, 0] \
        + tab.windows.astype(np.int64) @ parts[:, 1] + int(parts[:, 2].sum())
    for i, lay in enumerate(layers):
        out = out + _partition_lift(network, lay, axis, nh, loop_nests,
                                    parts[i, 0] * tab.active[:, i].astype(np.int64) + parts[i, 2])
    joint = [i for i, lay in enumerate(layers) if joint_gapped(lay, axis, loop_nests)]
    if joint:
        bounds = all_tile_bounds(network, first, last, axis)
        for i in joint:
            out = out + np.array([
                gapped_weight_input_fj(network, layers[i], axis,
                                       tuple(int(x) for x in bounds[i, n - 1, :n + 1]), nh)
                for n in range(1, len(out) + 1)], dtype=np.int64)
    return out


def _layer_parts(network: Network, lay: Layer, axis: Axis, nh: NestHardware,
                 loop_nests: bool) -> tuple[int, int, int]:
    """A layer's floor as ``per_active * active + per_window * windows + const``."""
    if lay.kind is LayerKind.FLATTEN:
        return 0, 0, 0
    T = network.timesteps
    r, w = nh.gb_read_fj_per_bit, nh.gb_write_fj_per_bit
    if joint_gapped(lay, axis, loop_nests):  # (weights and inputs: gapped_weight_input_fj)
        return 0, 0, lay.state_size_bits * T * r + (
            lay.output_size_bits(T) + lay.state_size_bits * T) * w
    if lay.has_weights and loop_nests:
        base = layer_floor_fj(lay, 0, T, nh)  # linear in the active tiles
        return layer_floor_fj(lay, 1, T, nh) - base, 0, base
    row_bits = sum(network.tensor_row_bits(src, axis) for src in dict.fromkeys(lay.inputs))
    const = lay.state_size_bits * T * r + (lay.output_size_bits(T) + lay.state_size_bits * T) * w
    return lay.weight_size_bits * T * r, row_bits * T * r, const


def frame_operand_floor_fj(network: Network, first: int, last: int, axis: Axis, n: int,
                           hw: Hardware, tb: int | None = None) -> int:
    """The least operand energy below DRAM (fJ) of a frame's layers, for any
    sub-tile counts and weight chunks, and the time batch ``tb`` (``None``:
    any time batch).

    Conv and linear layers on hardware with ``loop_nests``: with ``tb``,
    ``T / tb`` times :func:`stems_opt.cost.loops.layer_nest_floor_fj` (the
    least nest energy over the option builder's sub-tile and chunk counts,
    exact; two chunks or more when the weights overflow the buffer); without,
    the larger of :func:`stems_opt.cost.loops.layer_floor_fj`
    (every operand once through its levels, the weights once per active
    tile) and :func:`stems_opt.cost.loops.layer_partition_floor_fj` (the
    least nest energy over every split of its rows and time batch).
    Otherwise the accesses of :func:`stems_opt.cost.energy.layer_gb_access_bits`
    with one sub-tile per tile (more sub-tiles read the weights and the window
    overlaps again), or for windows with gaps the union of the one-row windows;
    for such layers with weights, the least weight and input reads together
    over the sub-tile count (:func:`gapped_weight_input_fj`).
    """
    tab = _interval_table(network, first, last, axis)
    nh = nest_hardware(hw)
    T = network.timesteps
    k_unroll = hw.array.factor("K")
    if tb is not None and hw.loop_nests:
        _prefill_interval(network, first, last, axis, tb, nh, k_unroll, hw.gb_capacity_bits)
    fj = 0
    for i, (lay, active, windows) in enumerate(zip(
            network.layers[first:last + 1], tab.active[n - 1].tolist(),
            tab.windows[n - 1].tolist(), strict=True)):
        if lay.kind is LayerKind.FLATTEN:
            continue
        if lay.has_weights and hw.loop_nests:
            if tb is None:
                fj += max(layer_floor_fj(lay, active, T, nh),
                          layer_partition_floor_fj(lay, axis, T, nh))
            else:
                b = tuple(int(x) for x in tile_bounds_array(network, first, last, axis, n)[i])
                chunks = _frame_chunks(lay, k_unroll, hw.gb_capacity_bits)
                fj += T // tb * layer_nest_floor_fj(lay, axis, b, tb, nh, chunks)
            continue
        reads = lay.state_size_bits * T
        if joint_gapped(lay, axis, hw.loop_nests):  # (weights against input rows)
            b = tuple(int(x) for x in tile_bounds_array(network, first, last, axis, n)[i])
            fj += gapped_weight_input_fj(network, lay, axis, b, nh)
        else:
            reads += lay.weight_size_bits * T * active + sum(
                windows * network.tensor_row_bits(src, axis) * T
                for src in dict.fromkeys(lay.inputs))
        writes = lay.output_size_bits(T) + lay.state_size_bits * T
        fj += reads * nh.gb_read_fj_per_bit + writes * nh.gb_write_fj_per_bit
    return fj


def _frame_chunks(lay: Layer, k_unroll: int, capacity_bits: int) -> tuple[int, ...]:
    """Every chunk count an option of ``lay`` may walk with a global buffer of
    ``capacity_bits``: those of :func:`~stems_opt.cost.loops.chunk_counts`, less 1
    when the weights alone overflow it (no option holds them whole)."""
    counts = chunk_counts(lay.k, k_unroll)
    return counts[1:] if lay.weight_size_bits > capacity_bits and len(counts) > 1 \
        else counts


@lru_cache(maxsize=65536)
def _prefill_interval(network: Network, first: int, last: int, axis: Axis, tb: int,
                      nh: NestHardware, k_unroll: int, capacity_bits: int) -> None:
    """Solve the nests of every step of ``first..last``'s conv and linear
    layers for every tile count at once (the frames of an interval are
    bounded together; one batch is several times cheaper than one per frame)."""
    bounds = all_tile_bounds(network, first, last, axis)
    prefill_nest_floors(
        ((lay, axis, tuple(int(x) for x in bounds[i, n - 1, :n + 1]),
          _frame_chunks(lay, k_unroll, capacity_bits))
         for i, lay in enumerate(network.layers[first:last + 1]) if lay.has_weights
         for n in range(1, bounds.shape[1] + 1)), tb, nh)
