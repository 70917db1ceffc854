"""Per-layer energy floors of chunked weights that hold in *every* segment (energy, no nests).

:mod:`~stems_opt.formulation.chunk_floor` finds, per layer, the fewest
weight reads from DRAM any segment containing it makes: the weights must be
streamed in chunks when they cannot stay whole beside the least the layer
holds while it runs, and chunked weights are read ``S q`` times (``q =
active * m`` steps per time batch) for the least ``(S, q)`` whose largest
step fits beside a chunk. That floor is counted in DRAM read units.

Without loop nests the energy also counts the GB sending the weights to the
array once per sub-tile and timestep: ``T q |W|`` bits whatever the time
batch (:func:`stems_opt.cost.energy.layer_gb_access_bits`). The cheap
bound of a column (its one-tile frame) counts ``T |W|`` of them, so a
layer forced to ``q`` steps reads ``T (q - 1) |W|`` bits more from the GB.
Both grow with ``q``, so the energy floor is the least of both together,

    min over (Tb, q) whose step fits of  (S q - 1) |W| read_rate + T (q - 1) |W| use_rate,

at least the DRAM floor (its ``(Tb, q)`` may differ: a finer time batch
reads DRAM more often with fewer steps). Weights held whole (resident or
streamed whole, ``|W|`` bits at the layer's own position) are another way,
read once from DRAM when resident: it costs the GB reads
``T (q - 1) |W| use_rate`` of the fewest steps whose largest fits beside
``|W|`` (at ``Tb = 1``, the smallest step), and the floor is the less of both
ways. So the floor is positive also where the weights fit whole beside the
finest step but not beside one step of the whole map (SEW-ResNet-152's
stage 3 at 384 KB: a block's ``conv3`` holds 1 Mbit of weights and 2.4 Mbit
of state for its 14 rows). Layers whose windows have gaps
(a kernel narrower than its stride) get no GB term: their weight and input
reads have one joint floor (:func:`~stems_opt.formulation.operand_floors.gapped_weight_input_fj`).

Why it holds for every frame of an interval, not only the one-tile frame
the cheap bound is computed at: a frame with ``n`` tiles counts ``T active
|W|`` weight reads in its operand floor, and its other operand terms (the
input windows) only grow with ``n``; its ``q`` is at least ``active``. So
the frame costs at least the one-tile cheap bound plus, per layer, its DRAM
re-reads and ``T (q - 1) |W|`` GB reads, at least this floor. It is added to
the cheap bound of every column and to the per-layer floor of
``excluded_bound``; the capacity-aware frame bounds keep the DRAM floor
(they charge the frame's own sub-tile GB reads through
:mod:`~stems_opt.formulation.subtile_floor`). ``tests/test_energy_floor.py``
checks it against every fitting segment of the brute-force space.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from stems_opt.formulation.bounds import _gapped
from stems_opt.formulation.step_floor import smallest_chunk_bits, step_bits
from stems_opt.network import Axis, Layer, Network, divisors


def layer_energy_floors(network: Network, capacity_bits: int, k_unroll: int,
                        axes: Iterable[Axis], read_rate: float, use_rate: float
                        ) -> tuple[float, ...]:
    """Per layer, the least weight energy (model units) past reading its weights
    once from DRAM and once per timestep from the GB, of any segment containing it.

    Parameters
    ----------
    network, capacity_bits, k_unroll, axes
        As :func:`stems_opt.formulation.chunk_floor.layer_chunk_floors`.
    read_rate
        Model units per DRAM read bit (the GB write of the fill included).
    use_rate
        Model units per weight bit the GB sends to the array (0 with loop nests:
        then this is the DRAM floor alone).
    """
    axes = tuple(axes)
    return tuple(min(_axis_floor(network, lay, axis, capacity_bits, k_unroll, read_rate,
                                 use_rate) for axis in axes)
                 if lay.has_weights else 0.0 for lay in network.layers)


def _axis_floor(network: Network, lay: Layer, axis: Axis, capacity_bits: int, k_unroll: int,
                read_rate: float, use_rate: float) -> float:
    """:func:`layer_energy_floors` of one layer for segments along ``axis``: the less of
    its weights held whole and streamed in chunks."""
    use = 0.0 if _gapped(lay, axis) else use_rate
    whole = _fewest_steps(network, lay, axis, lay.weight_size_bits, capacity_bits, 1)
    best = math.inf if whole is None else network.timesteps * (whole - 1) * \
        lay.weight_size_bits * use
    if whole == 1:
        return 0.0
    chunk = smallest_chunk_bits(lay, k_unroll)
    if chunk is not None:
        w, T = lay.weight_size_bits, network.timesteps
        for tb in divisors(T):
            q = _fewest_steps(network, lay, axis, chunk, capacity_bits, tb)
            if q is not None:
                best = min(best, (T // tb * q - 1) * w * read_rate + T * (q - 1) * w * use)
    # (None fits: no segment runs the layer, left to the frames' bounds)
    return 0.0 if best == math.inf else float(best)


def _fewest_steps(network: Network, lay: Layer, axis: Axis, weight_bits: int,
                  capacity_bits: int, tb: int) -> int | None:
    """The fewest steps per time batch ``q`` whose largest step (``ceil(E / q)`` rows of
    ``tb`` timesteps) fits the buffer beside ``weight_bits``; ``None`` when none does.
    (More steps hold less: the least ``q`` is the first that fits.)"""
    extent = lay.extent(axis)
    for q in range(1, extent + 1):
        if weight_bits + step_bits(network, lay, axis, -(-extent // q), tb) <= capacity_bits:
            return q
    return None
