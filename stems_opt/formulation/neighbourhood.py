r"""Large-neighbourhood search around the incumbent of the column solver.

The incumbent of :class:`~stems_opt.formulation.columns.ColumnSolver` is the
shortest path over the segments found so far (one per column, its upper
value), so every segment found anywhere joins a dynamic program over all
segmentations seen. This module finds better segments near that path long
before the exact loop proves anything. Its moves, in turn:

- **The thorough dive** (:meth:`ColumnSolver.thorough_dive`), while it has
  not ended: every frame of the short plain columns a shortest path picks,
  repaired greedily in bound order, up to a second per turn.
- **The long dive** (:meth:`ColumnSolver.long_dive`), once the thorough dive has
  ended, on a network whose long intervals were opened after the dive: the plain
  columns of every length a shortest path picks, fitted by their cheapest choices,
  up to a second per turn.
- **A greedy repair** (:meth:`ColumnSolver.repair_price`) of a column of the
  incumbent: its frames of least capacity-aware bound, repaired greedily.
- **A run of blocks merged**: two or more consecutive blocks of the network
  as one segment with every tensor crossing it through DRAM, in the largest
  and the smallest time batch at the fewest tiles where the choices that hold
  the least fit (:func:`best_fit`). The named schedules fuse within a block;
  these fuse across blocks.
- **A large neighbourhood**: one column of the incumbent (its interval and
  signature, so both boundary states stay the incumbent's) re-solved by the
  frame MIPs (short limits): the frame its segment uses first (its local
  optimum is at most that segment), then the frames around it (tile counts
  ``n +- 1, 2, 3``, ``2n``, ``n / 2``, the other order, axis and neighbouring
  time batches) and those of least bound, hill-climbing from the best. Once
  every column of the incumbent had its turn, the union of two consecutive
  ones (with the boundary states they have) is re-solved the same way.

Columns go by what they may still gain (found value less bound, times the
number of the incumbent's columns it stands for: its translates on the path,
which take what it finds), then by position; each neighbourhood is searched
once, for all its translates. The frame MIPs go through
:meth:`ColumnSolver._price_frame`, so the frames solved here count as tried
for the exact loop (no MIP is solved twice). A segment only ever replaces a
worse one of its column, so the incumbent never gets worse, and never worse
than a seed.

The search takes turns with the exact loop (:class:`Turns`): after a warm-up
that leaves fast proofs alone, it gets half of the time while its turns find
better mappings, less (down to a tenth) while they do not (a pass's turn that did not
end is a piece of one move, and does not count). Nothing is
random: the same input and the same work give the same mappings.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from stems_opt.cost.geometry import SegmentGeometry
from stems_opt.cost.traffic import SegmentContext
from stems_opt.formulation.bounds import max_chunks
from stems_opt.formulation.column_base import on_ladder
from stems_opt.formulation.data import FrameKey
from stems_opt.formulation.primal import repair, segment_value
from stems_opt.mapping import Halo, Order, Segment, StateMode, WeightChoice
from stems_opt.network import Axis
from stems_opt.stopping import SearchStoppedError

if TYPE_CHECKING:
    from stems_opt.formulation.columns import Column, ColumnSolver, Signature

LOG = logging.getLogger("stems_opt.neighbourhood")
FRAMES_PER_COLUMN = 6
"""Frame MIPs solved at most per neighbourhood."""
LOCAL_LIMIT_S = 0.5
"""Time limit of each frame MIP here (a frame left open keeps its bound; the exact
loop solves it again with its own, longer limits)."""
SEED_FRAMES = 2
"""Frames of least bound solved first in every neighbourhood."""
TILE_STEPS = (1, -1, 2, -2, 3, -3)
"""Tile-count moves around a frame, besides doubling and halving."""
WARMUP_SHARE = 0.15
"""Share of the search time (and at most ``WARMUP_S``) before the first move: a proof
that finishes early never meets the neighbourhood search."""
WARMUP_S = 2.0
SHARE = 0.5
"""Share of the time after the warm-up the neighbourhood search may take while its
moves pay."""
MIN_SHARE = 0.1
"""Its share once they stop paying."""
BOUND_ELSEWHERE_SHARE = 0.8
"""Its share while moves pay once the search's bound comes from elsewhere
(:meth:`Turns.favour_mapping`): what the exact loop raises is then below the answer's
bound, and the mapping is what is left to win. RED-LIF energy at 128 KB under a 10 s
limit, the least traffic proven beside it (floor 37,278.0 uJ, 2.7 % below the optimum):
38,404.0 uJ in 3 of 3 runs (gap 2.9 %) against 38,827.9 and 39,658.2 uJ (4.0 / 6.0 %)
with ``SHARE``."""
RECHECK_S = 1.0
"""Seconds between looks for a new incumbent once every neighbourhood was searched."""
DIVE_TURN_S = 0.5
"""Seconds a dive step (:meth:`ColumnSolver.dive_step`) may take as a turn."""
THOROUGH_TURN_S = 1.0
"""Seconds the thorough dive (:meth:`ColumnSolver.thorough_dive`) may take as a turn."""
LONG_TURN_S = 1.0
"""Seconds the long dive (:meth:`ColumnSolver.long_dive`) may take as a turn."""
POLISH_SHARE = 0.05
"""Under a time limit, the share of it (up to :data:`POLISH_CAP_S`) the incumbent's
columns get, right after the dive, to beat it once (:meth:`Turns.polish`)."""
POLISH_CAP_S = 1.0
"""Most seconds :meth:`Turns.polish` takes, whatever the limit."""
NAMED_POLISH_SHARE = 0.3
"""The polish's share of the limit instead, while the incumbent is no better than the best
mapping from elsewhere (a named schedule, or a seed of the second process) when it starts:
beating that mapping is the first thing a short limit is for. SEW-ResNet-152 energy at 1
MB, 10 s, on a machine that ran these searches about half slower: TB-LBL's 14,362.1 uJ in
three of three runs with the short polish (its first move took 1.08 s and found nothing),
14,348.4 in two of two with this one (its second move, at 3.7 s). Where the search's own
mapping is already better, a longer polish took its time from the bound (SEW-ResNet-152
traffic at 256 KB: gap 15.2 % against 7.1 %) ..."""
NAMED_POLISH_CAP_S = 3.0
"""... and at most this many seconds."""


def polish_seconds(left_s: float, at_named: bool) -> float:
    """Seconds :meth:`Turns.polish` may take under a limit with ``left_s`` seconds left;
    ``at_named``: the incumbent is no better than the best mapping from elsewhere."""
    if at_named:
        return min(NAMED_POLISH_SHARE * left_s, NAMED_POLISH_CAP_S)
    return min(POLISH_SHARE * left_s, POLISH_CAP_S)


def fewest_tiles(cs: ColumnSolver, col: Column, axis: Axis, time_batch: int
                 ) -> tuple[FrameKey, SegmentGeometry] | None:
    """The frame of ``col`` along ``axis`` in ``time_batch`` with the fewest tiles on the
    ladder (:func:`on_ladder`) where the choices that hold the least fit
    (:func:`frugal_segment`), found by bisection (what they hold shrinks as tiles
    are added), and its geometry; ``None`` when they fit at no count."""
    specs = sorted((s for s in cs.specs[(col.first, col.last)] if s[3] is axis
                    and s[2] == time_batch and s[5] is Order.TIME_OUTER and on_ladder(s[4])),
                   key=lambda s: s[4])
    names = tuple(lay.name for lay in cs.net.layers[col.first:col.last + 1])
    geos: dict[FrameKey, SegmentGeometry] = {}

    def fits(spec: FrameKey) -> bool:
        geo = geos[spec] = SegmentGeometry(cs.net, Segment(names, spec[2], spec[4], axis,
                                                           spec[5]))
        seg, sctx = frugal_segment(cs, col, spec, geo)
        return segment_value(cs.net, seg, sctx, cs.unit_rates, geo)[1] <= cs.ctx.capacity_bits

    if not specs:
        return None
    if fits(specs[0]):  # (the common case: one tile)
        return specs[0], geos[specs[0]]
    if not fits(specs[-1]):
        return None
    lo, hi = 1, len(specs) - 1  # specs[hi] fits
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(specs[mid]):
            hi = mid
        else:
            lo = mid + 1
    return specs[hi], geos[specs[hi]]


def fit_segment(cs: ColumnSolver, col: Column, spec: FrameKey, geo: SegmentGeometry
                ) -> tuple[Segment, float] | None:
    """A segment of frame ``spec`` for ``col``: its cheapest choices when they fit
    (:meth:`ColumnSolver._direct`), else the frugal ones (which must fit) improved by
    the greedy repair's saving moves."""
    got = cs._direct(col, spec, not cs.energy, False, geo)
    if got is not None:
        return got
    seg, sctx = frugal_segment(cs, col, spec, geo)
    return repair(cs.net, seg, sctx, cs.ctx.capacity_bits, cs.unit_rates, cs.ctx.k_unroll,
                  geo, stopped=cs.stop.expired)


def first_fit(cs: ColumnSolver, col: Column, axis: Axis,
              time_batches: tuple[int, ...] | None = None) -> tuple[Segment, float] | None:
    """A segment for ``col`` along ``axis``: in the first of ``time_batches`` (default:
    every time batch, largest first) where the choices that hold the least fit at
    some tile count, at the fewest tiles (:func:`fewest_tiles`, :func:`fit_segment`);
    ``None`` when nothing fits so."""
    T = cs.net.timesteps
    tbs = time_batches or tuple(d for d in range(T, 0, -1) if T % d == 0)
    for tb in tbs:
        if cs.stop.expired():
            return None
        found = fewest_tiles(cs, col, axis, tb)
        if found is not None:
            return fit_segment(cs, col, *found)
    return None


def frugal_segment(cs: ColumnSolver, col: Column, spec: FrameKey,
                   geo: SegmentGeometry | None = None) -> tuple[Segment, SegmentContext]:
    """The segment of frame ``spec`` for ``col`` with the choices that hold the least in
    the buffer (finest sub-tiles, weights in the most chunks, state spilled, halos
    re-read, in-segment activations on chip), and its context."""
    seg, sctx = cs._cheapest_segment(col, spec, fine=True, chunked=True, geo=geo)
    weights = {name: WeightChoice(chunks=max_chunks(cs.net.layer(name).k, cs.ctx.k_unroll))
               for name in seg.weights}
    seg = seg.replace(weights=weights, states=dict.fromkeys(seg.states, StateMode.SPILLED),
                      halos=dict.fromkeys(seg.halos, Halo.REREAD))
    return seg, sctx


def block_runs(cs: ColumnSolver) -> list[tuple[int, int]]:
    """Intervals of two or more consecutive blocks of the network (as one segment:
    fused, as the named schedules' blocks are, but across blocks), fewest blocks
    first, within the longest segment allowed."""
    index = {lay.name: i for i, lay in enumerate(cs.net.layers)}
    blocks = [(index[b.layers[0]], index[b.layers[-1]]) for b in cs.net.block_list]
    runs = []
    for k in range(2, len(blocks) + 1):
        for i in range(len(blocks) - k + 1):
            first, last = blocks[i][0], blocks[i + k - 1][1]
            if last - first + 1 <= cs.max_len:
                runs.append((first, last))
    return runs


def ladder_fit(cs: ColumnSolver, col: Column, axis: Axis, time_batch: int
               ) -> tuple[Segment, float] | None:
    """The best of :func:`fit_segment`'s segments for ``col`` along ``axis`` in
    ``time_batch`` over the ladder's tile counts (:func:`on_ladder`) from the fewest
    where the frugal choices fit (:func:`fewest_tiles`) up.

    More tiles than the fewest that fit leave room for the choices that save
    traffic (activations on chip, weights resident, halos kept), so the value
    is far from monotone in the count: RED-LIF's first three blocks as one
    segment (384 KB, ``Tb = 1``, along OX) are worth 425 Mbit at the fewest
    tiles (16) and 157 Mbit at 96.
    """
    found = fewest_tiles(cs, col, axis, time_batch)
    if found is None:
        return None
    spec, geo = found
    best = fit_segment(cs, col, spec, geo)
    names = tuple(lay.name for lay in cs.net.layers[col.first:col.last + 1])
    larger = sorted(s for s in cs.specs[(col.first, col.last)] if s[3] is axis
                    and s[2] == time_batch and s[5] is spec[5] and on_ladder(s[4])
                    and s[4] > spec[4])
    for other in larger:
        if cs.stop.expired():
            break
        geo = SegmentGeometry(cs.net, Segment(names, other[2], other[4], axis, other[5]))
        got = fit_segment(cs, col, other, geo)
        if got is not None and (best is None or got[1] < best[1]):
            best = got
    return best


def best_fit(cs: ColumnSolver, col: Column) -> tuple[Segment, float] | None:
    """The best of :func:`ladder_fit`'s segments along each axis in the largest and
    in the smallest time batch."""
    T = cs.net.timesteps
    best = None
    for axis in cs.axes:
        for tb in dict.fromkeys((T, 1)):
            if cs.stop.expired():
                return best
            got = ladder_fit(cs, col, axis, tb)
            if got is not None and (best is None or got[1] < best[1]):
                best = got
    return best


def spec_of(col: Column) -> FrameKey | None:
    """The frame of ``col``'s found segment, or ``None`` when it has none."""
    if col.frame is not None:
        f = col.frame
        return (col.first, col.last, f.time_batch, f.axis, f.tiles, f.order)
    if col.segment is not None:
        s = col.segment
        return (col.first, col.last, s.time_batch, s.axis, s.tiles, s.order)
    return None


def neighbours(spec: FrameKey, timesteps: int) -> Iterator[FrameKey]:
    """Frames near ``spec``: other tile counts, the other order and axis, the
    neighbouring time batches (in this order; some may not exist)."""
    first, last, tb, axis, n, order = spec
    for step in TILE_STEPS:
        if n + step >= 1:
            yield (first, last, tb, axis, n + step, order)
    yield (first, last, tb, axis, 2 * n, order)
    if n > 1:
        yield (first, last, tb, axis, n // 2, order)
    other = Order.SPACE_OUTER if order is Order.TIME_OUTER else Order.TIME_OUTER
    yield (first, last, tb, axis, n, other)
    yield (first, last, tb, Axis.OX if axis is Axis.OY else Axis.OY, n, order)
    divisors = [d for d in range(1, timesteps + 1) if timesteps % d == 0]
    i = divisors.index(tb)
    for j in (i - 1, i + 1):
        if 0 <= j < len(divisors):
            yield (first, last, divisors[j], axis, n, order)


def improve_column(cs: ColumnSolver, col: Column, frames: int = FRAMES_PER_COLUMN) -> bool:
    """Search the frames of ``col`` (see the module docstring) with their local
    MIPs; ``True`` when its found value improved. Raises
    :class:`SearchStoppedError` when the search is stopped."""
    if col.exact:
        return False
    cs.tighten(col)
    if col.exact:
        return False
    before = math.inf if col.upper is None else col.upper
    extra = cs._extra(col.first, col.last, col.sig)
    specs = set(cs.specs[(col.first, col.last)])
    bounds = col.frame_bounds
    T = cs.net.timesteps

    def worth(spec: FrameKey) -> bool:
        best = math.inf if col.upper is None else col.upper
        return spec in specs and spec not in col.tried and bounds[spec] + extra < best

    ranked = sorted((s for s in specs if s not in col.tried),
                    key=lambda s: (bounds[s], s[4], T // s[2], s[5].value, s[3].value))
    centre = spec_of(col)
    # The frame of the found segment first: its local optimum is at most that segment.
    queue = [] if centre is None else [s for s in (centre, *neighbours(centre, T)) if worth(s)]
    queue += [s for s in ranked if worth(s) and s not in queue][:SEED_FRAMES]
    solved = 0
    try:
        while queue and solved < frames:
            spec = queue.pop(0)
            if not worth(spec):
                continue
            if cs.stop.expired():
                raise SearchStoppedError("neighbourhood search stopped")
            old = col.upper
            best = math.inf if old is None else old
            if not cs._price_frame(col, spec, best, extra, LOCAL_LIMIT_S):
                raise SearchStoppedError("neighbourhood search stopped")
            solved += 1
            if col.upper is not None and (old is None or col.upper < old):
                # Hill-climb: the neighbours of the better frame first.
                near = [s for s in neighbours(spec, T) if worth(s)]
                queue = near + [s for s in queue if s not in near]
    finally:
        cs.touch(col)  # (its found segment may have changed, even when stopped)
        cs.share_found(col)
    return col.upper is not None and col.upper < before


def merged_signature(cs: ColumnSolver, left: Column, right: Column) -> Signature:
    """The signature of ``left`` and ``right`` (consecutive) as one segment, with the
    boundary states they have: what crosses ``left``'s start as ``left`` has it, each
    output as the column making it says (a tensor of ``left`` read after ``right``:
    whole after the union when ``right`` receives it whole)."""
    outs_left = {X: (w, cw) for X, w, cw in left.sig.outputs}
    outs_right = {X: (w, cw) for X, w, cw in right.sig.outputs}
    whole_right = dict(right.sig.whole_in)
    outs = []
    for X in cs.outputs(left.first, right.last):
        if X in outs_right:
            w, cw = outs_right[X]
        else:
            w, cw = outs_left[X]
            w = w and whole_right.get(X, False)
        outs.append((X, w, cw))
    return type(left.sig)(left.sig.whole_in, tuple(outs))


class Turns:
    """Time accounting between the exact loop and the neighbourhood search.

    Parameters
    ----------
    cs
        The column solver.
    start, span_s
        When the search began (``time.perf_counter()``) and the time it may take
        (``None``: no limit, the warm-up is then ``WARMUP_S``).
    long_pass
        Whether the long dive has turns: where the long intervals were opened after
        the dive (a deep network), whose passes never saw them.
    """

    def __init__(self, cs: ColumnSolver, start: float, span_s: float | None,
                 long_pass: bool = False):
        self.cs = cs
        self.begin = start + (WARMUP_S if span_s is None
                              else min(WARMUP_S, WARMUP_SHARE * span_s))
        self.used_s = 0.0
        self.done: set[tuple] = set()  # neighbourhoods searched (_kind, or a union's key)
        self.exhausted = False  # no move left around the current incumbent
        self.moves = 0
        self.top_share = SHARE  # the share while moves pay
        self.share = SHARE
        self.turns = 0
        self.merges = block_runs(cs)  # runs of blocks still to merge
        self.repaired: set[tuple] = set()  # incumbent columns given a greedy repair
        self.repairs = True  # some may still be
        self.dives = True  # the master over found segments and bounds may pick new columns
        self.thorough = True  # the thorough dive may not have ended
        self.late = long_pass  # a deep network: long intervals opened after the dive
        self.passing = False  # the last turn was a pass's that did not end
        # The long dive may not have ended. (Not for energy with loop nests: each of its
        # scorings may solve nests from a cold table, and those proofs were not measured
        # with it.)
        self.long = long_pass and not (cs.energy and cs.problem.hardware.loop_nests)
        self.improved = 0
        self.value = math.inf  # the incumbent's value at the last look
        self.checked = 0.0  # when the incumbent was last looked at, once exhausted

    def favour_mapping(self) -> None:
        """The search's bound comes from elsewhere: moves that pay get
        :data:`BOUND_ELSEWHERE_SHARE` of the time from now on."""
        self.top_share = BOUND_ELSEWHERE_SHARE
        self.share = max(self.share, BOUND_ELSEWHERE_SHARE)

    def due(self) -> bool:
        """Whether the neighbourhood search has a turn now."""
        now = time.perf_counter()
        if now < self.begin or self.used_s > self.share / (1 - self.share) * (
                now - self.begin - self.used_s):
            return False
        if self.exhausted and now - self.checked >= RECHECK_S:
            # The exact loop or a seed may have moved the incumbent: new neighbourhoods.
            self.checked = now
            found = self.cs.incumbent()
            self.exhausted = found is not None and found[1] >= self.value
            self.repairs = self.repairs or not self.exhausted
            self.dives = self.dives or not self.exhausted
        return not self.exhausted

    def turn(self) -> None:
        """One move (one neighbourhood) when one is left; marks the search exhausted
        otherwise. Raises :class:`SearchStoppedError` when the search is stopped."""
        t0 = time.perf_counter()
        try:
            self.turns += 1
            found = self.cs.incumbent()
            if found is not None:
                # Moves that pay keep the search's share; each turn without a better
                # mapping since the last halves it (down to MIN_SHARE), but for a pass
                # still under way: its turns are one move cut into pieces.
                self.share = self.top_share if found[1] < self.value or self.passing \
                    else max(MIN_SHARE, self.share / 2)
                self.value = min(self.value, found[1])
            self.passing = False
            # In turn: a dive step (the master over the found segments, the other
            # columns at their bounds, greedy repairs of what it picks: the bounds have
            # risen since the dive), a greedy repair of an incumbent's segment (cheap), a
            # run of blocks merged, the frame MIPs around an incumbent's segment.
            kind = self.turns % 4
            if kind == 3 and self.dives:
                self._dive()
                return
            # The long dive once every interval is open, after the thorough dive (which
            # found RED-LIF's optimum at 128 KB; on SEW-ResNet-152 it ends in a turn).
            if self.long and not self.thorough and self.cs.open_len >= self.cs.max_len:
                self._long()
                return
            if self.thorough:
                self._thorough()
                return
            if kind == 1 and self.repairs:
                col = self._next(self.repaired, merges=False)
                if col is not None:
                    before = col.upper
                    self.cs.touch(col)
                    if self.cs.repair_price(col):
                        self.cs.touch(col)
                        self.cs.note_incumbent()
                    LOG.debug("repaired %d..%d: %s -> %s in %.2f s", col.first, col.last,
                              before, col.upper, time.perf_counter() - t0)
                    return
                self.repairs = False
            if kind != 0 and self.merges:
                self._merge()
                return
            col = self._next(self.done)
            if col is None:
                if self.merges:
                    self._merge()
                    return
                self.exhausted, self.checked = True, time.perf_counter()
                return
            self.moves += 1
            before = col.upper
            if improve_column(self.cs, col):
                self.improved += 1
                self.repairs = True  # (the incumbent may have new segments)
                self.cs.note_incumbent()
            LOG.debug("neighbourhood %d..%d: %s -> %s in %.2f s", col.first, col.last, before,
                      col.upper, time.perf_counter() - t0)
        finally:
            self.used_s += time.perf_counter() - t0

    def polish(self, until: float) -> bool:
        """Search the incumbent's columns, the one that may gain most first, with their
        frame MIPs (:func:`improve_column`) until one of them makes the incumbent
        better or ``until`` (a ``time.perf_counter()`` value) passes; ``True`` when it
        did. Under a short limit the search reaches its first turn late (after every
        interval is opened: SEW-ResNet-152 at 2 MB spent 4.9 of 10 s opening them)
        while the incumbent is often a named schedule that one such move beats: at
        2 MB TB-LBL's stem column, 0.34 s from an empty nest table. Where every
        interval was open for the dive (not a deep network) and the thorough pass has
        not ended, the pass goes first (:meth:`_polish_pass`)."""
        cs = self.cs
        found = cs.incumbent()
        if found is None:
            return False
        value = found[1]
        if self.thorough and not self.late and time.perf_counter() < until \
                and self._polish_pass(until, value):
            return True
        while time.perf_counter() < until and not cs.stop.expired():
            col = self._next(self.done, merges=False)
            if col is None:
                return False
            t0 = time.perf_counter()
            self.moves += 1
            improved = improve_column(cs, col)
            self.used_s += time.perf_counter() - t0
            LOG.debug("polish %d..%d: %s in %.2f s", col.first, col.last, improved,
                      time.perf_counter() - t0)
            if improved:
                self.improved += 1
                cs.note_incumbent()
                now = cs.incumbent()
                if now is not None and now[1] < value:
                    return True
        return False

    def _polish_pass(self, until: float, value: float) -> bool:
        """The polish's first move where the thorough pass has not ended: the pass,
        until the incumbent is better than ``value`` or ``until`` passes; whether it
        is. (RED-LIF's optimum at 128 KB comes from that pass, and a slow machine
        left its last turn past a 10 s limit after a polish of frame MIPs.)"""
        cs = self.cs

        def better() -> bool:
            now = cs.incumbent()
            return now is not None and now[1] < value

        t0 = time.perf_counter()
        if self._pass_turn(cs.thorough_dive, until - t0, better):
            self.thorough = False
        self.used_s += time.perf_counter() - t0
        return better()

    def _dive(self) -> None:
        """A dive step of at most :data:`DIVE_TURN_S`; none left once the master picks
        only columns with a found segment or repaired already."""
        cs = self.cs
        end = time.perf_counter() + DIVE_TURN_S
        if cs.dive_step(lambda: cs.stop.expired() or time.perf_counter() >= end, end):
            self.repairs = True  # (the incumbent may have new segments)
        else:
            self.dives = False
        LOG.debug("dive step (more: %s)", self.dives)

    def _thorough(self) -> None:
        """The thorough dive (:meth:`ColumnSolver.thorough_dive`) for at most
        :data:`THOROUGH_TURN_S`; it goes on where it stopped at the next turn, until
        it ends."""
        if self._pass_turn(self.cs.thorough_dive, THOROUGH_TURN_S):
            self.thorough = False
        LOG.debug("thorough dive turn (more: %s)", self.thorough)

    def _long(self) -> None:
        """The long dive (:meth:`ColumnSolver.long_dive`) for at most :data:`LONG_TURN_S`;
        it goes on where it stopped at the next turn, until it ends."""
        if self._pass_turn(self.cs.long_dive, LONG_TURN_S):
            self.long = False
        LOG.debug("long dive turn (more: %s)", self.long)

    def _pass_turn(self, run: Callable[[Callable[[], bool]], bool], turn_s: float,
                   enough: Callable[[], bool] | None = None) -> bool:
        """One turn of a resumable pass (``run(over)`` is ``True`` once it has ended),
        at most ``turn_s`` seconds, and (``enough``) until ``enough()``; whether it
        ended."""
        cs = self.cs
        end = time.perf_counter() + turn_s
        before = cs.incumbent()
        ended = run(lambda: cs.stop.expired() or time.perf_counter() >= end
                    or (enough is not None and enough()))
        after = cs.incumbent()
        if after is not None and (before is None or after[1] < before[1]):
            self.repairs = True  # (the incumbent may have new segments)
        self.passing = not ended
        return ended

    def _merge(self) -> None:
        """A segment for the next run of blocks merged (:func:`block_runs`), with every
        tensor crossing its boundaries through DRAM."""
        cs = self.cs
        while self.merges:
            first, last = self.merges.pop(0)
            sig = type(cs.columns[0].sig)(
                tuple((X, False) for X in cs.crossing_in(first)),
                tuple((X, False, True) for X in cs.outputs(first, last)))
            col = cs.column_of(first, last, sig)
            if col is None or col.upper is not None or (col.exact and col.value is None):
                continue
            got = best_fit(cs, col)
            if got is not None and (col.upper is None or got[1] < col.upper):
                col.upper, col.segment, col.frame, col.chosen = got[1], got[0], None, {}
                cs.touch(col)
                cs.share_found(col)
                cs.note_incumbent()
                self.repairs = True
            LOG.debug("merged %d..%d: %s", first, last, col.upper)
            return

    def _next(self, done: set[tuple], merges: bool = True) -> Column | None:
        """The next neighbourhood not in ``done``: the incumbent's columns by what they
        may gain, then (``merges``) unions of two consecutive ones."""
        cs = self.cs
        cs.poll_seeds()
        found = cs.incumbent()
        if found is None:
            return None
        chosen = found[0]
        # A better segment for one column goes to every translate on the path too
        # (share_found): a column's gain counts once per copy, and is searched once.
        copies = collections.Counter(_kind(c) for c in chosen)
        cands = [c for c in chosen if not c.exact and _kind(c) not in done]
        if cands:
            col = max(cands, key=lambda c: (((c.upper or 0.0) - c.bound) * copies[_kind(c)],
                                            -c.first))
            done.add(_kind(col))
            return col
        if not merges:
            return None
        for left, right in itertools.pairwise(chosen):
            if right.last - left.first + 1 > cs.max_len:
                continue
            sig = merged_signature(cs, left, right)
            key = (left.first, right.last, sig)
            if key in done:
                continue
            done.add(key)
            col = cs.column_of(left.first, right.last, sig)
            if col is not None and not col.exact:
                cs.touch(col)
                return col
        return None


def _kind(col: Column) -> tuple:
    """What a neighbourhood search of ``col`` is the same for: its shape key and
    canonical signature (its translates take what it finds), else its interval and
    signature."""
    return col.share_key if col.share_key is not None else (col.first, col.last, col.sig)
