"""Per-layer floors of weight re-reads that hold in *every* segment (``docs/solver.md``).

A layer whose weights cannot be held whole beside the least it must hold while
it runs has to stream them in chunks (``k > 1``), and chunked weights are read
``S * active * m`` times (``docs/model.md`` 4). Whatever the segment, the
step that computes the layer's largest sub-tile holds, at the layer's own
position, at least:

* a weight chunk, ``|W| / k`` for the largest legal ``k``;
* its output rows: ``max_j subrows * row * Tb`` (written, on chip or whole);
* its state rows: ``max_j subrows * vrow`` (spilled, tile-resident or resident);
* the rows of each input its window needs, less the rows it shares with the
  previous window (the most a kept halo can hold elsewhere), times ``Tb``.

The layer runs ``q = active * m`` steps per time batch and its tiles and
sub-tiles partition its ``E`` output rows, so its largest sub-tile has at
least ``ceil(E / q)`` rows. The floor is the least ``(S q - 1) |W|`` over
time batches and ``q`` whose largest step fits the whole buffer beside a
chunk, and 0 when the weights fit whole beside the finest step. The buffer
is taken whole (what else the segment holds only lowers it), so the floor
is paid by every segment containing the layer, over the cheap bound's
single read of its weights: it adds to every column's cheap bound.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

from stems_opt.formulation.step_floor import smallest_chunk_bits, step_bits
from stems_opt.network import Axis, Layer, Network, divisors


def layer_chunk_floors(network: Network, capacity_bits: int, k_unroll: int,
                       axes: Iterable[Axis]) -> tuple[int, ...]:
    """Per layer, the least extra weight reads (bits) of any segment containing it.

    Parameters
    ----------
    network
        The workload.
    capacity_bits
        The global buffer's size.
    k_unroll
        The array's K unrolling (``K / chunks`` must reach it).
    axes
        The axes segments may tile along (the floor is the least over them).
    """
    axes = tuple(axes)
    return tuple(min(_axis_floor(network, lay, axis, capacity_bits, k_unroll) for axis in axes)
                 if lay.has_weights else 0 for lay in network.layers)


def _axis_floor(network: Network, lay: Layer, axis: Axis, capacity_bits: int,
                k_unroll: int) -> int:
    """:func:`layer_chunk_floors` of one layer for segments along ``axis``."""
    w, T, extent = lay.weight_size_bits, network.timesteps, lay.extent(axis)
    if w + step_bits(network, lay, axis, 1, 1) <= capacity_bits:
        return 0  # resident weights beside the finest step: read once
    chunk = smallest_chunk_bits(lay, k_unroll)
    if chunk is None:
        return 0  # (no segment runs the layer at all: left to the frames' bounds)
    best = math.inf
    for tb in divisors(T):
        for q in range(1, extent + 1):
            if chunk + step_bits(network, lay, axis, -(-extent // q), tb) <= capacity_bits:
                best = min(best, (T // tb * q - 1) * w)
                break  # (more steps only read the weights more often)
    return 0 if best == math.inf else int(best)


class ChunkFloors:
    """The floors of :func:`layer_chunk_floors` in model units, summed over intervals.

    Parameters
    ----------
    network, capacity_bits, k_unroll, axes
        As :func:`layer_chunk_floors`.
    read_rate
        Model units per DRAM read bit (0 for latency: the floor then adds nothing).
    energy_floors
        Per layer, the energy floor of its weights (model units) for energy without
        loop nests, :func:`~stems_opt.formulation.energy_floor.layer_energy_floors`
        (none otherwise): :attr:`cheap_per_layer` is then the larger of it and the
        re-read floor.
    write_rate
        Model units per DRAM write bit; given (traffic, energy through loop nests),
        the intervals' sums also count the tensors held past a chunked layer
        (:mod:`~stems_opt.formulation.bypass_floor`) and the residual blocks' joint
        floors (:mod:`~stems_opt.formulation.block_floor`).
    """

    def __init__(self, network: Network, capacity_bits: int, k_unroll: int,
                 axes: Iterable[Axis], read_rate: float,
                 energy_floors: Sequence[float] | None = None,
                 write_rate: float | None = None):
        from stems_opt.formulation.block_floor import BlockFloors
        from stems_opt.formulation.bypass_floor import BypassFloors, bypass_items

        axes = tuple(axes)
        floors = layer_chunk_floors(network, capacity_bits, k_unroll, axes) if read_rate \
            else (0,) * len(network.layers)
        traffic = bool(read_rate) and write_rate is not None
        self.bypass = BypassFloors(bypass_items(
            network, capacity_bits, k_unroll, axes, floors)
            if traffic else (), read_rate, write_rate or 0.0)
        self.blocks = BlockFloors(network, capacity_bits, k_unroll, axes, floors,
                                  self.bypass.items, read_rate if traffic else 0.0, write_rate)
        self.per_layer = tuple(f * read_rate for f in floors)
        self._prefix = list(itertools.accumulate(self.per_layer, initial=0.0))
        # (energy_floor.py: valid over the one-tile cheap bound, not over a frame's own
        # operand floor, which counts its active tiles' weight reads already)
        self.cheap_per_layer = self.per_layer
        if energy_floors is not None:
            self.cheap_per_layer = tuple(max(d, e) for d, e in zip(
                self.per_layer, energy_floors, strict=True))
        self._cheap_prefix = list(itertools.accumulate(self.cheap_per_layer, initial=0.0))

    def between(self, first: int, last: int) -> float:
        """What every segment over layers ``first..last`` pays over reading each weight once
        (and over keeping its tensors on chip)."""
        return self._prefix[last + 1] - self._prefix[first] + \
            self.bypass.between(first, last) + self.blocks.between(first, last)

    def cheap_between(self, first: int, last: int) -> float:
        """:meth:`between` with the GB weight reads of the forced steps, over the
        one-tile cheap bound of a column (energy without loop nests)."""
        return self._cheap_prefix[last + 1] - self._cheap_prefix[first] + \
            self.bypass.between(first, last) + self.blocks.between(first, last)
