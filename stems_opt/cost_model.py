"""The cost model: off-chip traffic, global-buffer occupancy, energy and latency.

This module is the referee. Every solver's answer is re-scored here, and the
optimiser's coefficients come from the same :func:`segment_terms`, so the
two agree by construction and the tests check that they do. The formulas
are written out in ``docs/model.md``.

A segment's cost is a sum of :class:`Term` objects, one per decision
(a weight tensor, a state tensor, an activation tensor at its producer, a
DRAM-read tensor at its consumer). Each term carries its DRAM reads and
writes, its *persistent* global-buffer bits (held for the whole segment) and
its *local* bits per (tile, layer position) (live or transient). The peak
occupancy of a segment is::

    peak = sum(persistent) + max over (tile t, position p) of sum(local[t, p])

No solver is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from stems_opt.cost.loops import GB, NestHardware, layer_nest_energy
from stems_opt.cost.step_latency import segment_latency
from stems_opt.hardware import Hardware
from stems_opt.mapping import (
    Halo,
    Mapping,
    Order,
    Placement,
    Segment,
    StateMode,
    WeightChoice,
)
from stems_opt.network import Axis, Layer, LayerKind, Network, StatePersistence
from stems_opt.problem import Problem

TENSOR_CLASSES = ("weights", "state", "activations")


# ---------------------------------------------------------------------------
# Tile geometry
# ---------------------------------------------------------------------------

def tile_bounds(network: Network, layers: Sequence[str], axis: Axis,
                tiles: int) -> dict[str, tuple[int, ...]]:
    """Row boundaries ``b[0..n]`` of every layer's tiles along ``axis``.

    A segment output (read outside the segment, or a network output) splits
    its extent ``E`` as ``floor(t * E / n)``; every layer also computes, in
    tile ``t``, every row its in-segment consumers need for their tiles
    ``<= t``. So no consumer waits for a future tile, and each producer runs
    ahead of its consumers by exactly the receptive-field lag.
    """
    return _tile_bounds(network, tuple(layers), axis, tiles)


@lru_cache(maxsize=4096)
def _tile_bounds(network: Network, layers: tuple[str, ...], axis: Axis,
                 tiles: int) -> dict[str, tuple[int, ...]]:
    inside = set(layers)
    outputs = set(network.output_names)
    bounds: dict[str, tuple[int, ...]] = {}
    for name in reversed(layers):
        lay = network.layer(name)
        extent = lay.extent(axis)
        consumers = network.consumers(name)
        inner = [c for c in consumers if c in inside]
        is_out = name in outputs or not consumers or len(inner) < len(consumers)
        b = [0] * (tiles + 1)
        b[tiles] = extent
        # window(axis, 0, hi)[1] of a consumer is last[hi] (0 for hi = 0): see _row_windows.
        ends = [(_row_windows(network.layer(c), axis)[1], bounds[c]) for c in inner]
        for t in range(1, tiles):
            v = (t * extent) // tiles if is_out else 0
            for last, bc in ends:
                v = max(v, last[bc[t]])
            b[t] = min(extent, v)
        bounds[name] = tuple(b)
    return bounds


def sub_bounds(lo: int, hi: int, m: int) -> list[int]:
    """Boundaries of ``m`` sub-tiles of rows ``[lo, hi)``, split the floor way."""
    return [lo + (j * (hi - lo)) // m for j in range(m + 1)]


def sub_tile_limits(network: Network, seg: Segment) -> dict[str, int]:
    """Largest allowed ``m`` per layer: its smallest non-empty tile extent."""
    bounds = tile_bounds(network, seg.layers, seg.axis, seg.tiles)
    return {name: min(b[t + 1] - b[t] for t in range(seg.tiles) if b[t + 1] > b[t])
            for name, b in bounds.items()}


# ---------------------------------------------------------------------------
# Terms
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Term:
    """One decision's share of a segment's traffic and occupancy.

    ``local`` is ``None`` or an ``(n, L)`` array of bits per (tile, layer
    position in the segment).
    """

    tensor_class: str
    tensor: str
    layer: str
    read_bits: int = 0
    write_bits: int = 0
    persistent_bits: int = 0
    local: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SegmentContext:
    """How a segment meets the rest of the mapping.

    Parameters
    ----------
    whole
        Tensors kept whole in the GB during this segment (on-chip across
        segments): each adds its full size to the persistent bits.
    written
        Tensors produced in this segment that are written to DRAM
        (network outputs, and tensors some consumer reads from DRAM).
    """

    whole: frozenset[str] = frozenset()
    written: frozenset[str] = frozenset()


class SegmentGeometry:
    """Tile and sub-tile geometry of one segment frame (layers, axis, n, Tb, order)."""

    def __init__(self, network: Network, seg: Segment):
        self.network = network
        self.seg = seg
        self.layers = [network.layer(n) for n in seg.layers]
        self.pos = {n: i for i, n in enumerate(seg.layers)}
        self.inside = set(seg.layers)
        self.n = seg.tiles
        self.bounds = tile_bounds(network, seg.layers, seg.axis, seg.tiles)
        T = network.timesteps
        self.T = T
        self.tb = seg.time_batch
        self.S = T // seg.time_batch
        # Overlap rows kept across tile boundaries live for all T under space_outer.
        self.tile_keep_mult = T if seg.order is Order.SPACE_OUTER else seg.time_batch
        self._carried: dict[str, int] = {}

    def tile_rows(self, name: str) -> list[int]:
        """Rows of ``name`` in each tile."""
        b = self.bounds[name]
        return [b[t + 1] - b[t] for t in range(self.n)]

    def active_tiles(self, name: str) -> int:
        """Tiles in which ``name`` has rows to compute (it runs in S times that many steps)."""
        return sum(1 for r in self.tile_rows(name) if r > 0)

    def sub_rows(self, name: str, m: int) -> list[list[tuple[int, int]]]:
        """Per tile, the sub-tile row ranges of ``name`` (empty list for an empty tile)."""
        b = self.bounds[name]
        out = []
        for t in range(self.n):
            if b[t + 1] <= b[t]:
                out.append([])
                continue
            sb = sub_bounds(b[t], b[t + 1], m)
            out.append([(sb[j], sb[j + 1]) for j in range(m)])
        return out

    def carried_rows(self, name: str) -> int:
        """Most rows of ``name`` kept across a tile boundary for in-segment consumers.

        At the start of tile ``t`` the rows from the lowest one a consumer's
        next window needs up to ``bounds[t]`` are still live. Memoised: the
        answer depends on the frame alone.
        """
        carried = self._carried.get(name)
        if carried is None:
            net, axis = self.network, self.seg.axis
            b = self.bounds[name]
            # Per in-segment consumer: the first input row each of its output rows needs
            # (layer.window(axis, row, row + 1)[0] is first[row] below the extent), bounds.
            inner = [(_row_windows(net.layer(c), axis)[0], self.bounds[c])
                     for c in net.consumers(name) if c in self.inside]
            carried = 0
            for t in range(1, self.n):
                need = [first[bc[t]] for first, bc in inner if bc[t] < len(first) - 1]
                if need:
                    carried = max(carried, b[t] - min(need))
            self._carried[name] = carried
        return carried

    def window_reads(self, consumer: str, m: int, keep: bool
                     ) -> tuple[int, list[int], list[int]]:
        """Rows of an input read from DRAM by ``consumer`` with ``m`` sub-tiles.

        Returns
        -------
        total_rows
            Rows read over one pass of every tile and sub-tile (multiply by T
            and the row size for bits).
        max_new_rows
            Per tile, the most rows one sub-tile reads (its transient buffer).
        sub_halo_rows
            Per tile, under ``keep``, the most overlap rows held between two
            sub-tiles of that tile, times ``Tb`` (the timesteps they are held
            for). Rows held across a tile boundary are the tensor's, not the
            consumer's: see :meth:`kept_halo_rows`.
        """
        # The rows depend on the consumer's tile bounds alone (and, for halos, on Tb and
        # the order), so geometries with equal bounds share one cached computation.
        total, max_new, halo = _window_reads(
            self.network, consumer, self.seg.axis, self.bounds[consumer], m, keep,
            self.tb if keep else 0)
        return total, list(max_new), list(halo)

    def kept_halo_rows(self, tensor: str) -> int:
        """Rows of ``tensor`` held across tile boundaries for its in-segment consumers
        reading it from DRAM under ``keep``, times the timesteps they are held for.

        Consumer ``c`` keeps, from its tile before boundary ``t`` to its tile
        after it, the rows its two windows share: ``window_c(b_c(t), b_c(t)+1)``
        up to the end of its window of rows ``< b_c(t)``, when ``0 < b_c(t) <
        E_c``. While the layer at position ``p`` runs in tile ``t``, consumers
        at ``p`` or later hold their rows of boundary ``t``, earlier ones those
        of boundary ``t + 1``. The consumers share one copy of each row, so the
        buffer holds the union of those rows; the most over every ``(t, p)``
        is reserved for the whole segment.
        """
        return self._halo_plan(tensor)[0] * self.tile_keep_mult

    def halo_room(self, tensor: str, consumer: str) -> list[int]:
        """Per tile, the rows (times the timesteps they are held for) of the
        :meth:`kept_halo_rows` reservation of ``tensor`` that no other consumer
        uses while ``consumer`` runs: the rows it keeps between its sub-tiles
        go there first."""
        best, others = self._halo_plan(tensor)
        mult = self.tile_keep_mult
        return [(best - o) * mult for o in others[consumer]]

    def _halo_plan(self, tensor: str) -> tuple[int, dict[str, tuple[int, ...]]]:
        cons = tuple((self.pos[c], c, self.bounds[c]) for c in self.network.consumers(tensor)
                     if c in self.inside)
        return _kept_halo_plan(self.network, self.seg.axis, cons, self.n)

    def max_sub_rows(self, name: str, m: int) -> list[int]:
        """Per tile, the rows of the largest of ``m`` sub-tiles of ``name`` (0 if empty)."""
        b = self.bounds[name]
        out = []
        for t in range(self.n):
            span = b[t + 1] - b[t]
            if span <= 0:
                out.append(0)
                continue
            # The floor split of sub_bounds cuts span rows into pieces of floor(span / m)
            # and ceil(span / m) rows, and the pieces sum to span: the largest is the
            # ceiling (an empty piece when m > span leaves it at 1). O(1), not O(m).
            out.append(-(-span // m))
        return out


@lru_cache(maxsize=4096)
def _row_windows(layer: Layer, axis: Axis) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """First and end input rows of one-row windows, so that ``layer.window(axis, lo, hi)``
    is ``(first[lo], last[hi])`` for ``hi > lo``.

    A window of output rows ``[lo, hi)`` starts where row ``lo``'s does and
    ends where row ``hi - 1``'s does (windows grow with the row), so the
    tables are filled from :meth:`Layer.window` itself. ``first`` has one
    padding entry at the extent, ``last`` one at 0.
    """
    ext = layer.extent(axis)
    first = [layer.window(axis, r, r + 1)[0] for r in range(ext)]
    last = [layer.window(axis, r - 1, r)[1] for r in range(1, ext + 1)]
    return (*first, 0), (0, *last)


_VECTOR_SUB_TILES = 40
"""From this many sub-tiles on, :func:`_window_reads` uses numpy."""


@lru_cache(maxsize=4096)
def _kept_halo_plan(network: Network, axis: Axis,
                    consumers: tuple[tuple[int, str, tuple[int, ...]], ...], n: int
                    ) -> tuple[int, dict[str, tuple[int, ...]]]:
    """From the ``(position, name, bounds)`` of each consumer: the most rows held
    across tile boundaries at any (tile, position) (:meth:`SegmentGeometry.kept_halo_rows`
    before the timestep factor) and, per consumer and tile, the rows the others
    hold while it runs."""
    if n == 1 or not consumers:
        return 0, {name: (0,) * n for _, name, _ in consumers}
    held = []  # per consumer: position, name, its kept rows [lo, hi) at boundaries 0..n
    for p, name, b in consumers:
        first, last = _row_windows(network.layer(name), axis)
        ext = b[-1]
        rows = [(first[b[t]], last[b[t]]) if 0 < b[t] < ext and last[b[t]] > first[b[t]]
                else None for t in range(n + 1)]
        held.append((p, name, rows))

    def union_at(t: int, at: int, skip: str | None = None) -> int:
        return _union_rows([r for p, name, rows in held if name != skip
                            and (r := rows[t if p >= at else t + 1]) is not None])

    positions = sorted({p for p, _, _ in held})
    best = max(union_at(t, at) for t in range(n) for at in positions)
    others = {name: tuple(union_at(t, p, skip=name) for t in range(n)) for p, name, _ in held}
    return best, others


def _union_rows(spans: list[tuple[int, int]]) -> int:
    """Rows in the union of the half-open ranges ``spans``."""
    total, end = 0, None
    for lo, hi in sorted(spans):
        if end is None or lo >= end:
            total += hi - lo
            end = hi
        elif hi > end:
            total += hi - end
            end = hi
    return total


@lru_cache(maxsize=1 << 15)
def _window_reads(network: Network, consumer: str, axis: Axis, bounds: tuple[int, ...], m: int,
                  keep: bool, tb: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """:meth:`SegmentGeometry.window_reads` of ``consumer`` with tile ``bounds``; ``tb``
    only matters under ``keep``."""
    layer = network.layer(consumer)
    n = len(bounds) - 1
    if n * m >= _VECTOR_SUB_TILES:
        return _window_reads_vector(layer, axis, bounds, m, keep, tb)
    first, last = _row_windows(layer, axis)
    total = 0
    max_new = [0] * n
    halo = [0] * n
    prev_hi = None
    # The loop of sub_rows and Layer.window, inlined: this is the cost model's hot spot.
    for t in range(n):
        lo_t, hi_t = bounds[t], bounds[t + 1]
        if hi_t <= lo_t:
            continue
        span = hi_t - lo_t
        most = 0
        lo = lo_t
        for j in range(m):
            hi = lo_t + ((j + 1) * span) // m
            a, e = (first[lo], last[hi]) if hi > lo else (0, 0)
            overlap = max(0, min(prev_hi, e) - a) if prev_hi is not None else 0
            new = (e - a) - overlap if keep else (e - a)
            total += new
            most = max(most, new)
            if keep and j and overlap:
                halo[t] = max(halo[t], overlap * tb)
            prev_hi = e
            lo = hi
        max_new[t] = most
    return total, tuple(max_new), tuple(halo)


def _window_reads_vector(layer: Layer, axis: Axis, bounds: tuple[int, ...], m: int,
                         keep: bool, tb: int
                         ) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """:func:`_window_reads` over all sub-tiles at once, for many sub-tiles."""
    first, last = _row_window_arrays(layer, axis)
    b = np.asarray(bounds, dtype=np.int64)
    active = np.flatnonzero(b[1:] > b[:-1])
    max_new = [0] * (len(bounds) - 1)
    halo = [0] * (len(bounds) - 1)
    if active.size == 0:
        return 0, tuple(max_new), tuple(halo)
    lo_t = b[active]
    span = b[active + 1] - lo_t
    # Sub-tile j of a tile spans [lo_t + j*span//m, lo_t + (j+1)*span//m), as sub_bounds.
    hi = lo_t[:, None] + (np.arange(1, m + 1)[None, :] * span[:, None]) // m
    lo = np.empty_like(hi)
    lo[:, 0] = lo_t
    lo[:, 1:] = hi[:, :-1]
    nonempty = hi > lo
    a = np.where(nonempty, first[lo], 0).ravel()
    e = np.where(nonempty, last[hi], 0).ravel()
    # Rows shared with the previous sub-tile's window (in run order, across tiles).
    overlap = np.zeros_like(e)
    overlap[1:] = np.maximum(0, np.minimum(e[:-1], e[1:]) - a[1:])
    new = e - a - overlap if keep else e - a
    most = np.maximum(new.reshape(-1, m).max(axis=1), 0)
    for t, rows in zip(active.tolist(), most.tolist(), strict=True):
        max_new[t] = rows
    if keep and m > 1:
        # Rows shared between sub-tiles of one tile (not across tiles), held for Tb.
        sub = overlap.reshape(-1, m)[:, 1:].max(axis=1) * tb
        for t, rows in zip(active.tolist(), sub.tolist(), strict=True):
            halo[t] = max(0, rows)
    return int(new.sum()), tuple(max_new), tuple(halo)


@lru_cache(maxsize=4096)
def _row_window_arrays(layer: Layer, axis: Axis) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_row_windows` as read-only int64 arrays."""
    first, last = (np.array(x, dtype=np.int64) for x in _row_windows(layer, axis))
    first.flags.writeable = False
    last.flags.writeable = False
    return first, last


def _local(geo: SegmentGeometry, pos_lo: int, pos_hi: int, per_tile: Sequence[int]) -> np.ndarray:
    arr = np.zeros((geo.n, len(geo.layers)), dtype=np.int64)
    arr[:, pos_lo:pos_hi + 1] = np.asarray(per_tile, dtype=np.int64)[:, None]
    return arr


def weight_term(geo: SegmentGeometry, layer: Layer, choice: WeightChoice, m: int) -> Term:
    """Traffic and occupancy of ``layer``'s weights under ``choice``."""
    w = layer.weight_size_bits
    if choice.resident:
        return Term("weights", layer.name, layer.name, read_bits=w, persistent_bits=w)
    runs = geo.S * geo.active_tiles(layer.name)
    reads = runs * w if choice.chunks == 1 else runs * m * w
    chunk = w // choice.chunks
    per_tile = [chunk if r else 0 for r in geo.tile_rows(layer.name)]
    p = geo.pos[layer.name]
    return Term("weights", layer.name, layer.name, read_bits=reads,
                local=_local(geo, p, p, per_tile))


def state_term(geo: SegmentGeometry, layer: Layer, mode: StateMode, m: int,
               persistence: StatePersistence) -> Term:
    """Traffic and occupancy of ``layer``'s neuron state under ``mode``."""
    v = layer.state_size_bits
    row = layer.state_row_bits(geo.seg.axis)
    passes = 1 if mode is not StateMode.SPILLED else geo.S
    traffic = passes * v if persistence is StatePersistence.STREAMING else (passes - 1) * v
    if mode is StateMode.RESIDENT:
        return Term("state", layer.name, layer.name, traffic, traffic, persistent_bits=v)
    if mode is StateMode.TILE_RESIDENT:
        return Term("state", layer.name, layer.name, traffic, traffic,
                    persistent_bits=max(geo.tile_rows(layer.name)) * row)
    per_tile = [r * row for r in geo.max_sub_rows(layer.name, m)]
    p = geo.pos[layer.name]
    return Term("state", layer.name, layer.name, traffic, traffic,
                local=_local(geo, p, p, per_tile))


def output_term(geo: SegmentGeometry, layer: Layer, in_segment: Placement | None,
                whole: bool, written: bool, m: int) -> Term:
    """The output tensor of ``layer`` at its producer.

    ``in_segment`` is its placement for in-segment consumers (``None`` when it
    has none); ``whole`` says it is kept whole in the GB during this segment;
    ``written`` that it goes to DRAM.
    """
    net = geo.network
    name = layer.name
    rowbits = layer.output_row_bits(geo.seg.axis)
    write = net.tensor_size_bits(name) if written else 0
    if whole:
        return Term("activations", name, name, write_bits=write,
                    persistent_bits=net.tensor_size_bits(name))
    p = geo.pos[name]
    if in_segment is Placement.ON_CHIP:
        last = max(geo.pos[c] for c in net.consumers(name) if c in geo.inside)
        live = [r * rowbits * geo.tb for r in geo.tile_rows(name)]
        carried = geo.carried_rows(name)
        return Term("activations", name, name, write_bits=write,
                    persistent_bits=carried * rowbits * geo.tile_keep_mult,
                    local=_local(geo, p, last, live))
    if written:
        per_tile = [r * rowbits * geo.tb for r in geo.max_sub_rows(name, m)]
        return Term("activations", name, name, write_bits=write, local=_local(geo, p, p, per_tile))
    return Term("activations", name, name)


def dram_read_term(geo: SegmentGeometry, tensor: str, consumer: Layer, halo: Halo,
                   m: int) -> Term:
    """``consumer`` reading ``tensor`` from DRAM, window by window."""
    rowbits = geo.network.tensor_row_bits(tensor, geo.seg.axis)
    keep = halo is Halo.KEEP
    total, max_new, sub_halo = geo.window_reads(consumer.name, m, keep)
    p = geo.pos[consumer.name]
    # The rows kept between this consumer's sub-tiles live only while it runs, in the
    # room the tensor's reservation across tiles (kept_halo_term) leaves free then;
    # only what exceeds it is added.
    room = geo.halo_room(tensor, consumer.name) if keep else [0] * geo.n
    return Term("activations", tensor, consumer.name,
                read_bits=total * rowbits * geo.T,
                local=_local(geo, p, p, [(r * geo.tb + max(0, h - f)) * rowbits
                                         for r, h, f in zip(max_new, sub_halo, room,
                                                            strict=True)]))


def kept_halo_term(geo: SegmentGeometry, tensor: str) -> Term:
    """The rows of ``tensor``, read from DRAM under ``keep``, held across tile
    boundaries for its in-segment consumers (:meth:`SegmentGeometry.kept_halo_rows`)."""
    rowbits = geo.network.tensor_row_bits(tensor, geo.seg.axis)
    return Term("activations", tensor, "", persistent_bits=geo.kept_halo_rows(tensor) * rowbits)


def layer_terms(network: Network, geo: SegmentGeometry, lay: Layer, m: int,
                weight: WeightChoice, state: StateMode, activation: Placement | None,
                whole: bool, written: bool, reads: Sequence[tuple[str, Halo]],
                memo: dict[tuple[object, ...], Term] | None = None) -> list[Term]:
    """The terms of one layer of a segment, from that layer's decisions alone.

    Parameters
    ----------
    m, weight, state
        The layer's sub-tiles, weight choice and state mode (the last two are
        ignored for layers without weights or state).
    activation
        Placement of its output for in-segment consumers, ``None`` when it has none.
    whole, written
        Whether its output is kept whole in the GB / written to DRAM (the
        segment's :class:`SegmentContext`).
    reads
        ``(tensor, halo)`` of every input it reads from DRAM, in input order.
    memo
        Optional cache of terms for callers that build many variants of one
        frame: keyed on each term's own arguments, it must belong to ``geo``.

    A segment's terms are those of its layers in order (:func:`segment_terms`),
    so a caller may also cache them per layer on exactly these arguments.
    """
    name = lay.name
    terms: list[Term] = []
    if lay.has_weights:
        key: tuple[object, ...] = ("weights", name, weight, m)
        term = memo.get(key) if memo is not None else None
        if term is None:
            term = weight_term(geo, lay, weight, m)
            if memo is not None:
                memo[key] = term
        terms.append(term)
    if lay.stateful:
        key = ("state", name, state, m)
        term = memo.get(key) if memo is not None else None
        if term is None:
            term = state_term(geo, lay, state, m, network.state_persistence)
            if memo is not None:
                memo[key] = term
        terms.append(term)
    key = ("output", name, activation, whole, written, m)
    term = memo.get(key) if memo is not None else None
    if term is None:
        term = output_term(geo, lay, activation, whole, written, m)
        if memo is not None:
            memo[key] = term
    terms.append(term)
    for src, halo in reads:
        key = ("read", name, src, halo, m)
        term = memo.get(key) if memo is not None else None
        if term is None:
            term = dram_read_term(geo, src, lay, halo, m)
            if memo is not None:
                memo[key] = term
        terms.append(term)
    return terms


def segment_terms(network: Network, seg: Segment, ctx: SegmentContext,
                  geo: SegmentGeometry | None = None) -> list[Term]:
    """Every term of ``seg`` given how it meets the rest of the mapping."""
    geo = geo or SegmentGeometry(network, seg)
    terms: list[Term] = []
    kept: dict[str, None] = {}
    for lay in geo.layers:
        has_inner = any(c in geo.inside for c in network.consumers(lay.name))
        reads = []
        for src in dict.fromkeys(lay.inputs):
            # Placements are taken literally: a reader set to `dram` reads from DRAM even
            # when the tensor is also kept whole on chip for another segment.
            inner = src in geo.inside
            placement = seg.activation(src) if inner else seg.input(src)
            if placement is not Placement.ON_CHIP:
                reads.append((src, seg.halo(src)))
                if seg.halo(src) is Halo.KEEP and geo.n > 1:
                    kept[src] = None
        terms.extend(layer_terms(
            network, geo, lay, seg.sub_tile(lay.name), seg.weight(lay.name),
            seg.state(lay.name), seg.activation(lay.name) if has_inner else None,
            lay.name in ctx.whole, lay.name in ctx.written, reads))
    terms.extend(kept_halo_term(geo, src) for src in kept)
    # Tensors from earlier segments kept whole but not read here still occupy the GB.
    produced_or_read = {lay.name for lay in geo.layers}
    for name in sorted(ctx.whole - produced_or_read):
        terms.append(Term("activations", name, "", persistent_bits=network.tensor_size_bits(name)))
    return terms


def mapping_contexts(network: Network, mapping: Mapping) -> list[SegmentContext]:
    """The :class:`SegmentContext` of every segment of ``mapping``."""
    segments = mapping.segments
    whole: list[set[str]] = [set() for _ in segments]
    written: list[set[str]] = [set() for _ in segments]
    for tensor, p, cons_segs, to_dram in _context_plan(network,
                                                       tuple(s.layers for s in segments)):
        last_on_chip = None
        for s in cons_segs:
            if s == p:
                to_dram |= segments[s].activation(tensor) is Placement.DRAM
            elif segments[s].input(tensor) is Placement.ON_CHIP:
                last_on_chip = s
            else:
                to_dram = True
        if last_on_chip is not None:
            for s in range(max(p, 0), last_on_chip + 1):
                whole[s].add(tensor)
        if to_dram and p >= 0:
            written[p].add(tensor)
    return [SegmentContext(frozenset(w), frozenset(x))
            for w, x in zip(whole, written, strict=True)]


@lru_cache(maxsize=256)
def _context_plan(network: Network, segment_layers: tuple[tuple[str, ...], ...]
                  ) -> tuple[tuple[str, int, tuple[int, ...], bool], ...]:
    """Per tensor (network input first, then layers in order): its producing segment
    (``-1`` for the input), the segments of its consumers in order, and whether it
    is a network output. It depends on the segmentation only, so the greedy, which
    re-derives the contexts of one segmentation many times, computes it once."""
    where = {name: i for i, layers in enumerate(segment_layers) for name in layers}
    where[network.input.name] = -1
    outputs = set(network.output_names)
    tensors = [network.input.name] + [lay.name for lay in network.layers]
    return tuple((tensor, where[tensor],
                  tuple(sorted({where[c] for c in network.consumers(tensor)})), tensor in outputs)
                 for tensor in tensors)


# ---------------------------------------------------------------------------
# Energy and latency pieces
# ---------------------------------------------------------------------------

def pj_to_fj(value_pj: float) -> int:
    """Energies are kept on a 1 fJ grid so that solvers see integers."""
    return round(value_pj * 1000)


@dataclass(frozen=True)
class EnergyRates:
    """Integer fJ per bit for a DRAM read and a DRAM write, GB fill/drain included."""

    read_fj_per_bit: int
    write_fj_per_bit: int
    gb_read_fj_per_bit: int
    gb_write_fj_per_bit: int

    @staticmethod
    def of(hw: Hardware) -> EnergyRates:
        """Rates of ``hw``: a DRAM read also writes the GB, a DRAM write reads it."""
        gb = hw.global_buffer
        gr, gw = pj_to_fj(gb.read_pj_per_bit), pj_to_fj(gb.write_pj_per_bit)
        return EnergyRates(pj_to_fj(hw.dram.read_pj_per_bit) + gw,
                           pj_to_fj(hw.dram.write_pj_per_bit) + gr, gr, gw)


def layer_gb_access_bits(geo: SegmentGeometry, layer: Layer, m: int
                         ) -> dict[str, tuple[int, int]]:
    """Operand reads and writes at the GB per operand, one access per use.

    Each operand goes between the GB and the array once per use: the weights
    once per sub-tile per timestep, every input row of every (sub-)window once
    per timestep, each output once, the state read and written once per
    timestep. The rule of pools and adds, and of every layer on hardware
    without ``loop_nests``.
    """
    if layer.kind is LayerKind.FLATTEN:
        return {}
    T = geo.T
    rows, _, _ = geo.window_reads(layer.name, m, keep=False)  # the same windows for each input
    reads = sum(rows * geo.network.tensor_row_bits(src, geo.seg.axis) * T
                for src in dict.fromkeys(layer.inputs))
    out = {"I": (reads, 0), "O": (0, layer.output_size_bits(T))}
    if layer.has_weights:
        out["W"] = (layer.weight_size_bits * T * geo.active_tiles(layer.name) * m, 0)
    if layer.stateful:
        out["V"] = (layer.state_size_bits * T, layer.state_size_bits * T)
    return out


_NEST_HW: dict[int, tuple[Hardware, NestHardware]] = {}


def nest_hardware(hw: Hardware) -> NestHardware:
    """The loop nests' view of ``hw`` (memoised per hardware object)."""
    hit = _NEST_HW.get(id(hw))
    if hit is None or hit[0] is not hw:
        hit = (hw, NestHardware.of(hw))
        _NEST_HW[id(hw)] = hit
    return hit[1]


def layer_operand_energy_fj(geo: SegmentGeometry, layer: Layer, m: int, hw: Hardware,
                            chunks: int = 1) -> dict[tuple[str, str], int]:
    """Energy (integer fJ) of ``layer``'s operand accesses below DRAM, per
    ``(level, operand)``: GB reads and writes and the inner levels.

    Conv and linear layers run every step (sub-tile x time batch) with its
    optimal loop nest (:mod:`stems_opt.cost.loops`) on hardware with
    ``loop_nests``, ``chunks`` being the weight chunks of a streamed layer;
    otherwise each operand is accessed once per use (:func:`layer_gb_access_bits`).
    """
    nh = nest_hardware(hw)
    if layer.has_weights and hw.loop_nests:
        return dict(layer_nest_energy(layer, geo.seg.axis, geo.bounds[layer.name], m, geo.tb,
                                      geo.S, nh, chunks))
    return {(GB, op): r * nh.gb_read_fj_per_bit + w * nh.gb_write_fj_per_bit
            for op, (r, w) in layer_gb_access_bits(geo, layer, m).items() if r or w}


def weight_chunks(seg: Segment, layer: Layer) -> int:
    """Weight chunks a step of ``layer`` walks (1 for resident weights)."""
    wc = seg.weight(layer.name)
    return 1 if wc.resident or not layer.has_weights else wc.chunks


def layer_compute_cycles(geo: SegmentGeometry, layer: Layer, hw: Hardware) -> int:
    """Cycles of ``layer`` on the array: spatial unrolling with ceil per tile."""
    arr = hw.array
    T = geo.T
    if not layer.has_weights:
        return math.ceil(layer.operations(T) / arr.pe_count) if layer.operations(T) else 0
    axis = geo.seg.axis
    along, across = ("OY", "OX") if axis is Axis.OY else ("OX", "OY")
    rows = sum(math.ceil(r / arr.factor(along)) for r in geo.tile_rows(layer.name))
    return (T * math.ceil(layer.k / arr.factor("K")) * math.ceil(layer.c / arr.factor("C"))
            * math.ceil(layer.fy / arr.factor("FY")) * math.ceil(layer.fx / arr.factor("FX"))
            * rows * math.ceil(layer.cross_extent(axis) / arr.factor(across)))


# ---------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TrafficBreakdown:
    """DRAM reads and writes (bits) by tensor class."""

    read_bits: dict[str, int]
    write_bits: dict[str, int]

    @property
    def total_bits(self) -> int:
        """All off-chip traffic."""
        return sum(self.read_bits.values()) + sum(self.write_bits.values())

    def by_class(self) -> dict[str, int]:
        """Reads + writes per tensor class."""
        return {c: self.read_bits[c] + self.write_bits[c] for c in TENSOR_CLASSES}


@dataclass(frozen=True)
class SegmentCost:
    """Cost of one segment."""

    index: int
    layers: tuple[str, ...]
    traffic: TrafficBreakdown
    peak_gb_bits: int
    persistent_gb_bits: int
    peak_tile: int
    peak_layer: str
    energy_pj: dict[str, float]
    latency_cycles: int
    terms: tuple[Term, ...] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Cost:
    """The referee's verdict on a mapping."""

    traffic: TrafficBreakdown
    traffic_by_layer: dict[str, int]
    segments: tuple[SegmentCost, ...]
    energy_pj: dict[str, float]
    latency_cycles: int
    capacity_bits: int
    memory_energy_fj: int
    energy_by_level_pj: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def traffic_bits(self) -> int:
        """Total off-chip traffic."""
        return self.traffic.total_bits

    @property
    def total_energy_pj(self) -> float:
        """Total energy."""
        return self.energy_pj["total"]

    @property
    def peak_gb_bits(self) -> int:
        """Largest GB occupancy over all segments."""
        return max(s.peak_gb_bits for s in self.segments)

    @property
    def feasible(self) -> bool:
        """Whether every segment fits the GB."""
        return self.peak_gb_bits <= self.capacity_bits

    def objective_value(self, objective: str, weights: tuple[int, int] | None = None) -> float:
        """Traffic in bits, energy in pJ, latency in cycles or EDP in pJ x cycles;
        with ``weights`` ``(a, b)`` the EDP search's ``a * energy_fJ + b * cycles``."""
        if weights is not None:
            return weights[0] * self.total_energy_pj * 1000 + weights[1] * self.latency_cycles
        return {"traffic": self.traffic_bits, "energy": self.total_energy_pj,
                "latency": self.latency_cycles,
                "edp": self.total_energy_pj * self.latency_cycles}[objective]

    @property
    def edp_pj_cycles(self) -> float:
        """Energy-delay product: total energy (pJ) times latency (cycles)."""
        return self.total_energy_pj * self.latency_cycles

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: traffic (bits), energy (pJ), occupancy, latency, per segment."""
        tr = self.traffic
        return {
            "traffic_bits": {
                "total": tr.total_bits,
                "reads": sum(tr.read_bits.values()),
                "writes": sum(tr.write_bits.values()),
                "by_tensor": tr.by_class(),
                "reads_by_tensor": dict(tr.read_bits),
                "writes_by_tensor": dict(tr.write_bits),
                "by_layer": dict(self.traffic_by_layer),
                "by_segment": [s.traffic.total_bits for s in self.segments],
            },
            "energy_pj": dict(self.energy_pj),
            "energy_by_level_pj": {level: dict(ops)
                                   for level, ops in self.energy_by_level_pj.items()},
            "peak_gb_bits": self.peak_gb_bits,
            "capacity_bits": self.capacity_bits,
            "latency_cycles": self.latency_cycles,
            "edp_pj_cycles": self.edp_pj_cycles,
            "segments": [{
                "layers": list(s.layers),
                "traffic_bits": s.traffic.total_bits,
                "traffic_bits_by_tensor": s.traffic.by_class(),
                "peak_gb_bits": s.peak_gb_bits,
                "persistent_gb_bits": s.persistent_gb_bits,
                "peak_tile": s.peak_tile,
                "peak_layer": s.peak_layer,
                "latency_cycles": s.latency_cycles,
            } for s in self.segments],
        }


def _breakdown(terms: Sequence[Term]) -> TrafficBreakdown:
    r = dict.fromkeys(TENSOR_CLASSES, 0)
    w = dict.fromkeys(TENSOR_CLASSES, 0)
    for t in terms:
        r[t.tensor_class] += t.read_bits
        w[t.tensor_class] += t.write_bits
    return TrafficBreakdown(r, w)


def peak_of(terms: Sequence[Term], geo: SegmentGeometry) -> tuple[int, int, int, int]:
    """``(peak, persistent, tile, position)`` of a list of terms."""
    persistent = sum(t.persistent_bits for t in terms)
    local = np.zeros((geo.n, len(geo.layers)), dtype=np.int64)
    for t in terms:
        if t.local is not None:
            local += t.local
    flat = int(np.argmax(local))
    tile, pos = divmod(flat, len(geo.layers))
    return persistent + int(local[tile, pos]), persistent, tile, pos


def evaluate(problem: Problem, mapping: Mapping) -> Cost:
    """Score ``mapping``: traffic, per-segment peak occupancy, energy, latency.

    The mapping must be structurally valid (:func:`stems_opt.mapping.check_structure`);
    capacity is reported, not enforced: see :attr:`Cost.feasible`.
    """
    net, hw = problem.network, problem.hardware
    rates = EnergyRates.of(hw)
    contexts = mapping_contexts(net, mapping)
    seg_costs = []
    by_layer: dict[str, int] = {lay.name: 0 for lay in net.layers}
    all_terms: list[Term] = []
    operand_fj: dict[tuple[str, str], int] = {}
    for i, (seg, ctx) in enumerate(zip(mapping.segments, contexts, strict=True)):
        geo = SegmentGeometry(net, seg)
        terms = segment_terms(net, seg, ctx, geo)
        peak, persistent, tile, pos = peak_of(terms, geo)
        traffic = _breakdown(terms)
        for t in terms:
            if t.layer:
                by_layer[t.layer] += t.read_bits + t.write_bits
        reads, writes = sum(traffic.read_bits.values()), sum(traffic.write_bits.values())
        seg_fj: dict[tuple[str, str], int] = {}
        for lay in geo.layers:
            got = layer_operand_energy_fj(geo, lay, seg.sub_tile(lay.name), hw,
                                          weight_chunks(seg, lay))
            for key, fj in got.items():
                seg_fj[key] = seg_fj.get(key, 0) + fj
                operand_fj[key] = operand_fj.get(key, 0) + fj
        gb_fj = sum(fj for (level, _), fj in seg_fj.items() if level == GB)
        inner_fj = sum(seg_fj.values()) - gb_fj
        dram_fj = reads * (rates.read_fj_per_bit - rates.gb_write_fj_per_bit) + \
            writes * (rates.write_fj_per_bit - rates.gb_read_fj_per_bit)
        fill_fj = reads * rates.gb_write_fj_per_bit + writes * rates.gb_read_fj_per_bit
        seg_costs.append(SegmentCost(
            index=i, layers=seg.layers, traffic=traffic, peak_gb_bits=peak,
            persistent_gb_bits=persistent, peak_tile=tile, peak_layer=seg.layers[pos],
            energy_pj={"dram": dram_fj / 1000, "global_buffer": (gb_fj + fill_fj) / 1000,
                       "inner_levels": inner_fj / 1000},
            latency_cycles=sum(segment_latency(geo, ctx.written, hw, nest_hardware(hw)).values()),
            terms=tuple(terms)))
        all_terms.extend(terms)
    traffic = _breakdown(all_terms)
    reads, writes = sum(traffic.read_bits.values()), sum(traffic.write_bits.values())
    memory_fj = reads * rates.read_fj_per_bit + writes * rates.write_fj_per_bit + \
        sum(operand_fj.values())
    compute_fj = 0.0
    neuron_fj = 0
    T = net.timesteps
    for lay in net.layers:
        e = hw.array.mac_pj if lay.uses_mac else hw.array.accumulate_pj
        compute_fj += lay.operations(T) * pj_to_fj(e) * lay.spike_rate
        neuron_fj += lay.neuron_updates(T) * pj_to_fj(hw.array.neuron_update_pj)
    energy = {
        "dram": sum(s.energy_pj["dram"] for s in seg_costs),
        "global_buffer": sum(s.energy_pj["global_buffer"] for s in seg_costs),
        "inner_levels": sum(s.energy_pj["inner_levels"] for s in seg_costs),
        "compute": compute_fj / 1000,
        "neuron_updates": neuron_fj / 1000,
    }
    energy["total"] = (memory_fj + compute_fj + neuron_fj) / 1000
    levels = energy_by_level(traffic, operand_fj, rates)
    levels["compute"] = {"": compute_fj / 1000}
    levels["neuron_updates"] = {"": neuron_fj / 1000}
    return Cost(traffic=traffic, traffic_by_layer=by_layer, segments=tuple(seg_costs),
                energy_pj=energy, latency_cycles=sum(s.latency_cycles for s in seg_costs),
                capacity_bits=hw.gb_capacity_bits, memory_energy_fj=memory_fj,
                energy_by_level_pj=levels)


# DRAM reads by tensor class feed these operands; DRAM writes come from them.
_READ_OPERAND = {"weights": "W", "state": "V", "activations": "I"}
_WRITE_OPERAND = {"weights": "W", "state": "V", "activations": "O"}


def energy_by_level(traffic: TrafficBreakdown, operand_fj: dict[tuple[str, str], int],
                    rates: EnergyRates) -> dict[str, dict[str, float]]:
    """Memory energy (pJ) per level and operand: DRAM, the GB (its fills and
    drains for DRAM plus the operand accesses of the loop nests), each inner
    level. Registers cost nothing and are not listed."""
    dram_r = rates.read_fj_per_bit - rates.gb_write_fj_per_bit
    dram_w = rates.write_fj_per_bit - rates.gb_read_fj_per_bit
    fj: dict[str, dict[str, int]] = {"dram": {}, GB: {}}
    for cls in TENSOR_CLASSES:
        for bits, op, dram_rate, gb_rate in (
                (traffic.read_bits[cls], _READ_OPERAND[cls], dram_r, rates.gb_write_fj_per_bit),
                (traffic.write_bits[cls], _WRITE_OPERAND[cls], dram_w, rates.gb_read_fj_per_bit)):
            if bits:
                fj["dram"][op] = fj["dram"].get(op, 0) + bits * dram_rate
                fj[GB][op] = fj[GB].get(op, 0) + bits * gb_rate
    for (level, op), v in sorted(operand_fj.items()):
        fj.setdefault(level, {})
        fj[level][op] = fj[level].get(op, 0) + v
    return {level: {op: v / 1000 for op, v in sorted(ops.items())} for level, ops in fj.items()}


def min_read_bits(network: Network, tensor: str, consumer: str, axis: Axis) -> int:
    """The fewest bits ``consumer`` can read of ``tensor`` from DRAM along ``axis``:
    the rows of the union of its one-row windows (fine sub-tiles, halos kept), over T."""
    lay = network.layer(consumer)
    rows: set[int] = set()
    for r in range(lay.extent(axis)):
        a, b = lay.window(axis, r, r + 1)
        rows.update(range(a, b))
    return len(rows) * network.tensor_row_bits(tensor, axis) * network.timesteps


def compulsory_traffic_bits(network: Network) -> int:
    """Traffic no mapping avoids: input, outputs, every weight once, unavoidable state.

    The input counts as each of its readers' fewest reads (the whole input for
    'same'-padded readers; fewer for a strided 1x1 conv, which skips rows).
    State: ``2 |V|`` per stateful layer under ``streaming``, none under ``reset``.
    """
    name = network.input.name
    total = sum(min(min_read_bits(network, name, c, a) for a in (Axis.OY, Axis.OX))
                for c in network.consumers(name))
    total += sum(network.tensor_size_bits(o) for o in network.output_names)
    total += network.weight_size_bits
    if network.state_persistence is StatePersistence.STREAMING:
        total += 2 * network.state_size_bits
    return total
