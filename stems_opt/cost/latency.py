"""Latency: the cycles of every layer step, summed.

A *step* is what the joint model schedules at the global buffer: one
non-empty sub-tile of one tile of a layer, for one time batch of ``Tb``
timesteps (``docs/model.md`` section 7). A step takes the largest of

* its on-chip cycles: the temporal iterations of the array (compute), and
  the bits through the GB port and each inner level's port over their
  ``bandwidth_bits_per_cycle`` (with ``loop_nests`` the step's nest gives
  these, :attr:`stems_opt.cost.loops.NestCost.cycles`; otherwise one access
  per use at the GB);
* its DRAM cycles: the step's own DRAM bits over the DRAM bandwidth.

A layer's latency is the sum over its steps and a mapping's the sum over its
layers. Every DRAM bit belongs to exactly one step of the layer whose
decision moves it (its weights, its state, its output written, its reads of
an input), so a layer's latency depends on that layer's decisions alone and
the optimiser's objective stays a sum over layer options: exact.

It imports the geometry and the loop nests, no solver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from stems_opt.cost.geometry import SegmentGeometry
from stems_opt.cost.loops import NestHardware, step_shape
from stems_opt.cost.step_nests import step_nest
from stems_opt.hardware import Hardware
from stems_opt.mapping import Halo, Placement, Segment, StateMode, StepNest, WeightChoice
from stems_opt.network import Axis, Layer, LayerKind, Network, StatePersistence

Steps = tuple[tuple[int, int, int], ...]
"""``(tile, lo, hi)`` of every step of one time batch, tile by tile."""


@lru_cache(maxsize=1 << 14)
def steps_of(bounds: tuple[int, ...], m: int) -> Steps:
    """The non-empty sub-tiles ``(t, lo, hi)`` of tiles ``bounds`` split ``m`` ways
    (the floor split of :func:`stems_opt.cost.geometry.sub_bounds`)."""
    out = []
    for t in range(len(bounds) - 1):
        lo, hi = bounds[t], bounds[t + 1]
        span = hi - lo
        for j in range(m if span > 0 else 0):
            a, z = lo + (j * span) // m, lo + ((j + 1) * span) // m
            if z > a:
                out.append((t, a, z))
    return tuple(out)


def dram_cycles(bits: np.ndarray, bandwidth_bits_per_cycle: float) -> np.ndarray:
    """``ceil(bits / bandwidth)`` per step, in integers when the bandwidth is one."""
    bw = float(bandwidth_bits_per_cycle)
    if bw.is_integer():
        return -(-bits // int(bw))
    return np.ceil(bits / bw).astype(np.int64)


def step_iterations(layer: Layer, rows: int, tb: int, axis: Axis, unrolling: tuple[int, ...],
                    chunks: int = 1) -> int:
    """Temporal iterations of the array for one step of a conv or linear layer:
    the product of ``ceil(D / u_D)`` over its dimensions (``K`` walked in
    ``chunks`` chunks), times ``tb``; the nest's ``N`` of ``docs/model.md`` 6.1."""
    u = unrolling
    kc = layer.k // chunks
    if layer.kind is LayerKind.LINEAR:  # a 1 x 1 map of C features
        oy = ox = 1
    else:
        oy, ox = (rows, layer.cross_extent(axis)) if axis is Axis.OY \
            else (layer.cross_extent(axis), rows)
    return (chunks * math.ceil(kc / u[0]) * math.ceil(layer.c / u[1]) * math.ceil(oy / u[2])
            * math.ceil(ox / u[3]) * math.ceil(layer.fy / u[4]) * math.ceil(layer.fx / u[5]) * tb)


def _per_use_bits(layer: Layer, network: Network, axis: Axis, lo: int, hi: int, tb: int) -> int:
    """GB operand bits of one step by the one-access-per-use rule (``docs/model.md`` 6):
    every window row of every input, each output, the weights and the state
    read and written, once per timestep."""
    if layer.kind is LayerKind.FLATTEN:
        return 0
    a, z = layer.window(axis, lo, hi)
    bits = sum((z - a) * network.tensor_row_bits(src, axis)
               for src in dict.fromkeys(layer.inputs))
    bits += (hi - lo) * layer.output_row_bits(axis)
    if layer.has_weights:
        bits += layer.weight_size_bits
    if layer.stateful:
        bits += 2 * (hi - lo) * layer.state_row_bits(axis)
    return bits * tb


@lru_cache(maxsize=4096)
def _windows(layer: Layer, axis: Axis) -> tuple[np.ndarray, np.ndarray]:
    """``first[lo]`` and ``last[hi]`` with ``layer.window(axis, lo, hi) == (first[lo],
    last[hi])`` for ``hi > lo``: a window starts where its first row's does and ends
    where its last row's does."""
    ext = layer.extent(axis)
    first = np.array([layer.window(axis, r, r + 1)[0] for r in range(ext)] + [0],
                     dtype=np.int64)
    last = np.array([0] + [layer.window(axis, r - 1, r)[1] for r in range(1, ext + 1)],
                    dtype=np.int64)
    first.flags.writeable = False
    last.flags.writeable = False
    return first, last


@lru_cache(maxsize=1 << 14)
def _bounds_arrays(steps: Steps) -> tuple[np.ndarray, np.ndarray]:
    """The ``lo`` and ``hi`` rows of every step as arrays."""
    lo = np.array([a for _, a, _ in steps], dtype=np.int64)
    hi = np.array([z for _, _, z in steps], dtype=np.int64)
    lo.flags.writeable = False
    hi.flags.writeable = False
    return lo, hi


@lru_cache(maxsize=1 << 14)
def core_cycles(layer: Layer, network: Network, axis: Axis, steps: Steps, tb: int,
                nh: NestHardware, pe_count: int, loop_nests: bool, chunks: int = 1,
                fewest_cycles: bool = False, pinned: tuple[StepNest, ...] = ()) -> np.ndarray:
    """On-chip cycles of every step: compute, and the GB and inner ports.

    Conv and linear layers on hardware with ``loop_nests`` take the cycles
    of the nest each step runs (``pinned`` for its step, else the
    least-cycles nest with ``fewest_cycles``, else the least-energy one:
    :func:`stems_opt.cost.step_nests.step_nest`); otherwise compute is the array's temporal
    iterations (``ceil(operations / PEs)`` for pools and adds, none for a
    flatten) and the GB port moves the one-access-per-use bits.
    """
    lo, hi = _bounds_arrays(steps)
    rows = hi - lo
    if layer.has_weights and loop_nests:
        out = np.zeros(len(steps), dtype=np.int64)
        for i, (_, a, z) in enumerate(steps):
            shape = step_shape(layer, axis, a, z, tb, chunks)
            out[i] = step_nest(shape, nh, pinned, fewest_cycles)[1].cycles
    elif layer.has_weights:
        # Only the rows along the axis differ between steps: ceil(rows / u) x the rest.
        u_rows = nh.unrolling[2] if axis is Axis.OY else nh.unrolling[3]
        one = step_iterations(layer, u_rows, tb, axis, nh.unrolling, chunks)
        out = one * (-(-rows // u_rows)) if layer.kind is not LayerKind.LINEAR else \
            np.full(len(steps), one, dtype=np.int64)
    else:
        ops = layer.operations(tb) * rows // layer.extent(axis)
        out = -(-ops // pe_count)
    gb_bw = nh.gb_bandwidth_bits_per_cycle
    if gb_bw and not (layer.has_weights and loop_nests):
        gb = np.array([math.ceil(_per_use_bits(layer, network, axis, a, z, tb) / gb_bw)
                       for _, a, z in steps], dtype=np.int64)
        out = np.maximum(out, gb)
    out = np.asarray(out, dtype=np.int64)
    out.flags.writeable = False  # cached: shared by every caller
    return out


@lru_cache(maxsize=1 << 14)
def new_rows(layer: Layer, axis: Axis, steps: Steps, keep: bool) -> np.ndarray:
    """Input rows each step reads from DRAM: its window, less under ``keep``
    the rows shared with the previous step's window (as
    ``SegmentGeometry.window_reads`` counts them)."""
    first, last = _windows(layer, axis)
    lo, hi = _bounds_arrays(steps)
    a, e = first[lo], last[hi]
    out = e - a
    if keep and len(out) > 1:
        out = out.copy()
        out[1:] -= np.maximum(0, np.minimum(e[:-1], e[1:]) - a[1:])
    out = np.asarray(out, dtype=np.int64)
    out.flags.writeable = False  # cached: shared by every caller
    return out


def batch_classes(batches: int) -> tuple[tuple[int, bool, bool], ...]:
    """``(count, first, last)`` of the time batches that move the same DRAM bits:
    the first, the ones between, the last (one class when there is one batch)."""
    if batches == 1:
        return ((1, True, True),)
    mid = ((batches - 2, False, False),) if batches > 2 else ()
    return ((1, True, False), *mid, (1, False, True))


class LayerLatency:
    """The latency of one layer of one segment frame under any of its decisions.

    Parameters
    ----------
    geo
        The frame's :class:`~stems_opt.cost.geometry.SegmentGeometry`.
    layer, hw, nh
        The layer, the accelerator and its loop-nest view.
    fewest_cycles
        Steps the segment does not pin run their least-cycles nests (the
        latency objective's), else their least-energy ones.
    """

    def __init__(self, geo: SegmentGeometry, layer: Layer, hw: Hardware, nh: NestHardware,
                 fewest_cycles: bool = False):
        self.geo, self.layer, self.hw, self.nh = geo, layer, hw, nh
        self.nests = (fewest_cycles, geo.seg.nests.get(layer.name, ()))
        self.axis = geo.seg.axis
        self.bounds = geo.bounds[layer.name]
        self.classes = batch_classes(geo.S)
        self.bw = hw.dram_bandwidth_bits_per_cycle
        self._memo: dict[tuple[object, ...], int] = {}
        self._base: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._every: dict[tuple[object, ...], np.ndarray] = {}

    def steps(self, m: int) -> Steps:
        """The steps of one time batch with ``m`` sub-tiles."""
        return steps_of(self.bounds, m)

    def cycles(self, m: int, weight: WeightChoice | None, state: StateMode | None,
               written: bool, reads: Sequence[tuple[str, Halo]]) -> int:
        """Cycles of all the layer's steps under these decisions.

        ``reads`` lists ``(tensor, halo)`` of every input read from DRAM;
        ``written`` says the output goes to DRAM.
        """
        lay = self.layer
        weight = weight if lay.has_weights else None
        state = state if lay.stateful else None
        key = (m, weight, state, written, tuple(reads))
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = self._cycles(m, weight, state, written, tuple(reads))
        return got

    def prefill(self, m: int, weights: Sequence[WeightChoice | None],
                states: Sequence[StateMode | None], writtens: Sequence[bool],
                reads: Sequence[tuple[tuple[str, Halo], ...]]) -> None:
        """Compute :meth:`cycles` for every combination at once (the same numbers,
        one array operation over the output and input choices instead of one call
        each): the option builder asks for all of them."""
        lay = self.layer
        weights = list(dict.fromkeys(w if lay.has_weights else None for w in weights))
        states = list(dict.fromkeys(v if lay.stateful else None for v in states))
        pairs = [(w, r) for w in dict.fromkeys(writtens) for r in dict.fromkeys(reads)]
        steps = self.steps(m)
        if not steps:
            for wc in weights:
                for sm in states:
                    for w, r in pairs:
                        self._memo[(m, wc, sm, w, r)] = 0
            return
        rows, _, _ = self.base(m)
        for wc in weights:
            wkind = None if wc is None else "resident" if wc.resident else \
                "chunks" if wc.chunks > 1 else "tile"
            chunks = 1 if wc is None or wc.resident else wc.chunks
            core = core_cycles(lay, self.geo.network, self.axis, steps, self.geo.tb, self.nh,
                               self.hw.array.pe_count, self.hw.loop_nests, chunks, *self.nests)
            every = np.stack([self.every(m, w, r, wkind) for w, r in pairs])
            for sm in states:
                total = np.zeros(len(pairs), dtype=np.int64)
                for count, bits in self._class_bits(every, rows, sm, wkind):
                    total += count * np.maximum(core, dram_cycles(bits, self.bw)).sum(axis=1)
                for (w, r), v in zip(pairs, total.tolist(), strict=True):
                    self._memo[(m, wc, sm, w, r)] = v

    def _cycles(self, m: int, weight: WeightChoice | None, state: StateMode | None,
                written: bool, reads: tuple[tuple[str, Halo], ...]) -> int:
        steps = self.steps(m)
        if not steps:
            return 0
        chunks = 1 if weight is None or weight.resident else weight.chunks
        core = core_cycles(self.layer, self.geo.network, self.axis, steps, self.geo.tb, self.nh,
                           self.hw.array.pe_count, self.hw.loop_nests, chunks, *self.nests)
        return sum(count * int(np.maximum(core, dram_cycles(bits, self.bw)).sum())
                   for count, bits in self.dram_bits(m, weight, state, written, reads))

    def dram_bits(self, m: int, weight: WeightChoice | None, state: StateMode | None,
                  written: bool, reads: Sequence[tuple[str, Halo]]
                  ) -> list[tuple[int, np.ndarray]]:
        """Per class of time batches (:func:`batch_classes`): how many batches, and
        each step's DRAM bits in one of them. Summed, the layer's DRAM traffic.

        Every time batch reads each step's new input rows and writes its output
        rows (``written``); streamed weights come once per tile (its first step)
        or, in chunks, every step; resident weights at the very first step; the
        state rows of each step are read in the first batch and written in the
        last, or both in every batch when spilled (``S > 1``; under ``reset``
        the first batch reads nothing and the last writes nothing).
        """
        lay = self.layer
        weight = weight if lay.has_weights else None
        state = state if lay.stateful else None
        rows, _, _ = self.base(m)
        wkind = None if weight is None else "resident" if weight.resident else \
            "chunks" if weight.chunks > 1 else "tile"
        every = self.every(m, written, tuple(reads), wkind)
        return self._class_bits(every, rows, state, wkind)

    def _class_bits(self, every: np.ndarray, rows: np.ndarray, state: StateMode | None,
                    wkind: str | None) -> list[tuple[int, np.ndarray]]:
        """Per class of time batches: how many batches, and the DRAM bits of each step
        (last axis) of one of them: ``every`` batch's bits, the state rows' passes
        and, for resident weights, ``|W|`` at the very first step."""
        lay = self.layer
        vrows = rows * lay.state_row_bits(self.axis) if state is not None else None
        out = []
        for count, is_first, is_last in self.classes:
            bits = every
            if vrows is not None:
                passes = self._state_passes(state, is_first, is_last)
                if passes:
                    bits = bits + vrows * passes
            if wkind == "resident" and is_first and bits.shape[-1]:
                bits = bits.copy()
                bits[..., 0] += lay.weight_size_bits
            out.append((count, bits))
        return out

    def base(self, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per step of one batch with ``m`` sub-tiles: its rows, its output bits
        and the weights streamed once per tile (``|W|`` at each tile's first step)."""
        got = self._base.get(m)
        if got is None:
            lay, steps = self.layer, self.steps(m)
            rows = np.array([hi - lo for _, lo, hi in steps], dtype=np.int64)
            first = np.array([i == 0 or steps[i - 1][0] != t
                              for i, (t, _, _) in enumerate(steps)], dtype=bool)
            tile_w = np.where(first, lay.weight_size_bits if lay.has_weights else 0, 0)
            got = self._base[m] = (rows, rows * lay.output_row_bits(self.axis) * self.geo.tb,
                                   tile_w.astype(np.int64))
        return got

    def every(self, m: int, written: bool, reads: tuple[tuple[str, Halo], ...],
              wkind: str | None) -> np.ndarray:
        """Bits each step moves in every time batch: output, inputs, streamed weights."""
        key = (m, written, reads, wkind)
        got = self._every.get(key)
        if got is None:
            lay, axis, tb = self.layer, self.axis, self.geo.tb
            rows, out_bits, tile_w = self.base(m)
            got = out_bits.copy() if written else np.zeros(len(rows), dtype=np.int64)
            steps = self.steps(m)
            for src, halo in reads:
                got += new_rows(lay, axis, steps, halo is Halo.KEEP) * \
                    self.geo.network.tensor_row_bits(src, axis) * tb
            if wkind == "chunks":  # every step walks all chunks
                got += lay.weight_size_bits
            elif wkind == "tile":  # loaded once per tile, kept over its sub-tiles
                got += tile_w
            self._every[key] = got
        return got

    def _state_passes(self, state: StateMode | None, first: bool, last: bool) -> int:
        """Reads plus writes of each neuron's state in a batch (0, 1 or 2)."""
        spilled = state is StateMode.SPILLED and self.geo.S > 1
        if self.geo.network.state_persistence is StatePersistence.STREAMING:
            return 2 if spilled else int(first) + int(last)
        return int(not first) + int(not last) if spilled else 0


def layer_compute_floor(layer: Layer, axis: Axis, bounds: tuple[int, ...], timesteps: int,
                        hw: Hardware) -> int:
    """A lower bound on the layer's latency in a frame with these tile ``bounds``,
    for any time batch, sub-tiles and decisions: its compute cycles with one
    sub-tile per tile, no chunks and the whole ``T`` in one batch.

    Each step takes at least its compute; splitting a tile into sub-tiles or
    ``K`` into chunks only rounds more iterations up (``sum ceil(r_j/u) >=
    ceil(sum r_j/u)``), and ``S ceil(Tb x / P) >= ceil(T x / P)``.
    """
    u = tuple(hw.array.factor(d) for d in ("K", "C", "OY", "OX", "FY", "FX"))
    extent = layer.extent(axis)
    total = 0
    for t in range(len(bounds) - 1):
        rows = bounds[t + 1] - bounds[t]
        if rows <= 0:
            continue
        if layer.has_weights:
            total += step_iterations(layer, rows, timesteps, axis, u)
        else:
            ops = layer.operations(timesteps) * rows // extent
            total += -(-ops // hw.array.pe_count)
    return total




def latency_floor_cycles(network: Network, hw: Hardware) -> int:
    """A lower bound on every mapping's latency: the larger of the layers' compute
    (each at its least: one tile, along its cheaper axis, :func:`layer_compute_floor`)
    and the compulsory traffic over the DRAM bandwidth. A mapping's latency sums,
    over its steps, the largest of each step's compute and DRAM cycles, so it is at
    least either sum; every DRAM bit belongs to one step, and the ceilings of
    the steps add up to at least the ceiling of their sum."""
    from stems_opt.cost.traffic import compulsory_traffic_bits

    compute = sum(min(layer_compute_floor(lay, axis, (0, lay.extent(axis)),
                                          network.timesteps, hw)
                      for axis in (Axis.OY, Axis.OX)) for lay in network.layers)
    dram = math.ceil(compulsory_traffic_bits(network) / hw.dram_bandwidth_bits_per_cycle)
    return max(compute, dram)


def dram_reads(seg: Segment, inside: set[str], layer: Layer) -> tuple[tuple[str, Halo], ...]:
    """``(tensor, halo)`` of every input ``layer`` reads from DRAM in ``seg``
    (placements taken literally, as the cost model's terms take them)."""
    out = []
    for src in dict.fromkeys(layer.inputs):
        placement = seg.activation(src) if src in inside else seg.input(src)
        if placement is not Placement.ON_CHIP:
            out.append((src, seg.halo(src)))
    return tuple(out)


def segment_latency(geo: SegmentGeometry, written: frozenset[str], hw: Hardware,
                    nh: NestHardware, fewest_cycles: bool = False) -> dict[str, int]:
    """Cycles of every layer of the segment of ``geo`` (a
    ``SegmentGeometry``); ``written`` names the tensors it
    writes to DRAM; ``fewest_cycles`` as :class:`LayerLatency`."""
    seg = geo.seg
    return {lay.name: LayerLatency(geo, lay, hw, nh, fewest_cycles).cycles(
        seg.sub_tile(lay.name), seg.weight(lay.name) if lay.has_weights else None,
        seg.state(lay.name) if lay.stateful else None, lay.name in written,
        dram_reads(seg, geo.inside, lay)) for lay in geo.layers}
