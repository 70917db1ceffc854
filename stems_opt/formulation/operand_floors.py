"""The operand-energy floor of frames, for every tile count of an interval at once.

Every energy bound of the columns method adds
:func:`~stems_opt.formulation.bounds.frame_operand_floor_fj` of the frame:
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

``tests/test_share.py`` checks both against ``frame_operand_floor_fj`` on
every interval and tile count of several networks, with and without loop nests.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.loops import NestHardware, layer_floor_fj
from stems_opt.formulation.bounds import _gapped, _interval_table, _window_hi, read_bits
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


@lru_cache(maxsize=64)
def _prefix(network: Network, axis: Axis, nh: NestHardware, loop_nests: bool
            ) -> tuple[int, ...]:
    out = [0]
    for lay in network.layers:
        per_active, per_window, const = _layer_parts(network, lay, axis, nh, loop_nests)
        # One tile: the layer is active once, its window is its input's rows for its
        # whole extent (starting at input row 0).
        out.append(out[-1] + per_active + per_window * _one_tile_windows(network, lay, axis)
                   + const)
    return tuple(out)


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
    parts = np.array([_layer_parts(network, lay, axis, nh, loop_nests)
                      for lay in network.layers[first:last + 1]], dtype=np.int64)
    return tab.active.astype(np.int64) @ parts[:, 0] \
        + tab.windows.astype(np.int64) @ parts[:, 1] + int(parts[:, 2].sum())


def _layer_parts(network: Network, lay: Layer, axis: Axis, nh: NestHardware,
                 loop_nests: bool) -> tuple[int, int, int]:
    """A layer's floor as ``per_active * active + per_window * windows + const``."""
    if lay.kind is LayerKind.FLATTEN:
        return 0, 0, 0
    T = network.timesteps
    if lay.has_weights and loop_nests:
        base = layer_floor_fj(lay, 0, T, nh)  # linear in the active tiles
        return layer_floor_fj(lay, 1, T, nh) - base, 0, base
    r, w = nh.gb_read_fj_per_bit, nh.gb_write_fj_per_bit
    row_bits = sum(network.tensor_row_bits(src, axis) for src in dict.fromkeys(lay.inputs))
    const = lay.state_size_bits * T * r + (lay.output_size_bits(T) + lay.state_size_bits * T) * w
    return lay.weight_size_bits * T * r, row_bits * T * r, const
