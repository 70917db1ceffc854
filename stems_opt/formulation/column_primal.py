"""Mappings before the proof: segments scored directly or repaired, the dive, named schedules
as seeds, and the incumbent.

A part of :class:`stems_opt.formulation.columns.ColumnSolver` (``docs/solver.md``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from stems_opt.cost.geometry import SegmentGeometry
from stems_opt.cost.traffic import SegmentContext, mapping_contexts
from stems_opt.formulation.bounds import (
    frames_excess_bounds,
    max_chunks,
)
from stems_opt.formulation.column_base import (
    DIVE_ASK_S,
    LOG,
    PRIMAL_FRAMES,
    REPAIR_TRIES,
    Column,
    MasterStoppedError,
    Signature,
    on_ladder,
)
from stems_opt.formulation.data import FrameKey
from stems_opt.formulation.neighbourhood import first_fit
from stems_opt.formulation.primal import repair, segment_value
from stems_opt.formulation.shapes import IntervalShape, ShapeIndex
from stems_opt.mapping import (
    RESIDENT,
    Halo,
    Mapping,
    Order,
    Placement,
    Segment,
    StateMode,
    WeightChoice,
)
from stems_opt.network import Axis, Network
from stems_opt.stopping import SearchStoppedError

ALL_REPAIRED = ("all",)
"""Marks (in ``Column.repaired``) a column given :meth:`PrimalMixin.repair_all`."""
REPAIR_ALL_S = 0.12
"""Seconds :meth:`PrimalMixin.repair_all` may take per column in the dive."""
THOROUGH_LAYERS = 4
"""Columns of up to this many layers get :meth:`PrimalMixin.repair_all` in
:meth:`PrimalMixin.thorough_dive`."""


def fit_counts(net: Network, first: int, last: int, axis: Axis, tiles: int) -> bool:
    """Whether :meth:`PrimalMixin.long_fit` tries ``tiles`` tiles along ``axis`` for the
    layers ``first..last``: on the ladder (:func:`on_ladder`), or dividing the output
    extent of one of them (every tile of that layer then has as many rows: SEW-ResNet-152's
    optimum at 256 KB runs stage 1 in 28 tiles, two of its 56 rows each)."""
    return on_ladder(tiles) or any(lay.extent(axis) % tiles == 0
                                   for lay in net.layers[first:last + 1])


class PrimalMixin:
    """Mappings before the proof (a mixin of ``ColumnSolver``)."""

    def _cheapest_segment(self, col: Column, spec: FrameKey, fine: bool = True,
                          chunked: bool = False, geo: SegmentGeometry | None = None
                          ) -> tuple[Segment, SegmentContext]:
        """The frame with every decision at its cheapest choice, and its context
        under ``col``'s signature.

        ``fine`` splits each layer into the most sub-tiles (least transient
        buffer); otherwise one sub-tile (fewest GB operand accesses).
        ``chunked`` streams weights loaded once in the most chunks (least
        transient buffer) instead of whole."""
        first, last, tb, axis, n, order = spec
        net = self.net
        names = tuple(lay.name for lay in net.layers[first:last + 1])
        inside = set(names)
        _, written, _, whole = self._sig_parts(col)
        whole_in = {X for X, w in col.sig.whole_in if w}
        T = net.timesteps
        S = T // tb
        if geo is None:
            geo = SegmentGeometry(net, Segment(names, tb, n, axis, order))
        subs, weights, states, acts, ins, halos = {}, {}, {}, {}, {}, {}
        k_unroll = self.ctx.k_unroll
        for lay in net.layers[first:last + 1]:
            name = lay.name
            rows = geo.tile_rows(name)
            m = min(r for r in rows if r > 0) if fine else 1
            if lay.has_weights:
                runs = S * geo.active_tiles(name)
                if runs > 1:
                    weights[name] = RESIDENT
                elif not chunked:
                    weights[name] = WeightChoice()
                else:
                    chunks = max_chunks(lay.k, k_unroll)
                    weights[name] = WeightChoice(chunks=chunks)
                    if chunks > 1:
                        m = 1  # chunked weights are re-read per sub-tile
            if lay.stateful:
                states[name] = StateMode.SPILLED if S == 1 else (
                    StateMode.TILE_RESIDENT if order is Order.SPACE_OUTER else StateMode.RESIDENT)
            subs[name] = m
            if any(c in inside for c in net.consumers(name)):
                acts[name] = Placement.ON_CHIP  # (a tensor kept whole is read on chip too)
            for src in lay.inputs:
                if src in inside:
                    continue
                if src in whole_in:
                    ins[src] = Placement.ON_CHIP
                else:
                    ins[src] = Placement.DRAM
                    halos[src] = Halo.KEEP
        seg = Segment(names, tb, n, axis, order, sub_tiles=subs, weights=weights,
                      states=states, activations=acts, inputs=ins, halos=halos)
        return seg, SegmentContext(whole, written)

    def _direct(self, col: Column, spec: FrameKey, fine: bool = True, chunked: bool = False,
                geo: SegmentGeometry | None = None) -> tuple[Segment, float] | None:
        """The frame with every decision at its cheapest choice
        (:meth:`_cheapest_segment`), and its cost, when it fits the buffer: its
        value is then usually the frame's bound."""
        seg, sctx = self._cheapest_segment(col, spec, fine, chunked, geo)
        value, peak = segment_value(self.net, seg, sctx, self.unit_rates, geo)
        if peak > self.ctx.capacity_bits:
            return None
        return seg, value

    def _one_tile(self, col: Column) -> bool:
        """Give ``col`` a segment of the largest time batch and the fewest tiles (1, 2,
        3, 4, 6, 8, ... along the first axis where some fit, as the layer-by-layer
        named schedules choose theirs) where the choices that hold the least fit
        (:func:`~stems_opt.formulation.neighbourhood.first_fit`); ``True`` when its
        found value improved."""
        for axis in self.axes:
            got = first_fit(self, col, axis)
            if got is not None:  # (one axis is enough for a first mapping)
                if col.upper is None or got[1] < col.upper:
                    col.upper, col.segment, col.frame, col.chosen = got[1], got[0], None, {}
                    return True
                return False
        return False

    def _sampled_bounds(self, col: Column) -> dict[FrameKey, float]:
        """Capacity-aware bounds (:meth:`tighten`'s) of a sample of ``col``'s frames:
        tile counts 1, 2, 3, 4, 6, 8, 12, ... and the largest, for ranking only
        (the column's bound needs every frame). Empty when the tensors kept
        whole fill the buffer."""
        if col.tight:
            return col.frame_bounds
        budget, written, _, whole = self._sig_parts(col)
        if budget <= 0:
            return {}
        out = {}
        for axis, specs in self._by_axis(self.specs[(col.first, col.last)]).items():
            if self.stop.expired():  # (ranking only: what is sampled so far will do)
                break
            top = max(s[4] for s in specs)
            sample = [s for s in specs if s[4] == top or on_ladder(s[4])]
            excess, _ = frames_excess_bounds(
                self.net, col.first, col.last, axis, [(s[2], s[5], s[4]) for s in sample],
                budget, written, whole, read_rate=self.rates[0], write_rate=self.rates[1],
                k_unroll=self.ctx.k_unroll)
            for spec, e in zip(sample, excess.tolist(), strict=True):
                out[spec] = self._cheapest(spec) + e
        return out

    @staticmethod
    def _by_axis(specs: list[FrameKey]) -> dict[Axis, list[FrameKey]]:
        """Frames grouped by axis (bounded together), in their order."""
        groups: dict[Axis, list[FrameKey]] = {}
        for spec in specs:
            groups.setdefault(spec[3], []).append(spec)
        return groups

    def repair_price(self, col: Column, frames: int = PRIMAL_FRAMES,
                     until: float | None = None) -> bool:
        """Give ``col`` a feasible segment by greedy repair
        (:func:`stems_opt.formulation.primal.repair`) of its ``frames`` lowest-bound
        frames not repaired before (among a sample of tile counts unless the
        column is tightened); ``True`` when its best value found improved.
        Only upper bounds come from here, never proofs. Past ``until`` (a
        ``time.perf_counter()`` value) no more frames are repaired, and a repair
        under way gives up."""
        if col.exact and col.value is None:
            return False

        def stopped() -> bool:
            return self.stop.expired() or (until is not None and time.perf_counter() >= until)

        extra = self._extra(col.first, col.last, col.sig)
        bounds = self._sampled_bounds(col)
        specs = sorted(bounds, key=lambda s: (bounds[s], s[4], self.net.timesteps // s[2],
                                              s[5].value, s[3].value))
        improved, tried, found = False, 0, 0
        failed: set[tuple] = set()
        for spec in specs:
            bound = bounds[spec] + extra
            if bound == math.inf or (col.upper is not None and bound >= col.upper):
                break
            if spec in col.repaired or spec[2:4] + spec[5:] in failed:
                continue
            if stopped():
                break
            col.repaired.add(spec)
            tried += 1
            seg, sctx = self._cheapest_segment(col, spec, fine=True)
            got = repair(self.net, seg, sctx, self.ctx.capacity_bits, self.unit_rates,
                         self.ctx.k_unroll, stopped=stopped)
            self.stats["frames_repaired"] += 1
            if got is not None and (col.upper is None or got[1] < col.upper):
                col.upper, col.segment, col.frame, col.chosen = got[1], got[0], None, {}
                self.touch(col)
                improved = True
            # Frames the greedy cannot fit do not count, up to a few; after a failure the
            # next try has another time batch, axis or order (their transients differ most).
            found += got is not None
            if got is None:
                failed.add(spec[2:4] + spec[5:])
            if found >= frames or tried >= REPAIR_TRIES * frames:
                break
        self.share_found(col)  # (also its repair marks: translates repair the same)
        return improved

    def repair_all(self, col: Column, until: float | None = None) -> bool:
        """Give ``col`` the best greedy segment (:func:`stems_opt.formulation.primal.repair`)
        over every frame whose capacity-aware bound is below the best value found,
        in bound order (the column is tightened first); ``True`` when its found value
        improved. The greedy repair takes milliseconds where a frame MIP takes tens
        of them to build alone, and on the right frame it usually finds the frame's
        local optimum, also on frames far down the bound order, which
        :meth:`repair_price`'s two frames of a sample never reach. Past ``until``
        (a ``time.perf_counter()`` value) no more frames are repaired. Only upper
        bounds come from here, never proofs."""
        if col.exact and col.value is None:
            return False
        t0 = time.perf_counter()
        try:
            self.tighten(col)
        except SearchStoppedError:
            return False
        if col.exact and col.value is None:
            return False
        extra = self._extra(col.first, col.last, col.sig)
        bounds = col.frame_bounds
        specs = sorted(bounds, key=lambda s: (bounds[s], s[4], self.net.timesteps // s[2],
                                              s[5].value, s[3].value))

        def stopped() -> bool:
            return self.stop.expired() or (until is not None and time.perf_counter() >= until)

        improved, cut = False, False
        for spec in specs:
            if bounds[spec] + extra >= (math.inf if col.upper is None else col.upper):
                break
            if spec in col.repaired:
                continue
            if stopped():
                cut = True
                break
            col.repaired.add(spec)
            seg, sctx = self._cheapest_segment(col, spec, fine=True)
            got = repair(self.net, seg, sctx, self.ctx.capacity_bits, self.unit_rates,
                         self.ctx.k_unroll, stopped=stopped)
            self.stats["frames_repaired"] += 1
            if got is not None and (col.upper is None or got[1] < col.upper):
                col.upper, col.segment, col.frame, col.chosen = got[1], got[0], None, {}
                improved = True
        if not cut:
            col.repaired.add(ALL_REPAIRED)
        if improved:
            self.touch(col)
        LOG.debug("every frame of %d..%d %s repaired: %s (bound %.0f) in %.2f s", col.first,
                  col.last, col.sig, col.upper, col.bound, time.perf_counter() - t0)
        return improved

    def share_found(self, col: Column) -> int:
        """Offer ``col``'s found segment to the columns of its shape key and canonical
        signature (:mod:`~stems_opt.formulation.shapes`); returns how many improved.

        The segment is renamed to each translate and scored by the cost model in
        that column's own context (as :meth:`take_shared` does for exact values);
        it replaces a translate's found segment only when it fits and scores less,
        so found values stay exact scores and never rise. SEW-ResNet-152's stage
        3 repeats one block 36 times: a segment repaired for one block serves
        all. The repair marks of ``col`` (frames repaired, every frame
        repaired) go to the translates too, moved to their positions: the
        greedy repair of a translate's frame would find the same segment."""
        key = col.share_key
        seg = None if key is None or col.upper is None else self._found_segment(col)
        if seg is None:
            return 0
        shift = col.first
        improved = 0
        better = col.upper < self._found_shared.get(key, math.inf)
        if better:
            self._found_shared[key] = col.upper
        src = self.shapes.shape(col.first, col.last)
        for sib in self._siblings.get(key, ()):
            if sib is col or (sib.exact and sib.value is None):
                continue
            if better and not sib.exact:
                improved += self._take_found(sib, seg, src)
            if sib.upper is not None and sib.upper <= col.upper:
                d = sib.first - shift
                sib.repaired |= {m if len(m) != 6 else (m[0] + d, m[1] + d, *m[2:])
                                 for m in col.repaired}
        self.stats["found_shared"] = self.stats.get("found_shared", 0) + improved
        return improved

    def _take_found(self, sib: Column, seg: Segment, src: IntervalShape) -> int:
        """Give ``sib`` the found segment ``seg`` of a translate of shape ``src``,
        renamed and scored in ``sib``'s context, when it fits and scores less than
        ``sib``'s own; 1 when it did, else 0."""
        moved = ShapeIndex.translate(seg, src, self.shapes.shape(sib.first, sib.last))
        return 0 if moved is None else int(self._offer_found(sib, moved))

    def score_in(self, col: Column, seg: Segment) -> tuple[float, int]:
        """``seg``'s value and peak in ``col``'s context: the signature's whole and
        written tensors, and those the segment places in DRAM for its own readers
        (written too, as the mapping's contexts say)."""
        _, written, _, whole = self._sig_parts(col)
        dram = {X for X, p in seg.activations.items() if p is Placement.DRAM}
        return segment_value(self.net, seg, SegmentContext(whole, written | dram),
                             self.unit_rates)

    def _offer_found(self, col: Column, seg: Segment) -> bool:
        """Make ``seg`` ``col``'s found segment when it fits and scores less than the
        one ``col`` has; whether it did."""
        value, peak = self.score_in(col, seg)
        if peak > self.ctx.capacity_bits or (col.upper is not None and value >= col.upper):
            return False
        col.upper, col.segment, col.frame, col.chosen = value, seg, None, {}
        self.touch(col)
        return True

    def seed(self, mapping: Mapping) -> int:
        """Offer ``mapping``'s segments to their columns as found segments (upper
        values); returns how many columns improved.

        A segment's column is its interval with the signature the mapping
        gives it. Inputs kept whole are read on chip (never worse, as in the
        frame options); a segment is then scored in its column's context and
        skipped if it overflows there, or if it does not cover a contiguous
        interval of the layer order.
        """
        net = self.net
        index = {lay.name: i for i, lay in enumerate(net.layers)}
        segs = mapping.segments
        where = {name: k for k, seg in enumerate(segs) for name in seg.layers}
        ctxs = mapping_contexts(net, mapping)
        improved = 0
        for k, (seg, sctx) in enumerate(zip(segs, ctxs, strict=True)):
            first, last = index[seg.layers[0]], index[seg.layers[-1]]
            if seg.layers != tuple(lay.name for lay in net.layers[first:last + 1]):
                continue
            outs = []
            for X in self.outputs(first, last):
                later = [where[c] for c in net.consumers(X) if where[c] > k]
                # Read from DRAM by a later segment: written there.
                outs.append((X, X in ctxs[k + 1].whole,
                             any(X not in ctxs[j].whole for j in later)))
            sig = Signature(tuple((X, X in sctx.whole) for X in self.crossing_in(first)),
                            tuple(outs))
            col = self.column_of(first, last, sig)
            if col is None or (col.exact and col.value is None):
                continue
            inputs = {src: Placement.ON_CHIP if src in sctx.whole else p
                      for src, p in seg.inputs.items()}
            if not self._offer_found(col, seg.replace(inputs=inputs)):
                continue
            improved += 1
            self.share_found(col)
        return improved

    def dive(self, until: float | None, until_none: float | None = None,
             until_improving: float | None = None) -> None:
        """Find mappings fast: the master over repaired columns (:meth:`repair_price`),
        the others at their bounds, until its answer uses repaired columns only
        or ``until`` (a ``time.perf_counter()`` value) passes; while no mapping
        is found, until ``until_none`` passes; while the mapping found improved
        in the last ``DIVE_ASK_S``, until ``until_improving`` passes.

        Each answer's columns without a segment are repaired, so the path moves
        to the columns whose greedy segments are cheapest; every column found
        also serves the exact search (an upper value to stop its pricing at).
        """
        found = [False, 0.0, math.inf]  # (a mapping found, when last asked, its value)

        def over(ask: bool = False) -> bool:
            if self.stop.expired():
                return True
            now = time.perf_counter()
            if until is None or now < until:
                return False
            # Past the share: go on while nothing is found, up to the second limit, or
            # while the mapping improves, up to the third (asking for the incumbent is a
            # pass over every column: a few times a second in the first pass below, once
            # per step after it).
            last = until_improving if found[0] else until_none
            if last is None or now >= last:
                return True
            # (with a mapping: whether it improved in the last DIVE_ASK_S, not since the
            # last step)
            if (ask and not found[0]) or now - found[1] >= DIVE_ASK_S:
                res = self.incumbent()
                value = math.inf if res is None else res[1]
                improved = value < found[2]
                found[0], found[1], found[2] = res is not None, now, value
                return found[0] and not improved
            return False

        # First one layer per segment, and one block per segment, with every tensor
        # through DRAM: the path below then has a complete alternative to every column
        # it tries (and the named schedules' segmentations are among them).
        index = {lay.name: i for i, lay in enumerate(self.net.layers)}
        blocks = {(index[b.layers[0]], index[b.layers[-1]]) for b in self.net.block_list}
        for first, last in sorted(blocks):
            self.open_interval(first, last)
        # One-layer columns first, each at the fewest tiles that fit (a few scorings):
        # with them alone the path has a mapping. Then each of these columns and the
        # blocks' is repaired greedily from its frames of least bound (better segments).
        plain = [c for c in self.columns if (c.first == c.last or (c.first, c.last) in blocks)
                 and not any(w for _, w in c.sig.whole_in)
                 and all(not w and cw for _, w, cw in c.sig.outputs)]
        for col in plain:
            if col.first == col.last and col.upper is None:
                if over():
                    return
                self.touch(col)
                if self._one_tile(col):
                    self.share_found(col)
        self.note_incumbent()
        for col in sorted(plain, key=lambda c: c.first == c.last):
            if not col.repaired:
                if over(ask=True):
                    return
                self.touch(col)
                self.repair_price(col)
        self.note_incumbent()
        if not self.plain_dive(over):
            return
        # One length at a time (a stop keeps them), within the dive's share only: past
        # it, the exact loop opens what it needs (open_more), far fewer on deep networks.
        while self.open_len < self._budget_len and (until is None
                                                    or time.perf_counter() < until):
            try:
                self._open_lengths(self.open_len + 1)
            except SearchStoppedError:
                return  # (the intervals opened so far stay; the rest are bounded apart)
            self.stats.update(columns=len(self.columns), open_len=self.open_len)
        # (after the lengths are opened: a deep network's dive share goes to them first)
        if not self.thorough_dive(over):
            return
        while not over(ask=True):
            # (repairs stop at the third limit once a mapping is found, else at the second)
            found[0] = found[0] or self.incumbent() is not None
            if not self.dive_step(over, None if until is None else (until_improving or until)
                                  if found[0] else until_none):
                return

    def plain_dive(self, over: Callable[[], bool]) -> bool:
        """The dive over the opened columns with every tensor through DRAM at their
        boundaries only: a shortest path over boundaries (found segments at their
        value, columns not repaired yet at their bound), repairing the columns it
        picks without a segment, until it picks found segments only. ``False``
        when ``over()`` stopped it.

        These columns chain with no state at their boundaries, so the path is a
        few hundred relaxations, and their bounds are often their repaired value
        (their cheapest choices fit), so the path settles in a few rounds: on
        SEW-ResNet-18 at 128 KB it finds a mapping 1 % above the optimum in a
        second, where the dive over every signature needs 27 s.
        """
        plain = self._plain_columns()
        longest = max((c.last - c.first + 1 for c in plain), default=0)
        cap = 2
        while True:  # intervals of up to 2, 4, 8, ... layers: short ones settle first
            cap = min(2 * cap, longest)
            if not self._plain_path([c for c in plain if c.last - c.first < cap], over):
                return False
            if cap >= longest:
                return True

    def _plain_columns(self) -> list[Column]:
        """The opened columns with every tensor through DRAM at their boundaries."""
        return [c for c in self.columns if not any(w for _, w in c.sig.whole_in)
                and all(not w and cw for _, w, cw in c.sig.outputs)]

    def thorough_dive(self, over: Callable[[], bool]) -> bool:
        """:meth:`plain_dive` again, every frame of short columns repaired: a shortest
        path over the plain columns where those of up to ``THOROUGH_LAYERS`` layers
        not given :meth:`repair_all` yet are at their bounds, the others at their found
        values, giving :meth:`repair_all` to the short columns it picks, until it
        picks none. ``False`` when ``over()`` stopped it.

        The greedy repair of a column's frames of least bound (:meth:`repair_price`)
        misses the frames where the buffer binds in another way than the bound
        assumes: RED-LIF at 128 KB has its optimum from three columns
        (``conv10..lif12``, ``lif13``, ``lif14..lif16``), which this pass finds in a
        few seconds of repairs. Long columns are left out: their frames are many,
        their repairs slow, and their bounds far below their values."""
        plain = self._plain_columns()

        def price(c: Column) -> float | None:
            if ALL_REPAIRED in c.repaired or c.last - c.first >= THOROUGH_LAYERS:
                return c.upper
            return float(round(c.price))  # (optimistic until every frame is repaired)

        def pending(c: Column) -> bool:
            return ALL_REPAIRED not in c.repaired and c.last - c.first < THOROUGH_LAYERS

        def work(c: Column) -> None:
            self.repair_all(c, time.perf_counter() + REPAIR_ALL_S)
            c.repaired.add(ALL_REPAIRED)  # (also when cut short: once per column)
            self.share_found(c)

        done = self._plain_path(plain, over, price, pending, work)
        LOG.debug("thorough dive: %s", None if self.incumbent() is None
                  else self.incumbent()[1])
        return done

    def long_dive(self, over: Callable[[], bool]) -> bool:
        """:meth:`plain_dive` over every opened plain column, long ones included, each
        column it picks given :meth:`long_fit` once per shape key and canonical
        signature (translates take the segment through :meth:`share_found`): a
        shortest path where the columns not fitted yet are at their bounds, the others
        at their found values, until it picks none. ``False`` when ``over()``
        stopped it (the columns fitted stay fitted: the next call goes on).

        The dive opens long intervals of a deep network within its share only, and
        the repairs of :meth:`plain_dive` take tens of milliseconds per long column;
        this pass runs once every interval is open, with fits of a few
        milliseconds (:meth:`long_fit`). SEW-ResNet-152 at 256 KB (traffic): stage 1 as a 13- and a
        7-layer segment in 28 tiles and stage 2 in 6-layer segments across two
        blocks, as its optimum has them."""
        if self._long_plain[0] != len(self.columns):  # (a scan of every column)
            self._long_plain = (len(self.columns), self._plain_columns())
        plain = self._long_plain[1]
        done = self._long_fitted

        def key(c: Column) -> tuple:
            return c.share_key if c.share_key is not None else (c.first, c.last, c.sig)

        def settled(c: Column) -> bool:
            return key(c) in done or (c.upper is not None and c.upper <= c.price)

        def price(c: Column) -> float | None:
            return c.upper if settled(c) else float(round(c.price))

        def work(c: Column) -> None:
            done.add(key(c))
            if self.long_fit(c):
                self.share_found(c)

        # (from the input on: the early layers' large tensors are where the most is won)
        finished = self._plain_path(plain, over, price, lambda c: not settled(c), work,
                                    forward=True)
        LOG.debug("long dive: %d fitted", len(done))
        return finished

    def long_fit(self, col: Column) -> bool:
        """Give ``col`` the best of its frames' cheapest choices (:meth:`_direct`) that
        fit, in the largest time batch, time outer, over the tile counts of
        :func:`fit_counts`; ``True`` when its found value improved.

        Nothing else is tried: where the cheapest choices fit, the value is usually
        the frame's bound, and a long column whose cheapest choices fit nowhere is
        rarely worth its greedy repair (a few times slower: on SEW-ResNet-152 at 256
        KB the same mapping, found in twice the time)."""
        T = self.net.timesteps
        best = None
        for spec in self.specs[(col.first, col.last)]:
            if spec[2] != T or spec[5] is not Order.TIME_OUTER or \
                    not fit_counts(self.net, col.first, col.last, spec[3], spec[4]):
                continue
            if self.stop.expired():
                return False
            got = self._direct(col, spec, not self.energy)
            if got is not None and (best is None or got[1] < best[1]):
                best = got
        if best is None or (col.upper is not None and best[1] >= col.upper):
            return False
        col.upper, col.segment, col.frame, col.chosen = best[1], best[0], None, {}
        self.touch(col)
        return True

    def _plain_path(self, plain: list[Column], over: Callable[[], bool],
                    price_of: Callable[[Column], float | None] | None = None,
                    pending_of: Callable[[Column], bool] | None = None,
                    work: Callable[[Column], None] | None = None,
                    forward: bool = False) -> bool:
        """:meth:`plain_dive` over the columns ``plain``; ``price_of``, ``pending_of``
        and ``work`` replace its prices (``None``: left out), the columns it works
        on and their work (:meth:`thorough_dive`); ``forward`` works on the path's
        columns from the network's input on (else from its output)."""
        L = len(self.net.layers)
        starts: dict[int, list[Column]] = {}
        for c in plain:
            starts.setdefault(c.first, []).append(c)
        while True:
            best: list[tuple[float, Column | None]] = [(math.inf, None)] * (L + 1)
            best[0] = (0.0, None)
            for k in range(L):
                if best[k][0] == math.inf:
                    continue
                for c in starts.get(k, ()):
                    if c.exact and c.value is None:
                        continue
                    if price_of is not None:
                        price = price_of(c)
                    else:
                        price = c.upper if c.upper is not None else \
                            None if c.repaired else float(round(c.price))
                    if price is not None and best[k][0] + price < best[c.last + 1][0]:
                        best[c.last + 1] = (best[k][0] + price, c)
            if best[L][1] is None:
                return True
            path, k = [], L
            while k > 0:
                c = best[k][1]
                assert c is not None
                path.append(c)
                k = c.first
            pending = [c for c in (path[::-1] if forward else path)
                       if (pending_of(c) if pending_of is not None else c.upper is None)]
            if not pending:
                self.note_incumbent()
                return True
            for col in pending:
                if over():
                    return False
                if not (pending_of(col) if pending_of is not None else col.upper is None):
                    continue  # (a translate's segment came to it meanwhile: share_found)
                self.touch(col)
                if work is not None:
                    work(col)
                    continue
                self.repair_price(col)
                if not col.repaired:  # nothing left to repair: keep it out of the path
                    col.repaired.add(())

    def dive_step(self, over: Callable[[], bool] | None = None,
                  until: float | None = None) -> bool:
        """One step of :meth:`dive`'s loop: the master over repaired columns, the others
        at their bounds, and a greedy repair of the columns it picks without a
        segment (until ``over()`` says so, or ``until`` passes, a ``time.perf_counter()``
        value); ``False`` when there is nothing to repair."""
        self.poll_seeds()
        res = self.master_path(primal=True)
        if res is None:
            return False
        self.note_incumbent()
        pending = [c for c in res[0] if c.upper is None]
        for col in pending:
            if col.upper is not None:
                continue  # (a translate's segment came to it meanwhile: share_found)
            self.touch(col)
            self.repair_price(col, until=until)
            if not col.repaired:  # nothing left to repair: keep it out of the dive
                col.repaired.add(())
            if over is not None and over():
                break
        return bool(pending)

    def poll_seeds(self) -> None:
        """Seed the mappings :attr:`seed_source` offers that were not seeded yet."""
        if self.seed_source is None:
            return
        for mapping in self.seed_source():
            if id(mapping) not in self._seeded:
                self._seeded.add(id(mapping))
                self._seed_keep.append(mapping)  # (keeps ids unique)
                self.seed(mapping)

    def note_incumbent(self) -> None:
        """Tell :attr:`on_incumbent` when the found segments make a better mapping."""
        if self.on_incumbent is None:
            return
        res = self.master_path(exact_only=True)
        if res is not None and res[1] < self.best_found:
            self.best_found = res[1]
            self.on_incumbent(res[1])

    def at_named(self) -> bool:
        """Whether the best mapping over the segments found (the seeds arrived so far
        included) is no better than the best mapping from elsewhere
        (:attr:`named_value`)."""
        named = None if self.named_value is None else self.named_value()
        if named is None:
            return False
        self.poll_seeds()
        found = self.incumbent()
        return found is not None and found[1] >= named * (1 - 1e-9)

    def incumbent(self) -> tuple[list[Column], float] | None:
        """The best mapping over the segments found so far and its value, or ``None``."""
        try:
            res = self.master(exact_only=True, time_limit_s=10.0) if self.master_mip \
                else self.master_path(exact_only=True)
        except MasterStoppedError:
            res = None
        return None if res is None else (res[0], res[1])
