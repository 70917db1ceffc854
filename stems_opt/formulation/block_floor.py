"""A residual block's weight reads and activations, one joint floor per block and
interval (``docs/solver.md``, "A block's layers together").

Take a layer ``c`` (SEW-ResNet's ``add``) reading a tensor ``X`` and the end of a
chain ``l_1 -> ... -> l_k -> c`` where each ``l_j``'s only reader is the next
(``conv1 -> conv2 -> conv3`` of a bottleneck block), ``X`` made by a layer ``p``
before ``l_1`` (or the network input). Take a segment containing ``c`` and the
chain from some ``l_j`` on. Each of those layers with weights keeps them
*resident* (one read, ``|W|`` held at every step of the segment), *streams them
whole* (``S a |W|`` reads, ``|W|`` held at its own steps) or *in chunks*
(``S a m |W|`` reads, a chunk held), where ``S`` is the segment's time batches,
``a`` the tiles where the layer runs and ``m`` its sub-tiles
(``docs/model.md`` 4). Each chain output ``Y`` made and read in the segment
stays on chip or goes through DRAM (its write and its reader's least reads);
``X``, when ``p`` is in the segment and ``X`` is not kept whole, likewise (its
write is counted only when no reader after the interval may force it anyway).
Tensors kept whole are held through the segment: the buffer less them is what
the steps share. The step of a layer's largest sub-tile in its largest tile
(at least ``R = ceil(E / a)`` rows, and ``ceil(R / m)`` in the sub-tile) holds,
at once (``docs/model.md`` 5):

* the other layers' resident weights, and its own weights (whole, or a chunk);
* its state rows of the sub-tile, and its output: the tile's rows when the
  output stays on chip (live from its producer on), else the sub-tile's;
* each input: its window of the tile's rows when the input is made in the
  segment and stays on chip (live, or carried from earlier tiles); nothing
  more when it is kept whole; else the sub-tile's new rows
  (:func:`~stems_opt.formulation.step_floor.step_bits`);
* ``X``, on chip: the rows ``c`` reads of it in that tile (live from ``p`` to
  ``c``, or carried), at least ``c``'s window of the fewest rows of ``c`` whose
  chain needs ``R`` rows of the layer (:mod:`~stems_opt.formulation.bypass_floor`'s
  step, through each link), and for a layer reading ``X`` the larger of that and
  its own window of the tile.

All rows count times ``Tb``. Each segment is one choice of ``Tb``, of the
resident set, of the placements and, per non-resident layer, of ``a``, ``m`` and
whole or chunked; giving every layer its own ``a`` only drops constraints. So
the least cost over these choices with every such step within the buffer bounds
the segment's extra weight reads and the chain's and ``X``'s DRAM traffic from
below. Every layer's reads in it are at least its chunk floor (its step holds at
least what that floor's does), and the bypass items on the block's layers and
tensors count the same traffic, so an interval adds what the floor exceeds them
by. Distinct blocks have distinct layers and tensors: their gains add. Counted
for traffic and for energy through loop nests, as the bypass items; in energy the
searched bits (weight re-reads, chain outputs written and read) count at the lesser
DRAM rate.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from stems_opt.cost.traffic import min_read_bits
from stems_opt.formulation.bypass_floor import BypassItem, _reader_rows
from stems_opt.formulation.column_base import EAGER_LAYERS
from stems_opt.formulation.step_floor import (
    least_window_rows,
    shared_rows,
    smallest_chunk_bits,
)
from stems_opt.network import Axis, Network, divisors

CHIP, DRAM, WHOLE = "chip", "dram", "whole"  # where a tensor is in a segment
BLOCK_FLOORS = True  # (off: the bounds as before them, for tests of other bounds alone)
MIN_LAYERS = EAGER_LAYERS
"""Networks with more layers get block floors. They pay on deep chains of repeated
blocks (SEW-ResNet-152: the 10 s bound at 256 KB 800.0 -> 861.8 Mbit); on RED-LIF at
128 KB they cost 2.2 s of column building (at load 2) and its 10 s bound fell from
1,230.2 to 801.0 Mbit (the search's first rounds no longer fit in the limit)."""


@dataclass(frozen=True)
class BlockItem:
    """One block (indices into the layers): ``chain`` feeds ``reader`` beside
    ``tensor`` (``X``, made by ``producer``, -1 for the network input)."""

    tensor: str
    producer: int
    chain: tuple[int, ...]
    reader: int
    last_reader: int  # X's last reader
    network_output: bool  # X is one
    read_bits: int  # X's least reads by the reader
    write_bits: int  # X's write


def _x_rows(network: Network, chain: Sequence[int], at: int, reader: int, axis: Axis,
            rows: int) -> int:
    """The fewest rows of ``X`` that ``reader`` needs in a tile where chain layer
    ``at`` has ``rows`` rows (each link's rows span at most what its reader's rows
    need: :func:`~stems_opt.formulation.bypass_floor._reader_rows`)."""
    for nxt in (*chain[chain.index(at) + 1:], reader):
        rows = _reader_rows(network.layers[nxt], axis, rows)
    return least_window_rows(network.layers[reader], axis, rows)


@dataclass(frozen=True)
class _Rows:
    """One chain layer's row sizes along an axis (bits, per timestep where a tensor's),
    and per row count ``r`` (index ``r``) its input window, its new rows beside the
    previous window, and ``X``'s rows the block's reader needs."""

    name: str
    output: int
    state: int
    inputs: tuple[tuple[str, int], ...]
    x_row: int
    window: np.ndarray
    new: np.ndarray
    x_rows: np.ndarray


@dataclass
class _Search:
    """The least cost of one block's present layers in one interval along one axis.

    Each layer's choices for a time batch and placement are arrays over its tile counts
    and sub-tile counts (:meth:`_choices`), and its least cost for a room an array over
    the reference's tile counts (:meth:`costs`), kept per room: translated blocks share
    one search (:meth:`BlockFloors._least`), so these are computed once per shape.
    ``tests/reference_block_floor.py`` keeps the former scalar search, the oracle."""

    network: Network
    item: BlockItem
    present: tuple[int, ...]  # the chain's layers in the interval
    made_inside: int  # how many of their outputs (the first ones) are read in it
    axis: Axis
    k_unroll: int
    rows: dict[int, _Rows] = dataclasses.field(default_factory=dict)
    choices: dict[tuple, tuple[np.ndarray, np.ndarray, list[float]]] = dataclasses.field(
        default_factory=dict)
    tolerances: dict[int, tuple[int, int]] = dataclasses.field(default_factory=dict)
    least_costs: dict[tuple, np.ndarray] = dataclasses.field(default_factory=dict)
    windows: dict[tuple[int, int], np.ndarray] = dataclasses.field(default_factory=dict)
    finest: dict[tuple, int] = dataclasses.field(default_factory=dict)

    def _rows(self, at: int) -> _Rows:
        got = self.rows.get(at)
        if got is None:
            net, lay, axis = self.network, self.network.layers[at], self.axis
            span = range(lay.extent(axis) + 1)
            window = np.array([least_window_rows(lay, axis, r) if r else 0 for r in span],
                              dtype=np.int64)
            got = self.rows[at] = _Rows(
                lay.name, lay.output_row_bits(axis), lay.state_row_bits(axis),
                tuple((src, net.tensor_row_bits(src, axis)) for src in dict.fromkeys(lay.inputs)),
                net.tensor_row_bits(self.item.tensor, axis), window,
                np.maximum(0, window - shared_rows(lay, axis)),
                np.array([_x_rows(net, self.item.chain, at, self.item.reader, axis, r) if r
                          else 0 for r in span], dtype=np.int64))
        return got

    def held(self, at: int, tile: np.ndarray, sub: np.ndarray, tb: int,
             placed: dict[str, str]) -> np.ndarray:
        """Least bits layer ``at`` holds at its step of ``sub`` rows in a tile of
        ``tile`` rows beside its weights (``placed``: tensor -> where it is), elementwise
        over the (broadcast) row counts."""
        rows, x = self._rows(at), self.item.tensor
        where = placed.get(rows.name, DRAM)
        out = tile if where == CHIP else 0 if where == WHOLE else sub
        bits = out * (rows.output * tb) + sub * rows.state
        x_rows = rows.x_rows[tile] if placed.get(x) == CHIP else 0
        for src, row in rows.inputs:
            where = placed.get(src, DRAM)
            n = rows.window[tile] if where == CHIP else 0 if where == WHOLE else rows.new[sub]
            if src == x:
                n, x_rows = np.maximum(n, x_rows), 0
            bits = bits + n * (row * tb)
        return bits + x_rows * (rows.x_row * tb)

    def tolerance(self, at: int) -> tuple[int, int]:
        """How many tiles fewer and more than the last layer in the interval (the
        reference) layer ``at`` may run in: along each link ``x -> r`` of the chain,
        ``x``'s tile boundaries are ``r``'s windows' ends (``docs/model.md`` 3), which
        grow with ``r``'s boundaries until they reach ``x``'s extent, so a tile where
        ``r`` runs is one where ``x`` runs but for the tiles starting at a row of ``r``
        whose window reaches that end (and, for safety, one more), and ``x`` runs in
        at most two tiles where ``r`` does not (its first and last boundaries are
        fixed at 0 and its extent)."""
        got = self.tolerances.get(at)
        if got is None:
            net, axis, chain = self.network, self.axis, self.present
            fewer = more = 0
            for x, r in zip(chain[chain.index(at):], chain[chain.index(at) + 1:],
                            strict=False):
                lx, lr = net.layers[x], net.layers[r]
                end = lx.extent(axis)
                fewer += 1 + sum(1 for row in range(1, lr.extent(axis))
                                 if lr.window(axis, 0, row)[1] >= end)
                more += 2
            got = self.tolerances[at] = (fewer, more)
        return got

    def costs(self, at: int, tb: int, room: int, placed: dict[str, str], tiles: int
              ) -> np.ndarray:
        """Per tile count ``t`` of the reference (index ``t - 1``, ``t`` up to
        ``tiles``), the least extra reads (bits) of layer ``at``'s weights, not
        resident, with ``room`` bits for its steps and its own tile count within
        :meth:`tolerance` of ``t``; ``inf`` where no choice fits."""
        return self._costs(self._key(at, tb, placed), room, placed, tiles)

    def _key(self, at: int, tb: int, placed: dict[str, str]) -> tuple:
        """What layer ``at``'s choices at time batch ``tb`` read of ``placed``."""
        rows, x = self._rows(at), self.item.tensor
        return (at, tb, placed.get(rows.name, DRAM), placed.get(x, DRAM),
                tuple(placed.get(src, DRAM) for src, _ in rows.inputs))

    def _costs(self, key: tuple, room: int, placed: dict[str, str], tiles: int
               ) -> np.ndarray:
        """:meth:`costs` of the layer and time batch of ``key`` (:meth:`_key`)."""
        got = self.choices.get(key)
        if got is None:
            got = self.choices[key] = self._choices(key[0], key[1], placed)
        cost, need, needs = got
        # (rooms between two of the needs fit the same choices)
        fit = (key, bisect.bisect_right(needs, room), tiles)
        least = self.least_costs.get(fit)
        if least is None:
            per_own = np.where(need <= room, cost, np.inf).min(axis=1)
            least = self.least_costs[fit] = np.append(per_own, np.inf)[
                self._window(key[0], tiles)].min(axis=1)
        return least

    def _finest(self, key: tuple, placed: dict[str, str]) -> int:
        """Bits the layer and time batch of ``key`` hold at their finest step (one row
        in a one-row tile) beside their weights."""
        got = self.finest.get(key)
        if got is None:
            one = np.ones(1, dtype=np.int64)
            got = self.finest[key] = int(self.held(key[0], one, one, key[1], placed)[0])
        return got

    def _window(self, at: int, tiles: int) -> np.ndarray:
        """Per tile count ``t`` of the reference (row ``t - 1``), the indices of layer
        ``at``'s own tile counts ``t - fewer .. t + more`` (:meth:`tolerance`) among its
        ``extent`` counts, the others pointing past them (to an ``inf``)."""
        got = self.windows.get((at, tiles))
        if got is None:
            fewer, more = self.tolerance(at)
            extent = self.network.layers[at].extent(self.axis)
            own = np.arange(tiles)[:, None] + np.arange(-fewer, more + 1)[None, :]
            got = self.windows[(at, tiles)] = np.where((own >= 0) & (own < extent), own,
                                                       extent)
        return got

    def _choices(self, at: int, tb: int, placed: dict[str, str]
                 ) -> tuple[np.ndarray, np.ndarray, list[float]]:
        """Per tile count ``a`` (row ``a - 1``), every (extra reads, bits held) of layer
        ``at``'s choices (two arrays, columns past a tile's choices held ``inf``): whole
        weights (read ``S a`` times, whatever its sub-tiles: the finest holds the least)
        or chunked in ``m`` sub-tiles (``S a m`` times, column ``m``); and the distinct
        bits held, in order."""
        lay = self.network.layers[at]
        w, extent = lay.weight_size_bits, lay.extent(self.axis)
        S = self.network.timesteps // tb
        chunk = smallest_chunk_bits(lay, self.k_unroll)
        a = np.arange(1, extent + 1, dtype=np.int64)[:, None]
        tile = -(-extent // a)
        cost = [((S * a - 1) * w).astype(np.float64)]
        need = [(w + self.held(at, tile, np.ones_like(tile), tb, placed)).astype(np.float64)]
        if chunk is not None:
            m = np.arange(1, extent + 1, dtype=np.int64)[None, :]
            fits = m <= tile
            sub = -(-tile // m)
            cost.append(np.where(fits, (S * a * m - 1) * w, 0).astype(np.float64))
            need.append(np.where(fits, chunk + self.held(at, tile, sub, tb, placed),
                                 np.inf))
        needs = np.hstack(need)
        return np.hstack(cost), needs, sorted(set(needs[np.isfinite(needs)].tolist()))

    def least(self, room: int, placed: dict[str, str], x_choice: bool) -> tuple[float, float]:
        """The least cost with ``X`` on chip and with ``X`` as ``placed`` says (not
        held, or whole), over time batches, resident sets and the placements of the
        chain outputs made and read here (their DRAM traffic counted); the first is
        ``inf`` unless ``x_choice``."""
        net = self.network
        weighted = [at for at in self.present if net.layers[at].has_weights]
        names = [net.layers[at].name for at in self.present]
        nxt = [*names[1:], net.layers[self.item.reader].name]
        made = names[:self.made_inside]  # (the others' placement is in placed)
        moved_bits = [net.tensor_size_bits(n) + min_read_bits(net, n, r, self.axis)
                      for n, r in zip(made, nxt, strict=False)]
        x = self.item.tensor
        sizes = [net.layers[at].weight_size_bits for at in weighted]
        tiles = net.layers[self.present[-1]].extent(self.axis)

        def over(where: str) -> float:
            best = math.inf
            for tb in divisors(net.timesteps):
                for places in range(1 << len(made)):
                    moved = sum(b for i, b in enumerate(moved_bits) if not places >> i & 1)
                    if moved >= best:
                        continue
                    here = {**placed, x: where, **{n: CHIP if places >> i & 1 else DRAM
                                                   for i, n in enumerate(made)}}
                    keys = [self._key(at, tb, here) for at in weighted]
                    for mask in range(1 << len(weighted)):
                        best = min(best, self._resident_set(
                            keys, sizes, mask, room, here, tiles, float(moved)))
            return best

        return over(CHIP) if x_choice else math.inf, over(placed[x])

    def _resident_set(self, keys: list[tuple], sizes: list[int], mask: int, room: int,
                      placed: dict[str, str], tiles: int, moved: float) -> float:
        """:meth:`least` for one time batch, placement (``placed``; ``moved``: the
        chain outputs' DRAM traffic) and resident set (``mask`` over the weighted
        layers, whose :meth:`_key` are ``keys`` and weights ``sizes``)."""
        room -= sum(size for i, size in enumerate(sizes) if mask >> i & 1)
        if room < 0:
            return math.inf
        if any(mask >> i & 1 and self._finest(key, placed) > room
               for i, key in enumerate(keys)):
            return math.inf  # (a resident layer's finest step holds the least)
        totals: np.ndarray | float = moved
        for i, key in enumerate(keys):
            if not mask >> i & 1:
                totals = totals + self._costs(key, room, placed, tiles)
        return float(np.min(totals))

    def shape(self) -> tuple:
        """What :meth:`least` reads: the layers but their names, each input's row
        size and relation (``X``, a chain layer, or other), the axis."""
        net, axis, x = self.network, self.axis, self.item.tensor
        chain = {net.layers[at].name: i for i, at in enumerate(self.present)}
        key: list[object] = [axis, net.timesteps, net.tensor_row_bits(x, axis),
                             net.tensor_size_bits(x), self.k_unroll, self.made_inside,
                             self.present[-1] == self.item.chain[-1]]
        for at in (*self.present, self.item.reader):
            lay = net.layers[at]
            key.append(dataclasses.replace(lay, name="", inputs=()))
            key.append(tuple((net.tensor_row_bits(src, axis), net.tensor_size_bits(src),
                              "X" if src == x else chain.get(src, "other"))
                             for src in lay.inputs))
        key.append(tuple(tuple(_x_rows(net, self.item.chain, at, self.item.reader, axis, r)
                               for r in range(1, net.layers[at].extent(axis) + 1))
                         for at in self.present))
        made = [net.layers[at].name for at in self.present]
        key.append(tuple(net.tensor_size_bits(n) + min_read_bits(net, n, r, axis)
                         for n, r in zip(made, [*made[1:], net.layers[self.item.reader].name],
                                         strict=True)))
        return tuple(key)


def _names(search: _Search) -> list[str]:
    """The tensors :meth:`_Search.least` reads placements of, in an order translated
    blocks share: ``X``, then per present layer its output and its inputs."""
    net = search.network
    out = [search.item.tensor]
    for at in search.present:
        out.append(net.layers[at].name)
        out.extend(net.layers[at].inputs)
    return out


def _renaming(search: _Search, canon: _Search) -> dict[str, str] | None:
    """``search``'s tensor names to ``canon``'s, position by position (one search of a
    shape serves its translates); ``None`` unless that is one-to-one."""
    ours, theirs = _names(search), _names(canon)
    if len(ours) != len(theirs):
        return None
    names: dict[str, str] = {}
    for a, b in zip(ours, theirs, strict=True):
        if names.setdefault(a, b) != b:
            return None
    return names if len(set(names.values())) == len(names) else None


def _chain(network: Network, reader: int, src: str, index: dict[str, int]) -> list[int]:
    """The layers of the chain ending in ``src`` (read by ``reader``), first first:
    each link's only reader is the next, none a network output."""
    outputs, chain = set(network.output_names), []
    name, nxt = src, network.layers[reader].name
    while name in index and name not in outputs and network.consumers(name) == (nxt,):
        chain.append(index[name])
        lay = network.layers[index[name]]
        if len(dict.fromkeys(lay.inputs)) != 1:
            break
        nxt, name = name, lay.inputs[0]
    return chain[::-1]


def block_items(network: Network) -> tuple[BlockItem, ...]:
    """The blocks, with disjoint layers and tensors: per reader, its first input
    that ends a chain with weights beside another input made before the chain."""
    index = {lay.name: i for i, lay in enumerate(network.layers)}
    outputs = set(network.output_names)
    used: set[str] = set()
    items = []
    for c, reader in enumerate(network.layers):
        srcs = list(dict.fromkeys(reader.inputs))
        found = None
        for src in srcs:
            chain = _chain(network, c, src, index)
            names = {network.layers[at].name for at in chain}
            if not any(network.layers[at].has_weights for at in chain) or used & names:
                continue
            for tensor in srcs:
                p = index.get(tensor, -1)
                if tensor == src or p >= chain[0] or tensor in used or \
                        (p < 0 and tensor != network.input.name):
                    continue
                found = BlockItem(
                    tensor, p, tuple(chain), c,
                    max(index[r] for r in network.consumers(tensor)), tensor in outputs,
                    min(min_read_bits(network, tensor, reader.name, a) for a in Axis),
                    network.tensor_size_bits(tensor))
                break
            if found is not None:
                break
        if found is not None:
            items.append(found)
            used.update(network.layers[at].name for at in found.chain)
            used.add(found.tensor)
    return tuple(items)


class BlockFloors:
    """The blocks' floors in model units, per interval and per column.

    Parameters
    ----------
    network, capacity_bits, k_unroll, axes
        As :func:`~stems_opt.formulation.chunk_floor.layer_chunk_floors`.
    chunk_floors
        Its per-layer floors (bits), which the cheap bounds count already.
    bypass
        The bypass items (:func:`~stems_opt.formulation.bypass_floor.bypass_items`):
        one on a block's layers or tensors counts part of the block's traffic.
    read_rate, write_rate
        Model units per DRAM read and write bit (traffic: 1 and 1); ``read_rate`` 0
        or ``write_rate`` ``None`` (latency, energy without loop nests): no blocks.
    """

    def __init__(self, network: Network, capacity_bits: int, k_unroll: int,
                 axes: Iterable[Axis], chunk_floors: Sequence[int],
                 bypass: Sequence[BypassItem], read_rate: float, write_rate: float | None):
        self.network, self.capacity_bits, self.k_unroll = network, capacity_bits, k_unroll
        self.axes = tuple(axes)
        self.items = block_items(network) if BLOCK_FLOORS and read_rate and \
            write_rate is not None and len(network.layers) > MIN_LAYERS else ()
        self._rates = (read_rate, write_rate or 0.0)
        self._chunk = tuple(chunk_floors)
        # (a bypass item's traffic: its layer's weight reads and its tensor's DRAM)
        self._overlap = {it: tuple(b for b in bypass if b.layer in it.chain or b.tensor in (
            it.tensor, *(network.layers[at].name for at in it.chain))) for it in self.items}
        self._by_reader: dict[int, list[BlockItem]] = {}
        for it in self.items:
            self._by_reader.setdefault(it.reader, []).append(it)
        self._memo: dict[tuple, tuple[float, float]] = {}  # by shape
        self._shapes: dict[tuple, tuple[_Search, tuple, dict[str, str] | None]] = {}
        self._canon: dict[tuple, _Search] = {}  # the first search of each shape
        self._values: dict[tuple, tuple[tuple[float, float], ...]] = {}  # by block
        self._spans: dict[tuple[BlockItem, int, int], tuple[tuple, frozenset[str]]] = {}
        self._by_span: dict[tuple, float] = {}
        self._intervals: dict[tuple[int, int], list] = {}
        self._signed: dict[tuple, float] = {}

    def _value(self, item: BlockItem, first: int, last: int, whole: frozenset[str],
               budget: int) -> float:
        """The block's floor (model units) in ``first..last`` with the tensors
        ``whole`` kept whole and ``budget`` bits beside them.

        It depends on the interval only through the chain's layers in it and whether
        it holds the reader, ``X``'s producer and ``X``'s last reader, and on
        ``whole`` only through the tensors those layers and ``X`` are (the
        placements of :meth:`_interval_value`): intervals alike in these share it."""
        span = self._spans.get((item, first, last))
        if span is None:
            net = self.network
            present = tuple(at for at in item.chain if first <= at <= last)
            span = self._spans[(item, first, last)] = (
                (item, present, item.reader <= last, item.producer >= first,
                 item.last_reader <= last),
                frozenset((item.tensor, *(src for at in present for src in net.layers[at].inputs),
                           *(net.layers[at].name for at in present))))
        key = (span[0], span[1] & whole, budget)
        got = self._by_span.get(key)
        if got is None:
            got = self._by_span[key] = self._interval_value(item, first, last, whole, budget)
        return got

    def _interval_value(self, item: BlockItem, first: int, last: int,
                        whole: frozenset[str], budget: int) -> float:
        """:meth:`_value`, computed."""
        net, r, w = self.network, *self._rates
        present = tuple(at for at in item.chain if first <= at <= last)
        inside = item.reader <= last
        made_inside = len(present) - (0 if inside and present[-1] == item.chain[-1] else 1)
        x = item.tensor
        x_where = WHOLE if x in whole else DRAM
        x_choice = x_where == DRAM and item.producer >= first and inside
        placed = {x: x_where}
        for at in present:
            for src in net.layers[at].inputs:
                if src not in placed:
                    placed[src] = WHOLE if src in whole else DRAM
        fixed = [net.layers[at].name for at in present[made_inside:]]
        for name in fixed:  # (read after the interval: whole, or written)
            placed[name] = WHOLE if name in whole else DRAM
        write = item.write_bits if item.last_reader <= last and not item.network_output \
            else 0
        x_dram = item.read_bits * r + write * w if x_choice else 0.0
        wheres = tuple(placed[src] for at in present for src in net.layers[at].inputs) + \
            tuple(placed[name] for name in fixed)
        key = (item, present, made_inside, wheres, x_choice, budget)
        got = self._values.get(key)
        if got is None:
            got = self._values[key] = tuple(
                self._least(item, present, made_inside, axis, placed, wheres, x_choice,
                            budget) for axis in self.axes)
        # The search sums bits of weight re-reads (DRAM reads) and of chain outputs
        # sent through DRAM (written and read): each costs at least the lesser rate.
        lo = min(r, w)
        return min(min(on_chip * lo, other * lo + x_dram) for on_chip, other in got)

    def _least(self, item: BlockItem, present: tuple[int, ...], made_inside: int,
               axis: Axis, placed: dict[str, str], wheres: tuple[str, ...], x_choice: bool,
               budget: int) -> tuple[float, float]:
        """:meth:`_Search.least`, once per shape (translated blocks share it)."""
        found = self._shapes.get((item, present, made_inside, axis))
        if found is None:
            search = _Search(self.network, item, present, made_inside, axis, self.k_unroll)
            shape = search.shape()
            canon = self._canon.setdefault(shape, search)
            names = _renaming(search, canon)
            if names is None:  # (names the shape does not tell apart: its own search)
                canon, names = search, None
            found = self._shapes[(item, present, made_inside, axis)] = (canon, shape, names)
        search, shape, names = found
        key = (shape, budget, wheres, x_choice)
        got = self._memo.get(key)
        if got is None:
            if names is not None:
                placed = {names[n]: where for n, where in placed.items()}
            got = self._memo[key] = search.least(budget, placed, x_choice)
        return got

    def _counted(self, item: BlockItem, first: int, last: int) -> float:
        """What the chunk floors and bypass items count of the block's traffic in
        ``first..last``."""
        r, w = self._rates
        total = sum(self._chunk[at] for at in item.chain if first <= at <= last) * r
        for b in self._overlap[item]:
            if first <= b.producer and b.reader <= last:
                write = b.write_bits if b.last_reader <= last and not b.network_output \
                    else 0
                total += min(b.on_chip_bits * r, b.read_bits * r + write * w)
        return total

    def _blocks(self, first: int, last: int) -> list[tuple[BlockItem, float, frozenset[str]]]:
        """The blocks with some weighted chain layer in the interval,
        each with what :meth:`between` gives it with the chunk floors and bypass items
        (the larger of the two) and the tensors whose being whole changes its floor."""
        got = self._intervals.get((first, last))
        if got is None:
            got = []
            for it in self.items:
                present = [at for at in it.chain if first <= at <= last]
                if not any(self.network.layers[at].has_weights for at in present):
                    continue
                free = self._value(it, first, last, frozenset(), self.capacity_bits)
                relevant = frozenset((it.tensor, *(
                    src for at in present for src in self.network.layers[at].inputs), *(
                    self.network.layers[at].name for at in present)))
                got.append((it, max(self._counted(it, first, last), free), relevant))
            self._intervals[(first, last)] = got
        return got

    def interval_key(self, first: int, last: int) -> tuple:
        """The interval's blocks relative to its first layer, with what :meth:`between`
        gives each: with equal shapes (:mod:`~stems_opt.formulation.shapes`) and equal
        keys, two intervals' columns of one canonical signature get one floor."""
        return tuple((tuple(at - first for at in it.chain), it.reader - first,
                      it.producer - first if it.producer >= first else -1,
                      it.last_reader <= last, it.network_output, base)
                     for it, base, _ in self._blocks(first, last))

    def between(self, first: int, last: int) -> float:
        """What every segment over layers ``first..last`` pays for its blocks beyond
        their chunk floors and bypass items, whatever it keeps whole."""
        if not self.items:
            return 0.0
        return sum(base - self._counted(it, first, last)
                   for it, base, _ in self._blocks(first, last))

    def signed(self, first: int, last: int, whole: frozenset[str], budget: int) -> float:
        """What a column of ``first..last`` keeping ``whole`` whole (``budget`` bits
        beside them) pays for its blocks beyond :meth:`between`."""
        if budget == self.capacity_bits:  # (nothing whole: the floors of between)
            return 0.0
        blocks = self._blocks(first, last)
        if not blocks:
            return 0.0
        key = (first, last, budget, whole & frozenset().union(*(r for _, _, r in blocks)))
        got = self._signed.get(key)
        if got is None:
            got = self._signed[key] = sum(
                max(0.0, self._value(it, first, last, whole & relevant, budget) - base)
                for it, base, relevant in blocks)
        return got
