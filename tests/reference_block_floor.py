"""The search of a block's floor as it was computed before its per-room costs became
arrays and its searches were shared by translated blocks, kept as the oracle of
:class:`stems_opt.formulation.block_floor._Search` (``tests/test_block_floor_speed.py``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from stems_opt.cost.traffic import min_read_bits
from stems_opt.formulation import block_floor
from stems_opt.formulation.block_floor import CHIP, DRAM, WHOLE, BlockItem, _x_rows
from stems_opt.formulation.step_floor import (
    least_window_rows,
    shared_rows,
    smallest_chunk_bits,
)
from stems_opt.network import Axis, Network, divisors


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
    window: tuple[int, ...]
    new: tuple[int, ...]
    x_rows: tuple[int, ...]


@dataclass
class _Search:
    """The least cost of one block's present layers in one interval along one axis."""

    network: Network
    item: BlockItem
    present: tuple[int, ...]  # the chain's layers in the interval
    made_inside: int  # how many of their outputs (the first ones) are read in it
    axis: Axis
    k_unroll: int
    rows: dict[int, _Rows] = dataclasses.field(default_factory=dict)
    frontiers: dict[tuple, list[list[tuple[int, int]]]] = dataclasses.field(
        default_factory=dict)
    tolerances: dict[int, tuple[int, int]] = dataclasses.field(default_factory=dict)
    least_costs: dict[tuple, list[float]] = dataclasses.field(default_factory=dict)

    def _rows(self, at: int) -> _Rows:
        got = self.rows.get(at)
        if got is None:
            net, lay, axis = self.network, self.network.layers[at], self.axis
            span = range(lay.extent(axis) + 1)
            window = tuple(least_window_rows(lay, axis, r) if r else 0 for r in span)
            shared = shared_rows(lay, axis)
            got = self.rows[at] = _Rows(
                lay.name, lay.output_row_bits(axis), lay.state_row_bits(axis),
                tuple((src, net.tensor_row_bits(src, axis)) for src in dict.fromkeys(lay.inputs)),
                net.tensor_row_bits(self.item.tensor, axis), window,
                tuple(max(0, w - shared) for w in window),
                tuple(_x_rows(net, self.item.chain, at, self.item.reader, axis, r) if r else 0
                      for r in span))
        return got

    def held(self, at: int, tile: int, sub: int, tb: int, placed: dict[str, str]) -> int:
        """Least bits layer ``at`` holds at its step of ``sub`` rows in a tile of
        ``tile`` rows beside its weights (``placed``: tensor -> where it is)."""
        rows, x = self._rows(at), self.item.tensor
        where = placed.get(rows.name, DRAM)
        out = tile if where == CHIP else 0 if where == WHOLE else sub
        bits = out * rows.output * tb + sub * rows.state
        x_rows = rows.x_rows[tile] if placed.get(x) == CHIP else 0
        for src, row in rows.inputs:
            where = placed.get(src, DRAM)
            n = rows.window[tile] if where == CHIP else 0 if where == WHOLE else rows.new[sub]
            if src == x:
                n, x_rows = max(n, x_rows), 0
            bits += n * row * tb
        return bits + x_rows * rows.x_row * tb

    # (the tile tolerance did not change: the oracle checks the searches built on it)
    tolerance = block_floor._Search.tolerance

    def costs(self, at: int, tb: int, room: int, placed: dict[str, str], tiles: int
              ) -> list[float]:
        """Per tile count ``t`` of the reference (index ``t - 1``, ``t`` up to
        ``tiles``), the least extra reads (bits) of layer ``at``'s weights, not
        resident, with ``room`` bits for its steps and its own tile count within
        :meth:`tolerance` of ``t``; ``inf`` where no choice fits."""
        rows, x = self._rows(at), self.item.tensor
        key = (at, tb, placed.get(rows.name, DRAM), placed.get(x, DRAM),
               tuple(placed.get(src, DRAM) for src, _ in rows.inputs))
        got = self.least_costs.get((key, room, tiles))
        if got is not None:
            return got
        by_tiles = self.frontiers.get(key)
        if by_tiles is None:
            by_tiles = self.frontiers[key] = self._frontiers(at, tb, placed)
        least = []
        for frontier in by_tiles:  # (per own tile count: cost up, need down)
            least.append(next((cost for cost, need in frontier if need <= room), math.inf))
        fewer, more = self.tolerance(at)
        got = self.least_costs[(key, room, tiles)] = [
            min(least[max(0, t - 1 - fewer):max(0, min(len(least), t + more))],
                default=math.inf) for t in range(1, tiles + 1)]
        return got

    def _frontiers(self, at: int, tb: int, placed: dict[str, str]
                   ) -> list[list[tuple[int, int]]]:
        """Per tile count ``a`` (index ``a - 1``), every (extra reads, bits held) of
        layer ``at``'s choices that no other beats in both: whole weights (read
        ``S a`` times, whatever its sub-tiles: the finest holds the least) or chunked
        in ``m`` sub-tiles (``S a m`` times)."""
        lay = self.network.layers[at]
        w, extent = lay.weight_size_bits, lay.extent(self.axis)
        S = self.network.timesteps // tb
        chunk = smallest_chunk_bits(lay, self.k_unroll)
        out = []
        for a in range(1, extent + 1):
            tile = -(-extent // a)
            choices = [((S * a - 1) * w, w + self.held(at, tile, 1, tb, placed))]
            if chunk is not None:
                choices.extend(((S * a * m - 1) * w,
                                chunk + self.held(at, tile, -(-tile // m), tb, placed))
                               for m in range(1, tile + 1))
            frontier: list[tuple[int, int]] = []
            for cost, need in sorted(choices):
                if not frontier or need < frontier[-1][1]:
                    frontier.append((cost, need))
            out.append(frontier)
        return out

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

        def over(where: str) -> float:
            best = math.inf
            for tb in divisors(net.timesteps):
                for mask in range(1 << len(weighted)):
                    best = min(best, self._resident_set(
                        weighted, mask, tb, room, {**placed, x: where}, made, moved_bits,
                        best))
            return best

        return over(CHIP) if x_choice else math.inf, over(placed[x])

    def _resident_set(self, weighted: list[int], mask: int, tb: int, room: int,
                      placed: dict[str, str], made: list[str], moved_bits: list[int],
                      best: float) -> float:
        """:meth:`least` for one time batch and resident set (``best``: the least so
        far, a search at or above it stops)."""
        net = self.network
        resident = [at for i, at in enumerate(weighted) if mask >> i & 1]
        room -= sum(net.layers[at].weight_size_bits for at in resident)
        if room < 0:
            return math.inf
        for places in range(1 << len(made)):
            moved = sum(b for i, b in enumerate(moved_bits) if not places >> i & 1)
            if moved >= best:
                continue
            here = {**placed, **{n: CHIP if places >> i & 1 else DRAM
                                 for i, n in enumerate(made)}}
            if any(self.held(at, 1, 1, tb, here) > room for at in resident):
                continue  # (a resident layer's finest step holds the least)
            tiles = net.layers[self.present[-1]].extent(self.axis)
            totals = [float(moved)] * tiles
            for at in weighted:
                if at not in resident:
                    totals = [t + c for t, c in zip(
                        totals, self.costs(at, tb, room, here, tiles), strict=True)]
            best = min(best, *totals)
        return best
