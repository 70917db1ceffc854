"""Lower bounds of columns: the cheap bound of every column and the capacity-aware tightening
of the columns the master picks.

A part of :class:`stems_opt.formulation.columns.ColumnSolver` (``docs/solver.md``)."""

from __future__ import annotations

import math
import time

import numpy as np

from stems_opt.formulation.bounds import (
    NestExcess,
    frames_excess_bounds,
    read_bits,
    signatures_excess_bounds,
)
from stems_opt.formulation.column_base import (
    Column,
    Signature,
)
from stems_opt.formulation.data import (
    FrameKey,
    frame_latency_floor,
    spec_lower_bound,
    written_anyway,
)
from stems_opt.formulation.nest_floor import (
    frame_operand_floor,
    nest_forced_excess,
    nest_sub_tile_excess,
)
from stems_opt.formulation.operand_floors import operand_floor_fj
from stems_opt.network import Axis

#: Traffic and energy frame bounds by one decision per item across rows (item_cover.py);
#: off only to compare.
ITEM_COVER = True
#: With loop nests, frame bounds count the nest energy of the sub-tiles the buffer
#: forces (nest_floor.nest_forced_excess); off only to compare.
NEST_FORCED = True
#: Energy frame bounds (without loop nests) choose the weights' sub-tile count in the
#: item cover (subtile_cover.py); off only to compare.
SUBTILE_ENERGY = True
#: Energy frame bounds with loop nests choose the weights' sub-tile count in the item
#: cover, each count priced by its nest energy (subtile_cover.py); off only to compare.
SUBTILE_NESTS = True
#: Covered frames are raised least first by the bound the column takes from them (their
#: cheapest choices beside the excess), not by the excess alone; off only to compare.
FRAME_ORDER = True


class BoundsMixin:
    """Lower bounds of columns (a mixin of ``ColumnSolver``)."""

    def _cheapest(self, spec: FrameKey, any_tb: bool = False) -> float:
        """Cost of the frame's cheapest choices: DRAM traffic, and for energy the
        least operand energy below DRAM (it depends on the tile count and, with
        loop nests, the time batch; ``any_tb``: a bound for every time batch)."""
        tb = spec[2] if self.energy and self.problem.hardware.loop_nests and not any_tb \
            else None
        key = (spec[0], spec[1], spec[3],
               spec[4] if self.energy or self.latency_weight else 0, tb)
        got = self.cheapest.get(key)
        if got is None:
            r, w = self._cheapest_split(spec[0], spec[1], spec[3])
            got = r * self.rates[0] + w * self.rates[1]
            if self.energy and tb is None:  # (every tile count of the interval at once)
                got += self.ctx.energy_weight * operand_floor_fj(
                    self.net, spec[0], spec[1], spec[3], spec[4], self.problem.hardware)
            elif self.energy:  # (likewise, per time batch: nest_floor)
                got += self.ctx.energy_weight * frame_operand_floor(
                    self.net, spec[0], spec[1], spec[3], spec[4], self.problem.hardware, tb)
            if self.latency_weight:  # (it depends on the tile count, not the time batch)
                got += self.latency_weight * frame_latency_floor(self.ctx, spec)
            self.cheapest[key] = got
        return got

    def _cheap_layer_parts(self) -> list[tuple[int, int, int, int, tuple]]:
        """Per layer, what :func:`~stems_opt.formulation.data.cheapest_split` sums:
        reads and writes that do not depend on the interval, the output's size when
        it is written whenever read outside (0 otherwise), its last consumer, and
        ``(producer, bits along OY, bits along OX)`` of each input that is read from
        DRAM when made outside."""
        from stems_opt.network import StatePersistence

        net, ctx = self.net, self.ctx
        streaming = net.state_persistence is StatePersistence.STREAMING
        parts = []
        for lay in net.layers:
            reads = lay.weight_size_bits if lay.has_weights else 0
            writes = 0
            if lay.stateful and streaming:
                reads += lay.state_size_bits
                writes += lay.state_size_bits
            size = net.tensor_size_bits(lay.name)
            outside = 0
            if lay.name in ctx.outputs:
                writes += size
            elif lay.name not in ctx.whole_candidates:
                outside = size
            ins = tuple((self.producer[src], read_bits(net, src, lay.name, Axis.OY),
                         read_bits(net, src, lay.name, Axis.OX))
                        for src in dict.fromkeys(lay.inputs) if src not in ctx.whole_candidates)
            parts.append((reads, writes, outside, self.last_consumer.get(lay.name, -1), ins))
        return parts

    def _cheapest_split(self, first: int, last: int, axis: Axis) -> tuple[int, int]:
        """:func:`~stems_opt.formulation.data.cheapest_split` of the frames of
        ``first..last`` along ``axis``, from the per-layer parts (it is called for
        every interval opened; kept per interval and axis)."""
        memo = self.__dict__.setdefault("_cheapest_splits", {})
        got = memo.get((first, last, axis))
        if got is None:
            got = memo[(first, last, axis)] = self._cheapest_split_of(first, last, axis)
        return got

    def _cheapest_split_of(self, first: int, last: int, axis: Axis) -> tuple[int, int]:
        """:meth:`_cheapest_split`, computed."""
        along = 1 if axis is Axis.OY else 2
        reads = writes = 0
        for reads_j, writes_j, outside, lc, ins in self._layer_parts[first:last + 1]:
            reads += reads_j
            writes += writes_j
            if outside and lc > last:
                writes += outside
            for src in ins:
                if src[0] < first:
                    reads += src[along]
        return reads, writes

    def _spec_bound(self, spec: FrameKey) -> float:
        b = self.spec_bounds.get(spec)
        if b is None:
            b = self.rate * spec_lower_bound(self.ctx, spec)
            if self.latency_weight:
                b += self.latency_weight * frame_latency_floor(self.ctx, spec)
            self.spec_bounds[spec] = b
        return b

    def _extra(self, first: int, last: int, sig: Signature) -> float:
        """Cost the signature forces: DRAM reads of crossing tensors not kept whole
        (the union of each reader's windows), writes for later DRAM readers."""
        parts = self._extra_parts.get((first, last))
        if parts is None:
            inside = {lay.name for lay in self.net.layers[first:last + 1]}
            reads = {X: sum(min(read_bits(self.net, X, c, a) for a in (Axis.OY, Axis.OX))
                            for c in self.net.consumers(X) if c in inside)
                     for X in self.crossing_in(first)}
            writes = {X: 0 if X in self.ctx.outputs else self.net.tensor_size_bits(X)
                      for X in self.outputs(first, last)}
            parts = self._extra_parts[(first, last)] = (reads, writes)
        reads, writes = parts
        r = sum(reads[X] for X, whole in sig.whole_in if not whole)
        w = sum(writes[X] for X, _, cw in sig.outputs if cw)
        return r * self.rates[0] + w * self.rates[1]

    def _sig_parts(self, col: Column) -> tuple[int, frozenset[str], frozenset[str],
                                               frozenset[str]]:
        """Budget, tensors written anyway, own outputs kept whole, and every tensor
        kept whole in the GB during ``col``'s segment."""
        whole_in = {X for X, w in col.sig.whole_in if w}
        whole_out = {X for X, w, _ in col.sig.outputs if w}
        inside = {lay.name for lay in self.net.layers[col.first:col.last + 1]}
        written = {X for X, _, cw in col.sig.outputs if cw}
        for name in inside:
            written |= written_anyway(self.ctx, inside, name)
        budget = self.ctx.capacity_bits - sum(self.ctx.whole_candidates[X]
                                              for X in whole_in | whole_out)
        return budget, frozenset(written), frozenset(whole_out), frozenset(whole_in | whole_out)

    def interval_frame_bounds(self, first: int, last: int) -> dict[FrameKey, float]:
        """A bound on every frame of ``first..last`` under *any* signature (before
        the signature's own :meth:`_extra`), computed once per interval.

        It is :meth:`tighten`'s bound with the whole buffer as the budget,
        every tensor that may stay whole across the interval's boundaries
        counted as maybe whole (its cheap side holds the less of the tensor and
        its line buffer, no halo), and every output read later as written
        anyway: each is a relaxation of what a signature fixes.
        """
        got = self._interval_bounds.get((first, last))
        if got is not None:
            return got
        shape = self.shapes.shape(first, last)
        shared = self._shared_bounds.get(shape.key)
        if shared is not None:  # a translate's (its frames come in the same order)
            got = self._interval_bounds[(first, last)] = dict(zip(
                self.specs[(first, last)], shared, strict=True))
            return got
        inside = {lay.name for lay in self.net.layers[first:last + 1]}
        outs = self.outputs(first, last)
        written = set(outs)
        for name in inside:
            written |= written_anyway(self.ctx, inside, name)
        maybe = frozenset(self.crossing_in(first)) | frozenset(outs)
        got = {}
        for axis, specs in self._by_axis(self.specs[(first, last)]).items():
            self.stop.check()
            excess, _ = frames_excess_bounds(
                self.net, first, last, axis, [(s[2], s[5], s[4]) for s in specs],
                self.ctx.capacity_bits, frozenset(written), frozenset(), maybe,
                read_rate=self.rates[0], write_rate=self.rates[1], k_unroll=self.ctx.k_unroll,
                weight_use_rate=self._weight_use_rate(), item_cover=self.cover_in_search(),
                nest_excess=self._nest_excess(first, last, axis),
                subtile_cover=self._subtile_cover(), **self._frame_order(first, last, specs))
            floor = self.chunk_floors.between(first, last)  # (chunk_floor.py: any frame)
            for spec, e in zip(specs, excess.tolist(), strict=True):
                got[spec] = self._cheapest(spec) + max(e, floor)
        self._interval_bounds[(first, last)] = got
        self._shared_bounds[shape.key] = [got[spec] for spec in self.specs[(first, last)]]
        return got

    def _weight_use_rate(self) -> int:
        """Model units per weight bit the GB sends to the array, where the energy
        counts one read per sub-tile and timestep (no loop nests; 0 otherwise)."""
        return 0 if self.problem.hardware.loop_nests else int(self.rates[2])

    def _nest_excess(self, first: int, last: int, axis: Axis) -> NestExcess | None:
        """With loop nests and energy, the operand floor's rise with the sub-tiles the
        buffer forces (:func:`~stems_opt.formulation.nest_floor.nest_forced_excess`) of
        ``first..last`` along ``axis``, for the frame bounds (with ``by_m``, its rise at
        each sub-tile count, :func:`~stems_opt.formulation.nest_floor.nest_sub_tile_excess`,
        for the sub-tile choices); ``None`` otherwise."""
        hw = self.problem.hardware
        if not (self.energy and hw.loop_nests and NEST_FORCED):
            return None
        weight = self.ctx.energy_weight
        # (memoised here: the tables' own cache hashes the network on every call)
        memo = self.__dict__.setdefault("_nest_forced", {})

        def excess(position: int, tb: int, by_m: bool = False) -> np.ndarray:
            key = (first + position, last, axis, tb, by_m)  # (the layer's table: any first)
            got = memo.get(key)
            if got is None:
                of = nest_sub_tile_excess if by_m else nest_forced_excess
                got = memo[key] = weight * of(self.net, first, last, axis, hw, position, tb)
            return got

        return excess

    def _item_cover(self) -> bool:
        """Whether frame bounds take one decision per item across their rows
        (``item_cover.py``): for traffic and energy, with or without loop nests (the
        items' excesses are DRAM traffic and GB weight reads in model units; latency
        and EDP bounds are as before)."""
        from stems_opt.problem import Objective

        return ITEM_COVER and self.problem.objective in (Objective.TRAFFIC, Objective.ENERGY)

    def _subtile_cover(self) -> bool:
        """Whether covered frames choose their weights' sub-tile count
        (``subtile_cover.py``): for traffic; for energy without loop nests, where
        each count also pays its GB weight reads and replaces the one-more-sub-tile
        item (both holding the same buffers, they bounded a random energy frame above
        its optimum); and for energy with loop nests, where each count pays its rise of
        the layer's nest floor (``nest_floor.nest_sub_tile_excess``)."""
        from stems_opt.problem import Objective

        objective = self.problem.objective
        if objective is Objective.ENERGY:
            return SUBTILE_NESTS if self.problem.hardware.loop_nests else SUBTILE_ENERGY
        return objective is Objective.TRAFFIC

    def signature_count(self, first: int, last: int) -> int:
        """How many signatures (columns) the interval has."""
        return 2 ** len(self.crossing_in(first)) * 3 ** len(self.outputs(first, last))

    def raise_interval(self, first: int, last: int) -> bool:
        """Raise every column of ``first..last`` to the interval's signature-free
        bound (:meth:`interval_frame_bounds`); ``True`` when some bound rose."""
        if self._by_interval is None:
            self._by_interval = {}
            for c in self.columns:
                self._by_interval.setdefault((c.first, c.last), []).append(c)
        bounds = self.interval_frame_bounds(first, last)
        best = min(bounds.values(), default=math.inf)
        rose = False
        for col in self._by_interval.get((first, last), []):
            if col.exact or best == math.inf:
                continue
            new = best + self._extra(first, last, col.sig)
            if new > col.bound:
                col.bound = new
                self.touch(col)
                rose = True
        return rose

    def _relevant(self, first: int, last: int, written: frozenset[str],
                  whole: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
        """The part of ``written`` and ``whole`` that :func:`frames_excess_bounds` of
        ``first..last`` reads: tensors the interval makes or reads, and of those
        written, only the ones not kept whole (a whole tensor has no DRAM side in
        the frame). Signatures that differ elsewhere (a whole output also written
        for a later reader, a tensor passing through) share one bound, the same."""
        touched = self._touched_tensors.get((first, last))
        if touched is None:
            touched = frozenset(name for lay in self.net.layers[first:last + 1]
                                for name in (lay.name, *lay.inputs))
            self._touched_tensors[(first, last)] = touched
        return (written - whole) & touched, whole & touched

    def tighten(self, col: Column, cover: bool = False) -> bool:
        """Bound every frame of ``col`` with what the buffer forces; ``True`` when
        the column's bound rose. ``cover``: for traffic and energy, also one decision per item
        across each frame's rows (``item_cover.py``; the proof's tightening asks for
        it, the primal searches do not pay for it)."""
        cover = cover and self._item_cover()
        if col.tight and (not cover or col.covered):
            return False
        self.stop.check()
        budget, written, _, whole = self._sig_parts(col)
        if budget < 0:  # the tensors kept whole alone overflow the buffer
            col.tight = col.exact = True
            col.value = None
            return True
        extra = self._extra(col.first, col.last, col.sig)
        written, whole = self._relevant(col.first, col.last, written, whole)
        best = math.inf
        floor = self.chunk_floors.between(col.first, col.last)  # (chunk_floor.py: any frame)
        for axis, specs in self._by_axis(self.specs[(col.first, col.last)]).items():
            self.stop.check()  # the column stays at its cheap bound, still valid
            key = self._cap_key(col.first, col.last, axis, (budget, written, whole), cover)
            got = self.cap_bounds.get(key)
            if got is None:
                self._fill_cap_bounds(col.first, col.last, axis, specs, [
                    (budget, written, whole), *self._round_sigs.get((col.first, col.last), ())],
                    cover)
                got = self.cap_bounds[key]
            # (over arrays: SEW-ResNet-152's columns have about 100 frames each)
            bounds = self._frame_base(col.first, col.last, specs) + np.maximum(got[0], floor)
            if self.keep_frame_bounds:  # (what pricing reads; a column helper prices none)
                col.frame_bounds.update(zip(specs, bounds.tolist(), strict=True))
                col.frame_slack.update(zip(specs, got[1].tolist(), strict=True))
            best = min(best, float(bounds.min()))
        col.tight = True
        col.covered = col.covered or cover
        return self._raise_to(col, best, extra)

    @staticmethod
    def _raise_to(col: Column, best: float, extra: float) -> bool:
        """Raise ``col``'s bound to its least frame bound ``best`` plus ``extra`` (no
        frame fits its own transient buffers when ``best`` is infinite: the column
        has no segment); whether it rose."""
        if best == math.inf:
            col.exact, col.value = True, None
            return True
        old = col.bound
        col.bound = max(col.bound, best + extra)
        return col.bound > old

    def settle(self, col: Column) -> bool:
        """Before a covered column is priced: its frames raised by their programs
        themselves, least first as :meth:`tighten` does, not through the programs' LP
        relaxations (``subtile_cover.RELAXED_FIRST``), which leave the frames above the
        least at their relaxation. The pricing stops at the first frame whose bound
        reaches the best value found, so those frames are worth their programs there;
        a column is settled once (programs already solved are remembered). ``True``
        when the column's bound rose."""
        from stems_opt.formulation import subtile_cover

        settled = self.__dict__.setdefault("_settled", set())
        if not col.covered or col.exact or id(col) in settled or not (
                subtile_cover.RELAXED_FIRST and self._subtile_cover()):
            return False
        settled.add(id(col))
        key = self._tighten_key(col)
        if key is None:
            return False
        best, floor = math.inf, self.chunk_floors.between(col.first, col.last)
        for axis, specs in self._by_axis(self.specs[(col.first, col.last)]).items():
            self.stop.check()
            cap = (*self._cap_key(col.first, col.last, axis, key, True), "settled")
            got = self.cap_bounds.get(cap)
            if got is None:
                got = self.cap_bounds[cap] = tuple(a[0] for a in signatures_excess_bounds(
                    self.net, col.first, col.last, axis, [(s[2], s[5], s[4]) for s in specs],
                    [key], read_rate=self.rates[0], write_rate=self.rates[1],
                    k_unroll=self.ctx.k_unroll, weight_use_rate=self._weight_use_rate(),
                    item_cover=True, nest_excess=self._nest_excess(col.first, col.last, axis),
                    subtile_cover=True, relaxed_first=False,
                    **self._frame_order(col.first, col.last, specs)))
            for spec, excess in zip(specs, got[0].tolist(), strict=True):
                bound = max(col.frame_bounds[spec], self._cheapest(spec) + max(excess, floor))
                col.frame_bounds[spec] = bound
                best = min(best, bound)
        return self._raise_to(col, best, self._extra(col.first, col.last, col.sig))

    def cover_in_search(self) -> bool:
        """Whether the master's pending columns and the interval bounds are covered
        (``item_cover.py``): for traffic and energy on networks deeper than
        ``EAGER_LAYERS`` (SEW-ResNet-152's energy at 256 KB, 240 s: gap 7.6 % to 4.0 %), whose
        long intervals of repeated blocks each overflow at their own rows. Tie rounds
        keep the knapsack (covering them slowed SEW-ResNet-152's bound at 120 s: 128 KB
        gap 10.8 % against 8.1 %), and so do shallower networks (RED-LIF at 128 KB:
        proven in 36.5 s with the pending columns covered, 30.2 s without, load 4-4.5);
        ``tighten(col, cover=True)`` covers when asked (the tests)."""
        from stems_opt.formulation import column_base

        return self._item_cover() and len(self.net.layers) > column_base.EAGER_LAYERS

    def _tighten_key(self, col: Column) -> tuple[int, frozenset[str], frozenset[str]] | None:
        """The ``(budget, written, whole)`` :meth:`tighten` bounds ``col`` with (after
        :meth:`_relevant`), or ``None`` when its whole tensors alone overflow the buffer."""
        budget, written, _, whole = self._sig_parts(col)
        if budget < 0:
            return None
        return (budget, *self._relevant(col.first, col.last, written, whole))

    def _fill_cap_bounds(self, first: int, last: int, axis: Axis, specs: list,
                         sigs: list[tuple[int, frozenset[str], frozenset[str]]],
                         cover: bool = False) -> None:
        """Bound the frames ``specs`` of ``first..last`` along ``axis`` under each
        signature of ``sigs`` not bounded yet, in one call
        (:func:`~stems_opt.formulation.bounds.signatures_excess_bounds`)."""
        sigs = [s for s in dict.fromkeys(sigs)
                if self._cap_key(first, last, axis, s, cover) not in self.cap_bounds]
        if not sigs:
            return
        bound, slack = signatures_excess_bounds(
            self.net, first, last, axis, [(s[2], s[5], s[4]) for s in specs], sigs,
            read_rate=self.rates[0], write_rate=self.rates[1], k_unroll=self.ctx.k_unroll,
            weight_use_rate=self._weight_use_rate(), item_cover=cover,
            nest_excess=self._nest_excess(first, last, axis), subtile_cover=self._subtile_cover(),
            **self._frame_order(first, last, specs))
        for k, s in enumerate(sigs):
            self.cap_bounds[self._cap_key(first, last, axis, s, cover)] = (bound[k], slack[k])

    def _frame_order(self, first: int, last: int, specs: list) -> dict:
        """The order covered frames of ``first..last`` are raised in (``frame_base`` and
        ``excess_floor`` of :func:`~stems_opt.formulation.bounds.signatures_excess_bounds`):
        by the bound the column takes from each, its cheapest choices plus the larger of
        its excess and the interval's chunk floors (:meth:`tighten`), so that the frame
        the column's bound comes from is one the programs raised."""
        if not FRAME_ORDER or not specs:
            return {}
        return {"frame_base": self._frame_base(first, last, specs),
                "excess_floor": float(self.chunk_floors.between(first, last))}

    def _frame_base(self, first: int, last: int, specs: list) -> np.ndarray:
        """The cheapest choices (:meth:`_cheapest`) of the frames ``specs`` of
        ``first..last`` along one axis, in their order (kept per interval and axis)."""
        memo = self.__dict__.setdefault("_frame_bases", {})
        key = (first, last, specs[0][3], len(specs))
        got = memo.get(key)
        if got is None:
            got = memo[key] = np.array([self._cheapest(s) for s in specs], dtype=np.float64)
        return got

    def _cap_key(self, first: int, last: int, axis: Axis,
                 sig: tuple[int, frozenset[str], frozenset[str]], cover: bool = False) -> tuple:
        """The key of :attr:`cap_bounds` for ``first..last`` along ``axis`` under ``sig``
        (budget, written, whole): by the interval's shape and canonical tensor ids, so
        translated intervals share it (:mod:`~stems_opt.formulation.shapes`; their
        frames come in the same order)."""
        shape = self.shapes.shape(first, last)
        return (shape.key, axis, sig[0], self.shapes.tensors(shape, sig[1]),
                self.shapes.tensors(shape, sig[2]), cover)

    def _tighten_for(self, cols: list[Column], seconds: float) -> tuple[int, int]:
        """Tighten ``cols`` in order for at most about ``seconds`` (the master, the
        seeds and the deadline are looked at between rounds); how many were
        tightened and how many of them rose."""
        end, rose, tried = time.perf_counter() + seconds, 0, 0
        # Columns of one interval in the round share one call of the bound (the first
        # of them to miss computes the others' too).
        self._round_sigs = {}
        for col in cols:
            key = None if col.tight else self._tighten_key(col)
            if key is not None:
                self._round_sigs.setdefault((col.first, col.last), []).append(key)
        for col in cols:
            if time.perf_counter() > end:
                break
            tried += 1
            if self.tighten(col):
                rose += 1
            self.touch(col)
        self._round_sigs = {}
        return tried, rose
