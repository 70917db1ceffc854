"""Opening intervals lazily: which columns exist, and a bound on mappings through the
intervals not opened yet.

A part of :class:`stems_opt.formulation.columns.ColumnSolver` (``docs/solver.md``)."""

from __future__ import annotations

import math
import time

import numpy as np

from stems_opt.formulation import column_base
from stems_opt.formulation.bounds import read_bits
from stems_opt.formulation.column_base import (
    EXCLUDED_REFRESH_S,
    LOG,
    Column,
    Signature,
    collector_paused,
)
from stems_opt.formulation.operand_floors import layer_operand_floors_fj
from stems_opt.mapping import Order
from stems_opt.network import Axis
from stems_opt.stopping import SearchStoppedError, checkpoint


class IntervalsMixin:
    """Opening intervals lazily (a mixin of ``ColumnSolver``)."""

    def _lengths_within(self, budget: int) -> int:
        """The longest interval length whose intervals, with every shorter one, have at
        most ``budget`` columns (at least 1)."""
        L, total = len(self.net.layers), 0
        for length in range(1, self.max_len + 1):
            total += sum(self.signature_count(first, first + length - 1)
                         for first in range(L - length + 1))
            if total > budget:
                return max(1, length - 1)
        return self.max_len

    def _open_lengths(self, length: int) -> None:
        """Open every interval up to ``length`` layers (first layer first)."""
        L = len(self.net.layers)
        with collector_paused():
            for first in range(L):
                for last in range(first + self.open_len, min(L, first + length)):
                    # Building columns can take seconds on deep networks: it stops at the
                    # deadline, and under a solve's time limit early enough to leave the
                    # answer its time (the margin of ``Stop.active``).
                    self.stop.check()
                    checkpoint()
                    if (first, last) not in self._opened:
                        self._add_interval(first, last)
        self.open_len = length

    def open_interval(self, first: int, last: int) -> bool:
        """Build the columns of ``first..last`` if they are not built yet and the
        interval lies in the search space; ``True`` when it is open."""
        length = last - first + 1
        if length > self.max_len or first < 0 or last >= len(self.net.layers):
            return False
        if length > self.open_len and (first, last) not in self._opened:
            self._add_interval(first, last)
        return True

    def open_more(self) -> bool:
        """Open the next interval lengths (about half the column budget more);
        ``False`` when every interval is open already, or when the search is stopped
        meanwhile (what was opened stays; the rest is still bounded apart)."""
        if self.open_len >= self.max_len:
            return False
        L, total, length = len(self.net.layers), 0, self.open_len
        while length < self.max_len and (length == self.open_len
                                         or total <= column_base.COLUMN_BUDGET // 2):
            length += 1
            total += sum(self.signature_count(first, first + length - 1)
                         for first in range(L - length + 1))
        try:
            self._open_lengths(length)
        except SearchStoppedError:
            return False
        self.stats.update(columns=len(self.columns), open_len=self.open_len)
        LOG.debug("opened intervals up to %d layers: %d columns", length, len(self.columns))
        return True

    def _add_interval(self, first: int, last: int) -> None:
        """Build the columns of one interval at their cheap bounds."""
        # The full time batch in one tile has the least cheap bound of any frame of the
        # interval (its capacity-free bound is its cheapest choices: one time batch and
        # one tile add nothing), and one tile the fewest GB operand accesses.
        T = self.net.timesteps
        # (With loop nests the nest floor depends on the time batch: the coarse one
        # holds for every time batch.)
        base = min(self._cheapest((first, last, T, axis, 1, Order.TIME_OUTER), any_tb=True)
                   for axis in self.axes) + self.chunk_floors.cheap_between(first, last)
        # A signature whose whole tensors alone overflow the buffer has no segment
        # (every frame's budget is < 0, :meth:`tighten`): it is not built at all. (Filling
        # it exactly leaves a segment whose steps hold nothing else, e.g. pooling from
        # one whole tensor into another.)
        sizes, cap = self.ctx.whole_candidates, self.ctx.capacity_bits
        sigs = [sig for sig in self.signatures(first, last)
                if sum(sizes[X] for X, w in sig.whole_in if w)
                + sum(sizes[X] for X, w, _ in sig.outputs if w) <= cap]
        new = [Column(first, last, sig, base + self._extra(first, last, sig),
                      rank=len(self.columns) + i)
               for i, sig in enumerate(sigs)]
        shape = self.shapes.shape(first, last)
        blocks = self.chunk_floors.blocks.interval_key(first, last)
        for col in new:
            col.share_key = (shape.key, self.shapes.signature(shape, col.sig))
            self._siblings.setdefault(col.share_key, []).append(col)
            if blocks:  # (translated columns share it: block_floor.py)
                key = (col.share_key, blocks)
                extra = self._block_extras.get(key)
                if extra is None:
                    extra = self._block_extras[key] = self._block_extra(first, last, col.sig)
                col.bound += extra
            if col.bound == math.inf:  # (no segment fits)
                col.exact, col.value = True, None
        self.columns.extend(new)
        self._opened.add((first, last))
        self._reach = max(self._reach, last - first + 1)
        for col in new:
            if self._groups is not None:
                self._groups.setdefault((col.first, tuple(sorted(col.sig.whole_in))),
                                        []).append(col)
            self._by_key[(col.first, col.last, col.sig)] = col
            if self._by_interval is not None:
                self._by_interval.setdefault((col.first, col.last), []).append(col)
        self._table.clear()  # the master's labels are recomputed with the new columns
        self._excluded = None

    def _block_extra(self, first: int, last: int, sig: Signature) -> float:
        """What the signature's whole tensors add to the blocks' floors
        (:meth:`~stems_opt.formulation.block_floor.BlockFloors.signed`): they are held
        through the segment, beside every step."""
        blocks = self.chunk_floors.blocks
        if not blocks.items:
            return 0.0
        whole = frozenset(X for X, w in sig.whole_in if w) | \
            frozenset(X for X, w, _ in sig.outputs if w)
        budget = self.ctx.capacity_bits - sum(self.ctx.whole_candidates[X] for X in whole)
        return blocks.signed(first, last, whole, budget)

    def _layer_floor(self) -> np.ndarray:
        """Prefix sums of a per-layer floor of every column's cheap bound: weights
        read once (and re-read as :mod:`~stems_opt.formulation.chunk_floor` forces; for
        energy the GB reads of the steps it forces, :mod:`~stems_opt.formulation.energy_floor`),
        streamed state read and written, network outputs written, the network input
        read (its least reading over the axes), for energy each layer's operand floor
        (:func:`~stems_opt.formulation.operand_floors.layer_operand_floors_fj`), in
        model units."""
        from stems_opt.network import StatePersistence

        net, r0, r1 = self.net, self.rates[0], self.rates[1]
        streaming = net.state_persistence is StatePersistence.STREAMING
        floor = [0]
        # Energy: each layer's least operand energy below DRAM too (every frame pays it).
        operand = layer_operand_floors_fj(net, tuple(self.axes), self.problem.hardware) \
            if self.energy else (0,) * len(net.layers)
        for lay in net.layers:
            reads = lay.weight_size_bits if lay.has_weights else 0
            writes = net.tensor_size_bits(lay.name) if lay.name in self.ctx.outputs else 0
            if lay.stateful and streaming:
                reads += lay.state_size_bits
                writes += lay.state_size_bits
            for src in dict.fromkeys(lay.inputs):
                if self.producer[src] < 0 and src not in self.ctx.whole_candidates:
                    reads += min(read_bits(net, src, lay.name, a) for a in (Axis.OY, Axis.OX))
            floor.append(floor[-1] + reads * r0 + writes * r1
                         + self.chunk_floors.cheap_per_layer[len(floor) - 1]
                         + self.ctx.energy_weight * operand[len(floor) - 1])
        return np.array(floor, dtype=np.float64)

    def chain_floor(self) -> float:
        """A lower bound on every mapping (model units) before any column is priced:
        the per-layer floors of :meth:`_layer_floor` over the whole network (every
        column's cheap bound is at least its layers' floors, so every path is)."""
        if self._floor is None:
            self._floor = self._layer_floor()
        return float(self._floor[-1])

    def traffic_floor(self, traffic_bits: float) -> float:
        """A lower bound on every mapping (model units) from ``traffic_bits``, a proven
        lower bound on every mapping's DRAM traffic in this search space: its DRAM
        bits at the cheaper DRAM rate plus each layer's operand floor below DRAM
        (the two parts of a mapping's memory energy, each bounded apart), or
        :meth:`chain_floor` where that is more. Traffic: ``traffic_bits`` itself."""
        if not self.energy:
            return max(self.chain_floor(), float(traffic_bits))
        operand = layer_operand_floors_fj(self.net, tuple(self.axes), self.problem.hardware)
        return max(self.chain_floor(), float(traffic_bits) * min(self.rates[0], self.rates[1])
                   + self.ctx.energy_weight * float(sum(operand)))

    def excluded_bound(self, fresh: bool = False) -> float:
        """A lower bound on every mapping with a segment over an interval not opened
        (``inf`` when every interval is open).

        Opened intervals count at their columns' least price, the others at
        the per-layer floor of :meth:`_layer_floor`; the bound is the least
        shortest path through one interval longer than :attr:`open_len`.
        Prices only rise, so a value computed earlier stays valid; it is
        recomputed when ``fresh`` or older than ``EXCLUDED_REFRESH_S``.
        """
        if self.open_len >= self.max_len:
            return math.inf
        now = time.perf_counter()
        if self._excluded is not None and not fresh and \
                now - self._excluded[1] < EXCLUDED_REFRESH_S:
            return self._excluded[0]
        self.chain_floor()
        A, L = self._floor, len(self.net.layers)
        least: dict[tuple[int, int], float] = {}
        for c in self.columns:
            p = math.inf if c.exact and c.value is None else c.price
            key = (c.first, c.last)
            if p < least.get(key, math.inf):
                least[key] = p
        ending: dict[int, list[tuple[int, float]]] = {}
        starting: dict[int, list[tuple[int, float]]] = {}
        for (first, last), p in least.items():
            ending.setdefault(last + 1, []).append((first, p))
            starting.setdefault(first, []).append((last + 1, p))
        lo_len, hi_len = self.open_len + 1, self.max_len
        pre = np.full(L + 1, np.inf)
        pre[0] = 0.0
        for k in range(1, L + 1):
            best = min((pre[f] + p for f, p in ending.get(k, ())), default=math.inf)
            lo, hi = max(0, k - hi_len), k - lo_len
            if hi >= lo:
                best = min(best, float((pre[lo:hi + 1] - A[lo:hi + 1]).min() + A[k]))
            pre[k] = best
        suf = np.full(L + 1, np.inf)
        suf[L] = 0.0
        for k in range(L - 1, -1, -1):
            best = min((suf[e] + p for e, p in starting.get(k, ())), default=math.inf)
            lo, hi = k + lo_len, min(L, k + hi_len)
            if hi >= lo:
                best = min(best, float((suf[lo:hi + 1] + A[lo:hi + 1]).min() - A[k]))
            suf[k] = best
        through = math.inf
        for f in range(L):
            lo, hi = f + lo_len, min(L, f + hi_len)
            if hi >= lo:
                through = min(through, float(pre[f] - A[f] + (A[lo:hi + 1] + suf[lo:hi + 1]).min()))
        self._excluded = (through, now)
        return through
