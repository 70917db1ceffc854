"""An independent step-by-step schedule simulator, written from ``docs/model.md``.

This module is a test oracle for the closed-form cost model
(:func:`stems_opt.cost.evaluation.evaluate`). It deliberately imports nothing from
``stems_opt.cost``: tile boundaries (section 3), windows, traffic
(section 4) and global-buffer occupancy (section 5) are all re-derived here,
and the schedule is *run*: for each segment, for every step (time batch,
tile) in the segment's ``order``, every layer in layer order, every sub-tile,
each DRAM transfer is recorded as a :class:`Transfer`, and an explicit set of
on-chip buffers (name -> bits) is allocated and freed as the schedule goes.
The occupancy is measured at every layer execution.

What is reproduced by literal stepping and what by the model's reservation rule
-------------------------------------------------------------------------------
Literal stepping (the quantity falls out of running the schedule):

* every DRAM transfer: resident weights loaded once at segment start;
  streamed weights loaded at every step where the layer runs (its tile is
  non-empty), once per step for ``k = 1`` and ``k`` chunks per sub-tile for
  ``k > 1``; state loaded/stored per sub-tile (spilled), per tile at its first
  and last time batch (tile_resident) or once per segment (resident), with
  ``reset`` persistence skipping the load of the very first time batch and the
  store of the very last; activation windows read from DRAM with per-row
  bookkeeping of the rows still on chip under ``keep`` (the rows of the
  previous window of the same consumer in the same time-batch sequence);
  every produced sub-tile written when its tensor goes to DRAM;
* live tiles of in-segment ``on_chip`` tensors: allocated when the producer
  runs, freed after the position of the last in-segment consumer;
* transients of the executing layer (streamed weights or one chunk, the
  spilled state sub-tile, each DRAM input's new rows and, under ``keep``, the
  most rows kept between two of its sub-tiles beyond what the tensor's
  reservation across tiles leaves free while it runs, the DRAM output
  sub-tile): allocated for the layer's execution and freed after it.

Reservation rule (reserved at segment start for the whole segment at the
largest size the schedule ever needs, as docs/model.md section 5 prescribes
and a static allocator would do):

* carried rows of in-segment ``on_chip`` tensors (line buffers): at each tile
  boundary the span from the first row any later window still reads to the
  last row produced, times ``Tb`` (``time_outer``) or ``T`` (``space_outer``);
  the maximum over boundaries is reserved;
* kept halos of DRAM-read tensors under ``keep``, across tile boundaries:
  the rows a consumer's last window of a tile shares with its first window of
  its next non-empty tile, held in between; at each (tile, position) the union
  over the tensor's consumers (those that already ran in the tile hold the rows
  for their next tile), times ``Tb`` (``T`` under ``space_outer``); the maximum
  is reserved;
* tile-resident state: the largest tile's rows;
* tensors kept whole on chip across segments, resident weights, resident state
  (these are persistent by definition).

Also by the model's rule rather than sub-tile by sub-tile: each per-sub-tile
transient buffer of a layer execution (state sub-tile, DRAM input rows, DRAM
output rows) is allocated at its largest sub-tile's size for the whole
execution of the layer in that step (section 5: ``max_j`` per item).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from stems_opt.mapping import Halo, Mapping, Order, Placement, Segment, StateMode
from stems_opt.network import Axis, Layer, Network, StatePersistence

CLASSES = ("weights", "state", "activations")


# ---------------------------------------------------------------------------
# Geometry (docs/model.md sections 2 and 3)
# ---------------------------------------------------------------------------

def window(layer: Layer, axis: Axis, lo: int, hi: int) -> tuple[int, int]:
    """Input rows ``[a, b)`` read for output rows ``[lo, hi)`` (section 2)."""
    return layer.window(axis, lo, hi)


def segment_outputs(network: Network, layers: tuple[str, ...]) -> set[str]:
    """Layers read outside the segment, network outputs, and layers nobody reads."""
    inside = set(layers)
    outs = set(network.output_names)
    result = set()
    for name in layers:
        cons = network.consumers(name)
        if name in outs or not cons or any(c not in inside for c in cons):
            result.add(name)
    return result


def tile_bounds(network: Network, layers: tuple[str, ...], axis: Axis,
                n: int) -> dict[str, list[int]]:
    """``b_l(0..n)`` per layer, computed in reverse layer order (section 3)."""
    inside = set(layers)
    outs = segment_outputs(network, layers)
    bounds: dict[str, list[int]] = {}
    for name in reversed(layers):
        lay = network.layer(name)
        E = lay.extent(axis)
        consumers = [network.layer(c) for c in network.consumers(name) if c in inside]
        b = [0]
        for t in range(1, n):
            cands = []
            if name in outs:
                cands.append(t * E // n)
            for c in consumers:
                cands.append(window(c, axis, 0, bounds[c.name][t])[1])
            b.append(min(E, max(cands)))
        b.append(E)
        bounds[name] = b
    return bounds


def sub_bounds(lo: int, hi: int, m: int) -> list[int]:
    """``b(t) + floor(j * len / m)``, ``j = 0..m``."""
    return [lo + (j * (hi - lo)) // m for j in range(m + 1)]


def sub_tile_limits(network: Network, seg: Segment) -> dict[str, int]:
    """Largest legal ``m`` per layer: its smallest non-empty tile."""
    bounds = tile_bounds(network, seg.layers, seg.axis, seg.tiles)
    return {name: min(b[t + 1] - b[t] for t in range(seg.tiles) if b[t + 1] > b[t])
            for name, b in bounds.items()}


def _overlap(a: tuple[int, int] | None, b: tuple[int, int]) -> int:
    if a is None:
        return 0
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Transfer:
    """One DRAM transfer. ``time_batch``/``tile`` are None at segment start or end."""

    segment: int
    time_batch: int | None
    tile: int | None
    layer: str
    tensor_class: str
    tensor: str
    direction: str
    bits: int


@dataclass
class SegmentRun:
    """What running one segment did: its transfers and its peak occupancy."""

    index: int
    layers: tuple[str, ...]
    transfers: list[Transfer] = field(default_factory=list)
    persistent: dict[str, int] = field(default_factory=dict)
    peak_bits: int = 0
    peak_at: tuple[int, int, str] | None = None
    peak_buffers: dict[str, int] = field(default_factory=dict)

    def _sum(self, direction: str) -> dict[str, int]:
        out = dict.fromkeys(CLASSES, 0)
        for tr in self.transfers:
            if tr.direction == direction:
                out[tr.tensor_class] += tr.bits
        return out

    @property
    def read_bits(self) -> dict[str, int]:
        """DRAM reads per tensor class."""
        return self._sum("read")

    @property
    def write_bits(self) -> dict[str, int]:
        """DRAM writes per tensor class."""
        return self._sum("write")


@dataclass
class Run:
    """A whole mapping run."""

    segments: list[SegmentRun]

    @property
    def read_bits(self) -> dict[str, int]:
        """DRAM reads per tensor class over all segments."""
        return {c: sum(s.read_bits[c] for s in self.segments) for c in CLASSES}

    @property
    def write_bits(self) -> dict[str, int]:
        """DRAM writes per tensor class over all segments."""
        return {c: sum(s.write_bits[c] for s in self.segments) for c in CLASSES}


# ---------------------------------------------------------------------------
# Cross-segment facts
# ---------------------------------------------------------------------------

@dataclass
class _Plan:
    seg_of: dict[str, int]
    written: set[str]
    whole: list[set[str]]


def _placement(network: Network, seg: Segment, inside: set[str], tensor: str) -> Placement:
    """Where a consumer of this segment reads ``tensor`` from."""
    if tensor == network.input.name:
        return Placement.DRAM
    if tensor in inside:
        return seg.activation(tensor)
    return seg.input(tensor)


def _plan(network: Network, mapping: Mapping) -> _Plan:
    seg_of = {name: i for i, seg in enumerate(mapping.segments) for name in seg.layers}
    written = set(network.output_names)
    last_on_chip: dict[str, int] = {}
    for i, seg in enumerate(mapping.segments):
        inside = set(seg.layers)
        for name in seg.layers:
            # in-segment placement 'dram' (only meaningful when read in the segment)
            if any(c in inside for c in network.consumers(name)) and \
                    seg.activation(name) is Placement.DRAM:
                written.add(name)
        for name in seg.layers:
            for src in network.layer(name).inputs:
                if src in inside or src == network.input.name:
                    continue
                if seg.input(src) is Placement.DRAM:
                    written.add(src)  # a later consumer segment reads it from DRAM
                else:
                    last_on_chip[src] = max(last_on_chip.get(src, i), i)
    whole: list[set[str]] = [set() for _ in mapping.segments]
    for tensor, last in last_on_chip.items():
        for i in range(seg_of[tensor], last + 1):
            whole[i].add(tensor)
    return _Plan(seg_of, written, whole)


# ---------------------------------------------------------------------------
# Running a segment
# ---------------------------------------------------------------------------

def _steps(seg: Segment, S: int) -> Iterator[tuple[int, int]]:
    if seg.order is Order.SPACE_OUTER:
        for t in range(seg.tiles):
            for s in range(S):
                yield s, t
    else:
        for s in range(S):
            for t in range(seg.tiles):
                yield s, t


def simulate_segment(network: Network, mapping: Mapping, index: int,
                     plan: _Plan | None = None) -> SegmentRun:
    """Run segment ``index`` of ``mapping`` step by step."""
    plan = plan or _plan(network, mapping)
    seg = mapping.segments[index]
    T, Tb, n, axis = network.timesteps, seg.time_batch, seg.tiles, seg.axis
    S = T // Tb
    reset = network.state_persistence is StatePersistence.RESET
    layers = [network.layer(name) for name in seg.layers]
    inside = set(seg.layers)
    pos = {name: p for p, name in enumerate(seg.layers)}
    bounds = tile_bounds(network, seg.layers, axis, n)
    subs = {lay.name: [sub_bounds(bounds[lay.name][t], bounds[lay.name][t + 1],
                                  seg.sub_tile(lay.name)) for t in range(n)]
            for lay in layers}
    whole = plan.whole[index]
    run = SegmentRun(index, seg.layers)

    def nonempty(name: str, t: int) -> bool:
        return bounds[name][t + 1] > bounds[name][t]

    def sub_windows(c: Layer, t: int) -> list[tuple[int, int]]:
        sb = subs[c.name][t]
        return [window(c, axis, sb[j], sb[j + 1]) for j in range(len(sb) - 1)]

    # DRAM-read (tensor, consumer) pairs and in-segment line-buffered tensors
    dram_reads: set[tuple[str, str]] = set()
    for lay in layers:
        for src in dict.fromkeys(lay.inputs):
            if _placement(network, seg, inside, src) is Placement.DRAM:
                dram_reads.add((src, lay.name))
    line_buffered: dict[str, int] = {}  # tensor -> position of its last in-segment consumer
    for lay in layers:
        cons = [c for c in network.consumers(lay.name) if c in inside]
        if cons and seg.activation(lay.name) is Placement.ON_CHIP and lay.name not in whole:
            line_buffered[lay.name] = max(pos[c] for c in cons)

    buffers: dict[str, int] = {}

    def transfer(s: int | None, t: int | None, layer: str, cls: str, tensor: str,
                 direction: str, bits: int) -> None:
        if bits:
            run.transfers.append(Transfer(index, s, t, layer, cls, tensor, direction, bits))

    # ---- persistent items, allocated at segment start ---------------------
    persistent: dict[str, int] = {}
    for lay in layers:
        if lay.has_weights and seg.weight(lay.name).resident:
            persistent[f"W:{lay.name}"] = lay.weight_size_bits
            transfer(None, None, lay.name, "weights", lay.name, "read", lay.weight_size_bits)
        if lay.stateful:
            mode = seg.state(lay.name)
            if mode is StateMode.RESIDENT:
                persistent[f"V:{lay.name}"] = lay.state_size_bits
                if not reset:
                    transfer(None, None, lay.name, "state", lay.name, "read",
                             lay.state_size_bits)
            elif mode is StateMode.TILE_RESIDENT:
                # reservation: the largest tile's state
                rows = max(bounds[lay.name][t + 1] - bounds[lay.name][t] for t in range(n))
                persistent[f"Vtile:{lay.name}"] = rows * lay.state_row_bits(axis)
    for tensor in sorted(whole):
        persistent[f"whole:{tensor}"] = network.tensor_size_bits(tensor)

    # carried rows (reservation): at boundary t (after tile t-1), the line buffer
    # spans from the first row any later window of an in-segment consumer reads
    # to the last row produced so far.
    carry_mult = T if seg.order is Order.SPACE_OUTER else Tb
    for tensor in line_buffered:
        cons = [network.layer(c) for c in network.consumers(tensor) if c in inside]
        best = 0
        for t in range(1, n):
            future_lo = [w[0] for c in cons for tt in range(t, n) if nonempty(c.name, tt)
                         for w in sub_windows(c, tt) if w[1] > w[0]]
            if future_lo:
                best = max(best, bounds[tensor][t] - min(future_lo))
        if best:
            persistent[f"carry:{tensor}"] = best * network.tensor_row_bits(tensor, axis) * \
                carry_mult

    # kept halos across tiles (reservation): the rows a consumer's last window of one
    # tile shares with its first window of its next non-empty tile are held in
    # between; the consumers of a tensor share one copy of each row. At each
    # (tile, position), consumers that already ran in the tile hold the rows for
    # their next tile, the others the rows from their previous one.
    halo_mult = T if seg.order is Order.SPACE_OUTER else Tb

    def held(c: Layer, t: int) -> set[int]:
        # rows c's last window before tile t shares with its first window from tile t on
        prev = [tt for tt in range(t) if nonempty(c.name, tt)]
        nxt = [tt for tt in range(t, n) if nonempty(c.name, tt)]
        if not prev or not nxt:
            return set()
        a, b = sub_windows(c, prev[-1])[-1], sub_windows(c, nxt[0])[0]
        return set(range(max(a[0], b[0]), min(a[1], b[1])))

    def held_at(tensor: str, t: int, p: int, skip: str = "") -> set[int]:
        # rows of tensor its DRAM readers (but skip) hold while position p runs in tile t
        rows: set[int] = set()
        for t_, cname in sorted(dram_reads):
            if t_ == tensor and cname != skip:
                done = pos[cname] < p  # it already ran in tile t
                rows |= held(network.layer(cname), t + 1 if done else t)
        return rows

    halo_res: dict[str, int] = {}
    for tensor in sorted({tensor for tensor, _ in dram_reads}):
        if seg.halo(tensor) is not Halo.KEEP:
            continue
        best = max(len(held_at(tensor, t, p)) for t in range(n) for p in range(len(layers)))
        halo_res[tensor] = best * halo_mult * network.tensor_row_bits(tensor, axis)
        if best:
            persistent[f"halo:{tensor}"] = halo_res[tensor]

    def halo_room(tensor: str, cname: str, t: int) -> int:
        # bits of the reservation no other reader uses while cname runs in tile t
        others = len(held_at(tensor, t, pos[cname], skip=cname))
        return halo_res[tensor] - others * halo_mult * network.tensor_row_bits(tensor, axis)

    run.persistent = persistent
    buffers.update(persistent)

    # ---- the schedule ------------------------------------------------------
    kept: dict[tuple[str, str, int], tuple[int, int]] = {}  # (tensor, consumer, s) -> window
    for s, t in _steps(seg, S):
        for p, lay in enumerate(layers):
            name = lay.name
            if nonempty(name, t):
                transient = _execute(network, seg, lay, s, t, S, reset, subs[name][t],
                                     dram_reads, kept, plan, whole, line_buffered, transfer,
                                     halo_room)
                if name in line_buffered:
                    rows = bounds[name][t + 1] - bounds[name][t]
                    buffers[f"live:{name}"] = rows * lay.output_row_bits(axis) * Tb
                buffers.update(transient)
                occupancy = sum(buffers.values())
                if occupancy > run.peak_bits or run.peak_at is None:
                    run.peak_bits = occupancy
                    run.peak_at = (s, t, name)
                    run.peak_buffers = dict(buffers)
                for key in transient:
                    del buffers[key]
            for tensor, last in line_buffered.items():
                if last == p:
                    buffers.pop(f"live:{tensor}", None)

    # ---- segment end ---------------------------------------------------------
    for lay in layers:
        if lay.stateful and seg.state(lay.name) is StateMode.RESIDENT and not reset:
            transfer(None, None, lay.name, "state", lay.name, "write", lay.state_size_bits)
    return run


def _execute(network: Network, seg: Segment, lay: Layer, s: int, t: int, S: int, reset: bool,
             sb: list[int], dram_reads: set[tuple[str, str]],
             kept: dict[tuple[str, str, int], tuple[int, int]], plan: _Plan, whole: set[str],
             line_buffered: dict[str, int],
             transfer: Callable[[int | None, int | None, str, str, str, str, int], None],
             halo_room: Callable[[str, str, int], int],
             ) -> dict[str, int]:
    """Run ``lay`` on its tile ``t`` for time batch ``s``; return its transient buffers."""
    axis, Tb, name = seg.axis, seg.time_batch, lay.name
    m = len(sb) - 1
    rows = [sb[j + 1] - sb[j] for j in range(m)]
    transient: dict[str, int] = {}

    # weights
    wc = seg.weight(name)
    if lay.has_weights and not wc.resident:
        W = lay.weight_size_bits
        if wc.chunks == 1:
            transient[f"Wstream:{name}"] = W
            transfer(s, t, name, "weights", name, "read", W)
        else:
            transient[f"Wchunk:{name}"] = W // wc.chunks
            for _j in range(m):  # chunk loop inside the sub-tile loop
                for _k in range(wc.chunks):
                    transfer(s, t, name, "weights", name, "read", W // wc.chunks)

    # state
    if lay.stateful:
        vrow = lay.state_row_bits(axis)
        mode = seg.state(name)
        if mode is StateMode.SPILLED:
            transient[f"Vsub:{name}"] = max(rows) * vrow
            for r in rows:
                if not (reset and s == 0):
                    transfer(s, t, name, "state", name, "read", r * vrow)
                if not (reset and s == S - 1):
                    transfer(s, t, name, "state", name, "write", r * vrow)
        elif mode is StateMode.TILE_RESIDENT and not reset:
            tile_rows = sb[-1] - sb[0]
            if s == 0:
                transfer(s, t, name, "state", name, "read", tile_rows * vrow)
            if s == S - 1:
                transfer(s, t, name, "state", name, "write", tile_rows * vrow)

    # inputs read from DRAM, with per-row bookkeeping of kept rows
    for src in dict.fromkeys(lay.inputs):
        if (src, name) not in dram_reads:
            continue
        row = network.tensor_row_bits(src, axis)
        keep = seg.halo(src) is Halo.KEEP
        most = sub_halo = 0
        for j in range(m):
            w = window(lay, axis, sb[j], sb[j + 1])
            on_chip = kept.get((src, name, s)) if keep else None
            new = (w[1] - w[0]) - _overlap(on_chip, w)
            transfer(s, t, name, "activations", src, "read", new * row * Tb)
            most = max(most, new)
            if j:
                sub_halo = max(sub_halo, _overlap(on_chip, w))
            kept[(src, name, s)] = w
        transient[f"in:{src}->{name}"] = most * row * Tb
        if sub_halo:
            # rows kept between two sub-tiles live while this layer runs, first in the
            # room the reservation across tiles leaves free, the rest on top
            extra = sub_halo * row * Tb - halo_room(src, name, t)
            if extra > 0:
                transient[f"subhalo:{src}->{name}"] = extra

    # output written to DRAM
    if name in plan.written:
        row = lay.output_row_bits(axis)
        for r in rows:
            transfer(s, t, name, "activations", name, "write", r * row * Tb)
        if name not in line_buffered and name not in whole:
            transient[f"out:{name}"] = max(rows) * row * Tb
    return transient


def whole_tensors_read_from_dram(network: Network, mapping: Mapping
                                 ) -> list[tuple[int, str, str]]:
    """``(segment, tensor, consumer)`` where a tensor kept whole on chip is read from DRAM.

    docs/model.md charges such a read like any DRAM read (section 4); the cost
    model does not (see tests/test_simulator.py, the xfail cases).
    """
    plan = _plan(network, mapping)
    out = []
    for i, seg in enumerate(mapping.segments):
        inside = set(seg.layers)
        for name in seg.layers:
            for src in dict.fromkeys(network.layer(name).inputs):
                if src in plan.whole[i] and \
                        _placement(network, seg, inside, src) is Placement.DRAM:
                    out.append((i, src, name))
    return out


def simulate(network: Network, mapping: Mapping) -> Run:
    """Run every segment of ``mapping``."""
    plan = _plan(network, mapping)
    return Run([simulate_segment(network, mapping, i, plan) for i in range(len(mapping.segments))])


__all__ = ["CLASSES", "Run", "SegmentRun", "Transfer", "simulate", "simulate_segment",
           "sub_bounds", "sub_tile_limits", "tile_bounds", "whole_tensors_read_from_dram"]
