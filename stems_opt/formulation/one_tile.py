"""The operand-energy floor of one-tile frames, as sums of per-layer parts.

Every column starts at the cost of its interval's cheapest choices, which
for energy includes :func:`~stems_opt.formulation.bounds.frame_operand_floor_fj`
of the interval's one-tile frame (one tile reads the fewest operands at the
GB). That function builds the tile geometry of the interval for every tile
count; with one tile, though, every layer's tile is its whole extent
whatever the interval, so the floor is a sum of per-layer parts, and an
interval's floor is a difference of two prefix sums. This keeps building the
columns of a deep network (thousands of intervals) from building thousands
of geometry tables.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.loops import NestHardware, layer_floor_fj
from stems_opt.formulation.bounds import _gapped, _window_hi, read_bits
from stems_opt.hardware import Hardware
from stems_opt.network import Axis, Layer, LayerKind, Network


def one_tile_operand_floor_fj(network: Network, first: int, last: int, axis: Axis,
                              hw: Hardware) -> int:
    """``frame_operand_floor_fj(network, first, last, axis, 1, hw)`` (any time batch).

    Exact integers: ``tests/test_share.py`` checks it against that function
    on every interval of several networks.
    """
    prefix = _prefix(network, axis, nest_hardware(hw), hw.loop_nests)
    return prefix[last + 1] - prefix[first]


@lru_cache(maxsize=64)
def _prefix(network: Network, axis: Axis, nh: NestHardware, loop_nests: bool
            ) -> tuple[int, ...]:
    out = [0]
    for lay in network.layers:
        out.append(out[-1] + _layer_part(network, lay, axis, nh, loop_nests))
    return tuple(out)


def _layer_part(network: Network, lay: Layer, axis: Axis, nh: NestHardware,
                loop_nests: bool) -> int:
    """The layer's term of the floor with one tile: its tile is its whole extent."""
    if lay.kind is LayerKind.FLATTEN:
        return 0
    T = network.timesteps
    if lay.has_weights and loop_nests:
        return layer_floor_fj(lay, 1, T, nh)
    if _gapped(lay, axis):
        src = lay.inputs[0]
        windows = read_bits(network, src, lay.name, axis) // (
            network.tensor_row_bits(src, axis) * T)
    else:
        # One tile: rows [0, extent), whose window starts at input row 0.
        windows = int(_window_hi(lay, axis, np.array([lay.extent(axis)], dtype=np.int64))[0])
    reads = lay.weight_size_bits * T + lay.state_size_bits * T
    reads += sum(windows * network.tensor_row_bits(src, axis) * T
                 for src in dict.fromkeys(lay.inputs))
    writes = lay.output_size_bits(T) + lay.state_size_bits * T
    return reads * nh.gb_read_fj_per_bit + writes * nh.gb_write_fj_per_bit
