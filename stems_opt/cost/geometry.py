"""Tile geometry of a segment: tile and sub-tile row bounds, input windows, halos.

A segment splits its layers' rows along one axis into tiles and each tile
into sub-tiles (``docs/model.md``, sections 3 and 4); everything here is
rows, from which :mod:`stems_opt.cost.traffic` makes bits. No solver is
imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from stems_opt.mapping import Order, Segment
from stems_opt.network import Axis, Layer, Network


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


def weight_chunks(seg: Segment, layer: Layer) -> int:
    """Weight chunks a step of ``layer`` walks (1 for resident weights)."""
    wc = seg.weight(layer.name)
    return 1 if wc.resident or not layer.has_weights else wc.chunks
