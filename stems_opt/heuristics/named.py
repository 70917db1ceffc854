"""STEMS-style named schedules with the greedy residency rule of MODEL.md section 7.

Schedule names:

``ST-LBL``
    One segment with every layer, ``Tb = 1``, one tile.
``TB-LBL``
    Every layer its own segment, ``Tb = T``.
``TB-F`` / ``ST-F``
    One segment per block with ``Tb = T`` / ``Tb = 1`` and a tile count per
    fused block.
``HYBRID:<time>:<depth>``
    One character per block, as STEMS's command line has it: time ``T``
    (time-batched) or ``S`` (single timestep); depth ``F`` (fused) or ``L``
    (layer by layer). Consecutive ``S``/``L`` blocks run as one
    single-timestep segment (that is what layer-by-layer means with
    ``Tb = 1``); a ``T``/``L`` block is one segment per layer.

Every other decision follows one fixed greedy rule (see :func:`greedy_mapping`).
Its parts are public for the heuristics built on the same rule
(:mod:`stems_opt.heuristics.greedy`): :class:`Scorer` (exact per-segment
traffic and peak, and the sub-tile refit), :func:`greedy_pass` (one pass of
the switches) and :func:`lone_context` (how a segment is seen on its own).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from operator import add
from typing import NamedTuple

import numpy as np

from stems_opt.cost.evaluation import evaluate
from stems_opt.cost.geometry import SegmentGeometry, sub_tile_limits
from stems_opt.cost.traffic import (
    SegmentContext,
    Term,
    _context_plan,
    compulsory_traffic_bits,
    kept_halo_term,
    layer_terms,
    mapping_contexts,
)
from stems_opt.errors import Issue, StemsInputError
from stems_opt.mapping import (
    STREAMED,
    Halo,
    Mapping,
    Order,
    Placement,
    Segment,
    StateMode,
    WeightChoice,
)
from stems_opt.network import Axis, Network, most_chunks
from stems_opt.problem import Problem
from stems_opt.result import Result, SolveStatus
from stems_opt.stopping import Stop

NAMED = ("ST-LBL", "TB-LBL", "TB-F", "ST-F")


@dataclass(frozen=True)
class Frame:
    """A segment skeleton before the greedy fills in its decisions.

    ``tiles`` is ``None`` for "choose": the fewest that fit for
    layer-by-layer segments; for fused ones the counts that minimise the whole
    schedule's objective (see :func:`choose_tiles`).
    """

    layers: tuple[str, ...]
    time_batch: int
    tiles: int | None
    fused: bool


def parse_schedule(name: str, network: Network, tiles: Sequence[int] | int | None = None
                   ) -> list[Frame]:
    """Segment skeletons of a named or hybrid schedule.

    Parameters
    ----------
    tiles
        Tile count for every fused block (an int), one per fused block (a
        sequence), or ``None`` to choose per block.

    Raises
    ------
    StemsInputError
        For an unknown name or a hybrid string of the wrong length.
    """
    blocks = network.block_list
    nb = len(blocks)
    key = name.strip().upper()
    if key == "ST-LBL":
        time_s, depth_s = "S" * nb, "L" * nb
    elif key == "TB-LBL":
        time_s, depth_s = "T" * nb, "L" * nb
    elif key == "TB-F":
        time_s, depth_s = "T" * nb, "F" * nb
    elif key == "ST-F":
        time_s, depth_s = "S" * nb, "F" * nb
    elif key.startswith("HYBRID:") and key.count(":") == 2:
        _, time_s, depth_s = key.split(":")
        if len(time_s) != nb or len(depth_s) != nb or set(time_s) - {"S", "T"} or \
                set(depth_s) - {"F", "L"}:
            raise StemsInputError(Issue(
                f"hybrid schedule {name!r} needs {nb} time characters (S or T) and {nb} depth "
                f"characters (F or L), one per block ({', '.join(b.name for b in blocks)})",
                field="schedule"))
    else:
        raise StemsInputError(Issue(
            f"unknown schedule {name!r} (one of {', '.join(NAMED)} or HYBRID:<time>:<depth> "
            f"with one S/T and one F/L per block)", field="schedule"))
    n_fused = depth_s.count("F")
    if isinstance(tiles, Sequence) and len(tiles) != n_fused:
        raise StemsInputError(Issue(f"{len(tiles)} tile counts given for {n_fused} fused blocks",
                                    field="tiles"))
    T = network.timesteps
    frames: list[Frame] = []
    pending: list[str] = []
    fused_i = 0
    for block, tc, dc in zip(blocks, time_s, depth_s, strict=True):
        tb = T if tc == "T" else 1
        if tc == "S" and dc == "L":
            pending.extend(block.layers)
            continue
        if pending:
            frames.append(Frame(tuple(pending), 1, 1, fused=False))
            pending = []
        if dc == "F":
            n = tiles if isinstance(tiles, int) else (
                tiles[fused_i] if isinstance(tiles, Sequence) else None)
            fused_i += 1
            frames.append(Frame(block.layers, tb, n, fused=True))
        else:
            frames.extend(Frame((layer,), tb, None, fused=False) for layer in block.layers)
    if pending:
        frames.append(Frame(tuple(pending), 1, 1, fused=False))
    return frames


_Score = tuple[int, int, int]
"""``(traffic_bits, peak_bits, peak_position)`` of one segment in one context."""


class _Group(NamedTuple):
    """The summed terms of one layer of a segment (see :func:`layer_terms`).

    ``local`` is the ``(n, L)`` occupancy of the layer's terms; ``col`` (and
    ``col_array``, the same as an array) its column at the layer's own
    position, the only one :meth:`Scorer.fit` tests for that layer.
    """

    traffic: int
    persistent: int
    local: np.ndarray
    col: tuple[int, ...]
    col_array: np.ndarray


_Rest = tuple[StateMode, Placement | None, bool, bool, tuple[tuple[str, Halo], ...]]
"""The arguments of :func:`layer_terms` that a sub-tile refit leaves alone."""


class _MemoGeometry(SegmentGeometry):
    """A :class:`SegmentGeometry` that remembers its row computations.

    The greedy builds the terms of one frame for many sub-tile counts and
    decisions, and they ask for the same rows again and again. Results are
    shared between callers, which only read them.
    """

    def __init__(self, network: Network, seg: Segment):
        super().__init__(network, seg)
        self._tile_rows: dict[str, list[int]] = {}
        self._max_sub_rows: dict[tuple[str, int], list[int]] = {}
        self._reads: dict[tuple[str, int, bool], tuple[int, list[int], list[int]]] = {}

    def tile_rows(self, name: str) -> list[int]:
        """Rows of ``name`` in each tile."""
        rows = self._tile_rows.get(name)
        if rows is None:
            rows = self._tile_rows[name] = super().tile_rows(name)
        return rows

    def max_sub_rows(self, name: str, m: int) -> list[int]:
        """Per tile, the rows of the largest of ``m`` sub-tiles of ``name`` (0 if empty)."""
        key = (name, m)
        rows = self._max_sub_rows.get(key)
        if rows is None:
            rows = self._max_sub_rows[key] = super().max_sub_rows(name, m)
        return rows

    def window_reads(self, consumer: str, m: int, keep: bool
                     ) -> tuple[int, list[int], list[int]]:
        """Rows of an input read from DRAM by ``consumer`` (see the base class)."""
        key = (consumer, m, keep)
        reads = self._reads.get(key)
        if reads is None:
            reads = self._reads[key] = super().window_reads(consumer, m, keep)
        return reads


class _FrameInfo:
    """What a segment frame (layers, ``Tb``, ``n``, axis, order) fixes, computed once.

    Also holds the frame's caches: per-layer groups (keyed on the layer's
    :data:`_Rest`, then on sub-tiles and weight choice), terms, and the
    persistent bits of tensors kept whole from elsewhere.
    """

    def __init__(self, problem: Problem, seg: Segment):
        network = problem.network
        # The geometry reads only the frame fields of ``seg``, so one serves every segment.
        self.geo = _MemoGeometry(network, seg)
        self.layers = self.geo.layers
        self.limits = sub_tile_limits(network, seg)
        inside = self.geo.inside
        self.has_inner = [any(c in inside for c in network.consumers(lay.name))
                          for lay in self.layers]
        self.srcs = [tuple((src, src in inside) for src in dict.fromkeys(lay.inputs))
                     for lay in self.layers]
        self.has_weights = [lay.has_weights for lay in self.layers]
        self.stateful = [lay.stateful for lay in self.layers]
        # Weight choices a refit tries for streamed weights: one chunk, else the most.
        self.options = [(STREAMED, WeightChoice(chunks=_max_chunks(problem, lay.k)))
                        if lay.has_weights else (STREAMED,) for lay in self.layers]
        self.extra: dict[SegmentContext, int] = {}
        self.kept: dict[str, int] = {}
        self.terms: dict[tuple[object, ...], Term] = {}
        self.groups: dict[tuple[int, _Rest], dict[tuple[int, bool, int], _Group]] = {}

    def rest(self, pos: int, seg: Segment, ctx: SegmentContext) -> _Rest:
        """Mirrors :func:`segment_terms`: state, in-segment placement of the
        output, whether the output is kept whole / written, the DRAM reads."""
        name = self.layers[pos].name
        acts = seg.activations
        state = seg.states.get(name, StateMode.SPILLED) if self.stateful[pos] else \
            StateMode.SPILLED
        act = acts.get(name, Placement.DRAM) if self.has_inner[pos] else None
        reads = []
        for src, inner in self.srcs[pos]:
            if (acts if inner else seg.inputs).get(src, Placement.DRAM) is not Placement.ON_CHIP:
                reads.append((src, seg.halos.get(src, Halo.REREAD)))
        return state, act, name in ctx.whole, name in ctx.written, tuple(reads)


class Scorer:
    """Per-segment traffic and peak, and the sub-tile refit, all cached.

    The greedy re-scores and refits the same segments many times, so a
    segment's cost is assembled from per-layer :class:`_Group` sums (a
    layer's terms depend only on its own decisions, see :func:`layer_terms`),
    and results are memoised per segment object (kept alive here so that
    ``id`` stays unique) and context. Every number is an exact integer sum of
    the same terms :func:`evaluate` adds up, so nothing differs from it.
    """

    def __init__(self, problem: Problem):
        self.problem = problem
        self.network = problem.network
        self.cap = problem.hardware.gb_capacity_bits
        self._frames: dict[tuple[object, ...], _FrameInfo] = {}
        self._scores: dict[int, tuple[Segment, dict[SegmentContext, _Score]]] = {}
        self._fits: dict[int, tuple[Segment, dict[SegmentContext, tuple[Segment, _Score]]]] = {}
        self._switches: dict[tuple[object, ...], list[tuple[int, dict[str, object]]]] = {}

    # --- building blocks ---------------------------------------------------------------------
    def _frame(self, seg: Segment) -> _FrameInfo:
        # Enum members are singletons, so their ids key them as their values do, but
        # hash faster.
        key = (seg.layers, seg.time_batch, seg.tiles, id(seg.axis), id(seg.order))
        fi = self._frames.get(key)
        if fi is None:
            fi = self._frames[key] = _FrameInfo(self.problem, seg)
        return fi

    def _kept(self, fi: _FrameInfo, rests: Sequence[_Rest]) -> int:
        """Persistent bits of the halos kept across tiles of the tensors read from
        DRAM under ``keep`` (:func:`kept_halo_term`, one per tensor)."""
        if fi.geo.n == 1:
            return 0
        total = 0
        for src in dict.fromkeys(src for rest in rests for src, halo in rest[4]
                                 if halo is Halo.KEEP):
            bits = fi.kept.get(src)
            if bits is None:
                bits = fi.kept[src] = kept_halo_term(fi.geo, src).persistent_bits
            total += bits
        return total

    def _extra(self, fi: _FrameInfo, ctx: SegmentContext) -> int:
        """Persistent bits of tensors kept whole but neither produced nor read here."""
        extra = fi.extra.get(ctx)
        if extra is None:
            extra = fi.extra[ctx] = sum(self.network.tensor_size_bits(name)
                                        for name in ctx.whole - fi.geo.inside)
        return extra

    def _group(self, fi: _FrameInfo, pos: int, rest: _Rest,
               table: dict[tuple[int, bool, int], _Group], m: int, weight: WeightChoice) -> _Group:
        """The group of layer ``pos`` with ``rest``, ``m`` sub-tiles and ``weight``;
        ``table`` holds the groups of that layer and rest."""
        key = (m, weight.resident, weight.chunks)
        g = table.get(key)
        if g is None:
            geo = fi.geo
            terms = layer_terms(self.network, geo, fi.layers[pos], m, weight, *rest,
                                memo=fi.terms)
            local = np.zeros((geo.n, len(fi.layers)), dtype=np.int64)
            traffic = persistent = 0
            for t in terms:
                traffic += t.read_bits + t.write_bits
                persistent += t.persistent_bits
                if t.local is not None:
                    local += t.local
            col = local[:, pos].copy()
            g = table[key] = _Group(traffic, persistent, local, tuple(col.tolist()), col)
        return g

    def _groups(self, fi: _FrameInfo, seg: Segment, ctx: SegmentContext, sub_tiles: bool
                ) -> tuple[list[_Rest], list[dict[tuple[int, bool, int], _Group]], list[_Group]]:
        """Per layer of ``seg``: its rest, its group table and its group (one sub-tile
        each unless ``sub_tiles``)."""
        rests, tables, groups = [], [], []
        weights, subs, all_tables = seg.weights, seg.sub_tiles, fi.groups
        for pos, lay in enumerate(fi.layers):
            rest = fi.rest(pos, seg, ctx)
            table = all_tables.get((pos, rest))
            if table is None:
                table = all_tables[(pos, rest)] = {}
            # Layers without weights ignore the choice: one key for all of them.
            wc = weights.get(lay.name, STREAMED) if fi.has_weights[pos] else STREAMED
            m = subs.get(lay.name, 1) if sub_tiles else 1
            g = table.get((m, wc.resident, wc.chunks))
            rests.append(rest)
            tables.append(table)
            groups.append(g if g is not None else self._group(fi, pos, rest, table, m, wc))
        return rests, tables, groups

    @staticmethod
    def _peak(traffic: int, persistent: int, local: np.ndarray) -> _Score:
        # As peak_of: the first (tile, position) of the largest local sum.
        flat = int(local.argmax())
        return traffic, persistent + int(local.flat[flat]), flat % local.shape[1]

    def _remember(self, seg: Segment, ctx: SegmentContext, score: _Score) -> None:
        entry = self._scores.get(id(seg))
        if entry is None or entry[0] is not seg:
            entry = self._scores[id(seg)] = (seg, {})
        entry[1][ctx] = score

    # --- public ------------------------------------------------------------------------------
    def switches(self, segs: list[Segment]) -> list[tuple[int, dict[str, object]]]:
        """:func:`_switches` of ``segs``, shared (read-only) between equal segmentations.

        The list depends only on the layers of each segment and on whether its
        halos can matter (more than one tile or sub-tile).
        """
        key = tuple((s.layers, s.tiles == 1 and all(s.sub_tile(n) == 1 for n in s.layers))
                    for s in segs)
        hit = self._switches.get(key)
        if hit is None:
            hit = self._switches[key] = _switches(self.problem, segs)
        return hit

    def segment(self, seg: Segment, ctx: SegmentContext) -> _Score:
        """``(traffic_bits, peak_bits, peak_position)`` of ``seg`` in ``ctx``."""
        entry = self._scores.get(id(seg))
        if entry is not None and entry[0] is seg:
            hit = entry[1].get(ctx)
            if hit is not None:
                return hit
        fi = self._frame(seg)
        rests, _, groups = self._groups(fi, seg, ctx, sub_tiles=True)
        local = _total(groups)
        score = self._peak(sum(g.traffic for g in groups),
                           self._extra(fi, ctx) + self._kept(fi, rests)
                           + sum(g.persistent for g in groups), local)
        self._remember(seg, ctx, score)
        return score

    def fit(self, seg: Segment, ctx: SegmentContext) -> tuple[Segment, _Score]:
        """Refit ``seg`` in ``ctx`` and score the result.

        Per layer in order: streamed weights in one chunk if that fits (else
        the most chunks) and the fewest sub-tiles that fit, where "fits" is
        the whole segment's persistent bits plus the most local bits at that
        layer's position. Other decisions are kept. A result equal to ``seg``
        is ``seg`` itself, so refitting it again is a cache hit.
        """
        entry = self._fits.get(id(seg))
        if entry is not None and entry[0] is seg:
            hit = entry[1].get(ctx)
            if hit is not None:
                return hit
        else:
            entry = self._fits[id(seg)] = (seg, {})
        fi = self._frame(seg)
        cap = self.cap
        # The same dicts, in the same key order, as successive Segment.replace calls give.
        sub_tiles = {**seg.sub_tiles, **dict.fromkeys(seg.layers, 1)}
        weights = dict(seg.weights)
        rests, tables, groups = self._groups(fi, seg, ctx, sub_tiles=False)
        local = _total(groups)
        persistent = self._extra(fi, ctx) + self._kept(fi, rests) + \
            sum(g.persistent for g in groups)
        traffic = sum(g.traffic for g in groups)
        for pos, lay in enumerate(fi.layers):
            old = groups[pos]
            # Only this layer's group changes: the rest is a constant offset.
            base_persistent = persistent - old.persistent
            base_col = (local[:, pos] - old.col_array).tolist()
            if base_persistent + max(base_col) > cap:
                # Bits are never negative, so no candidate of this layer can fit.
                continue
            name = lay.name
            options = fi.options[pos]
            if fi.has_weights[pos]:
                current = weights.get(name, STREAMED)
                if current.resident:
                    options = (current,)
            rest, table = rests[pos], tables[pos]
            best = None
            for wc in options:
                for m in count_candidates(fi.limits[name]):
                    g = table.get((m, wc.resident, wc.chunks)) or \
                        self._group(fi, pos, rest, table, m, wc)
                    if base_persistent + g.persistent + max(map(add, base_col, g.col)) <= cap:
                        best = (m, wc, g)
                        break
                if best is not None:
                    break
            if best is None:
                continue
            m, wc, g = best
            sub_tiles[name] = m
            if fi.has_weights[pos]:
                weights[name] = wc
            if g is not old:
                persistent += g.persistent - old.persistent
                traffic += g.traffic - old.traffic
                local += g.local
                local -= old.local
                groups[pos] = g
        score = self._peak(traffic, persistent, local)
        changed = sub_tiles != seg.sub_tiles or weights != seg.weights
        out = seg.replace(sub_tiles=sub_tiles, weights=weights) if changed else seg
        entry[1][ctx] = (out, score)
        self._remember(out, ctx, score)
        return out, score


EXHAUSTIVE_COUNTS = 256
"""Up to this limit, every tile or sub-tile count is tried (every bundled network's
extents are below it, so their schedules are those of an exhaustive scan)."""
GRID_START = 16
"""Beyond :data:`EXHAUSTIVE_COUNTS`, every count up to this, then a geometric grid."""


def count_candidates(limit: int) -> Sequence[int]:
    """The tile or sub-tile counts the greedy tries, in increasing order, up to ``limit``.

    Every count when ``limit <= EXHAUSTIVE_COUNTS``; for larger limits (maps
    of thousands of rows) every count up to :data:`GRID_START`, then steps of
    about 25 %, then ``limit`` itself: about 45 counts for 10,000 rows, so the
    greedy's work grows with the logarithm of a map's rows, not their number.
    """
    if limit <= EXHAUSTIVE_COUNTS:
        return range(1, limit + 1)
    out = list(range(1, GRID_START + 1))
    while out[-1] * 5 // 4 < limit:
        out.append(out[-1] * 5 // 4)
    out.append(limit)
    return out


def _total(groups: Sequence[_Group]) -> np.ndarray:
    """Sum of the groups' local arrays (a fresh array)."""
    if len(groups) > 16:  # one stacked sum beats many small additions
        return np.stack([g.local for g in groups]).sum(axis=0)
    total = groups[0].local.copy()
    for g in groups[1:]:
        total += g.local
    return total


def _max_chunks(problem: Problem, k: int) -> int:
    return _most_chunks(k, problem.hardware.array.factor("K"))


@lru_cache(maxsize=1024)
def _most_chunks(k: int, ku: int) -> int:
    """Most chunks along ``K`` that leave at least the array's K unrolling ``ku`` each."""
    return most_chunks(k, ku)


def _switches(problem: Problem, segs: list[Segment]) -> list[tuple[int, dict[str, object]]]:
    """The greedy's switches in MODEL.md order: (segment index, change)."""
    net = problem.network
    where = {name: i for i, s in enumerate(segs) for name in s.layers}
    out: list[tuple[int, dict[str, object]]] = []
    layers = [layer for layer in net.layers if layer.name in where]
    for layer in layers:  # activations on chip, in producer order
        p = where[layer.name]
        for s in sorted({where[c] for c in net.consumers(layer.name) if c in where}):
            key = "activations" if s == p else "inputs"
            out.append((s, {key: {layer.name: Placement.ON_CHIP}}))
    for i, seg in enumerate(segs):  # halos kept
        if seg.tiles == 1 and all(seg.sub_tile(n) == 1 for n in seg.layers):
            continue
        read = dict.fromkeys(src for n in seg.layers for src in net.layer(n).inputs)
        for src in read:
            out.append((i, {"halos": {src: Halo.KEEP}}))
    for layer in layers:
        if layer.has_weights:
            out.append((where[layer.name], {"weights": {layer.name: WeightChoice(resident=True)}}))
    for layer in layers:
        if layer.stateful:
            out.append((where[layer.name], {"states": {layer.name: StateMode.RESIDENT}}))
    return out


def _tile_resident_ok(seg: Segment, T: int) -> bool:
    return seg.tiles > 1 and seg.time_batch < T


def greedy_mapping(problem: Problem, frames: Sequence[Frame], name: str = "",
                   stop: Stop | None = None) -> Mapping:
    """Fill ``frames`` with the fixed greedy rule of MODEL.md section 7.

    Axis ``OY``; everything streamed (one chunk if it fits, else the most),
    spilled, through DRAM, re-read; the tile count of each frame as given
    (layer-by-layer: the fewest that fit; fused without a count: see
    :func:`choose_tiles`); then per layer the fewest sub-tiles that fit.
    Then, in order, each switch is kept if traffic drops and the mapping
    still fits (re-choosing the fewest sub-tiles after each): activations on
    chip in producer order, halos kept, weights resident in layer order,
    states resident (else tile-resident) in layer order.

    ``stop`` (checked before each fill of the whole schedule or of one block) raises
    :class:`~stems_opt.stopping.SearchStoppedError` once it fires.
    """
    filler = _Filler(problem, frames, stop)
    segs = filler.fill(choose_tiles(filler))
    return Mapping(tuple(segs), name).canonical(problem.network)


class _Filler:
    """The greedy of :func:`greedy_mapping` for any tile counts of one set of frames,
    sharing one scorer (and its caches) between the tile counts tried."""

    def __init__(self, problem: Problem, frames: Sequence[Frame], stop: Stop | None = None):
        self.problem = problem
        self.frames = list(frames)
        self.stop = stop
        self.scorer = Scorer(problem)
        net = problem.network
        self.ctxs = [lone_context(net, f.layers) for f in self.frames]
        self.max_n = [min(net.layer(n).extent(Axis.OY) for n in f.layers) for f in self.frames]
        self._initial: dict[tuple[int, int], Segment] = {}
        self._filled: dict[tuple[int, ...], tuple[list[Segment], tuple[int, float]]] = {}
        self._local: dict[tuple[int, int, SegmentContext], int] = {}
        for frame, max_n in zip(self.frames, self.max_n, strict=True):
            if frame.tiles is not None and frame.tiles > max_n:
                raise StemsInputError(Issue(
                    f"{frame.tiles} tiles exceed the smallest OY extent ({max_n}) of the fused "
                    f"block {frame.layers[0]}..{frame.layers[-1]}", field="tiles"))

    @cached_property
    def floor(self) -> float:
        """An objective no schedule beats: the compulsory traffic (0 for energy)."""
        if self.problem.objective.value == "traffic":
            return float(compulsory_traffic_bits(self.problem.network))
        return 0.0

    def initial(self, i: int, tiles: int) -> Segment:
        """Frame ``i`` with ``tiles`` tiles, fitted alone (plain DRAM boundaries)."""
        seg = self._initial.get((i, tiles))
        if seg is None:
            frame = self.frames[i]
            seg = Segment(layers=frame.layers, time_batch=frame.time_batch, tiles=tiles,
                          axis=Axis.OY, order=Order.TIME_OUTER)
            seg = self._initial[(i, tiles)] = self.scorer.fit(seg, self.ctxs[i])[0]
        return seg

    def fewest_fitting(self, i: int) -> int:
        """The fewest tiles with which frame ``i`` fits alone, else its lowest-peak count."""
        scorer, ctx = self.scorer, self.ctxs[i]
        for n in count_candidates(self.max_n[i]):
            if scorer.segment(self.initial(i, n), ctx)[1] <= scorer.cap:
                return n
        return self.lowest_peak(i)

    def lowest_peak(self, i: int) -> int:
        """The tile count of frame ``i`` with the lowest peak alone (the fewest on ties)."""
        ctx = self.ctxs[i]
        return min(count_candidates(self.max_n[i]),
                   key=lambda n: self.scorer.segment(self.initial(i, n), ctx)[1])

    def local_traffic(self, i: int, n: int, ctx: SegmentContext) -> int:
        """Traffic of frame ``i`` with ``n`` tiles after its in-segment greedy in
        ``ctx``; ``-1`` when it does not fit."""
        key = (i, n, ctx)
        traffic = self._local.get(key)
        if traffic is None:
            if self.stop is not None:
                self.stop.check()
            scorer = self.scorer
            seg = greedy_pass(self.problem, scorer, [self.initial(i, n)], only_local=True,
                               ctx=ctx)[0]
            t, peak, _ = scorer.segment(seg, ctx)
            traffic = self._local[key] = t if peak <= scorer.cap else -1
        return traffic

    def alone_best(self, i: int, candidates: Sequence[int]) -> int:
        """The candidate count of frame ``i`` with the least traffic alone (plain DRAM
        boundaries, after its in-segment greedy; the fewest tiles on ties), else the
        lowest-peak count."""
        fit = [(t, n) for n in candidates if (t := self.local_traffic(i, n, self.ctxs[i])) >= 0]
        return min(fit)[1] if fit else self.lowest_peak(i)

    def alone_total(self, tiles: Sequence[int], free: Sequence[int]) -> float:
        """Sum over the ``free`` frames of their traffic alone with these counts
        (:meth:`local_traffic` with plain DRAM boundaries); ``inf`` if one does not fit."""
        total = 0
        for i in free:
            traffic = self.local_traffic(i, tiles[i], self.ctxs[i])
            if traffic < 0:
                return math.inf
            total += traffic
        return total

    def ranked(self, tiles: Sequence[int], i: int, candidates: Sequence[int]
               ) -> list[tuple[int, int]]:
        """``(traffic saved, count)`` of the ``candidates`` for frame ``i`` (other than
        its count in ``tiles``) whose segment, after its in-segment greedy in the
        context the filled schedule of ``tiles`` gives it, fits with no more
        traffic than the current one; most saved first, then fewest tiles."""
        segs = self.fill(tiles)
        ctx = mapping_contexts(self.problem.network, Mapping(tuple(segs)))[i]
        scorer = self.scorer
        here = scorer.segment(segs[i], ctx)[0]
        out = []
        for n in candidates:
            if n == tiles[i]:
                continue
            traffic = self.local_traffic(i, n, ctx)
            if 0 <= traffic <= here:
                out.append((traffic, n))
        return [(here - t, n) for t, n in sorted(out)]

    def fill(self, tiles: Sequence[int]) -> list[Segment]:
        """The greedy's segments for these tile counts."""
        return self._run(tuple(tiles))[0]

    def score(self, tiles: Sequence[int]) -> tuple[int, float]:
        """``(0, objective)`` of the filled schedule when it fits, else ``(1, peak bits)``."""
        return self._run(tuple(tiles))[1]

    def _run(self, tiles: tuple[int, ...]) -> tuple[list[Segment], tuple[int, float]]:
        hit = self._filled.get(tiles)
        if hit is None:
            if self.stop is not None:
                self.stop.check()
            segs = [self.initial(i, n) for i, n in enumerate(tiles)]
            segs = greedy_pass(self.problem, self.scorer, segs, only_local=False)
            hit = self._filled[tiles] = (segs, self._objective(segs))
        return hit

    def _objective(self, segs: list[Segment]) -> tuple[int, float]:
        problem, scorer = self.problem, self.scorer
        ctxs = mapping_contexts(problem.network, Mapping(tuple(segs)))
        scores = [scorer.segment(s, c) for s, c in zip(segs, ctxs, strict=True)]
        peak = max(s[1] for s in scores)
        if peak > scorer.cap:
            return 1, float(peak)
        if problem.objective.value == "traffic":
            return 0, float(sum(s[0] for s in scores))
        return 0, evaluate(problem, Mapping(tuple(segs))).objective_value(
            problem.objective.value, problem.weights)


_EVERY_COUNT_UP_TO = 8
"""Tile counts tried one by one up to here; powers of two beyond (see :func:`choose_tiles`)."""


def _tile_candidates(max_n: int) -> list[int]:
    """Every count up to :data:`_EVERY_COUNT_UP_TO`, then powers of two up to ``max_n``,
    and ``max_n`` itself."""
    out = {1 << k for k in range(max_n.bit_length())} | set(range(1, _EVERY_COUNT_UP_TO + 1))
    return sorted({n for n in out if n <= max_n} | {max_n})


_FULL_CHECK_FILLS = 64
"""Schedules whose single-block changes take at most this many fills get every one
tried on the whole schedule at the end (see :func:`choose_tiles`)."""


def choose_tiles(filler: _Filler) -> list[int]:
    """Tile counts of every frame: as given, the fewest that fit for layer-by-layer
    frames, and for fused frames without a count those that minimise the whole
    schedule's objective (traffic, or energy) among the counts that fit.

    The fused counts come from coordinate descent over the whole filled
    schedule, each block's candidates being every count up to
    :data:`_EVERY_COUNT_UP_TO`, the powers of two up to its extent, the
    extent, and its best count alone (any count; plain DRAM boundaries,
    after its in-segment greedy). Two starts: every block at its best count
    alone (the per-block rule, so no result is weaker than it), and the best
    uniform count (one candidate for every block, capped by its extent). A
    block's candidates are ranked by the block's own traffic after its
    in-segment greedy, in the context (tensors kept whole, tensors written)
    the current schedule gives it.

    Small schedules (trying every single-block change takes at most
    :data:`_FULL_CHECK_FILLS` fills): uniform counts are scored on the whole
    schedule; from each start, candidates ranked no worse than the current
    count are tried on the whole schedule and the first that strictly
    lowers the objective is kept; then every single-block change is tried
    and the descent resumes after an improvement, so the result is a local
    optimum of the whole schedule. Large schedules: uniform counts are
    scored by the sum of the blocks' traffic alone; each sweep moves every
    block to its best-ranked count at once (if strictly better in its
    context) and keeps the sweep if the whole schedule improves, else tries
    the :data:`_SINGLE_TRIES` largest single moves. The search stops at the
    compulsory traffic. Deterministic: fixed orders, ties to the first
    start and the fewer tiles.
    """
    frames = filler.frames
    base = [f.tiles if f.tiles is not None else (None if f.fused else filler.fewest_fitting(i))
            for i, f in enumerate(frames)]
    free = [i for i, n in enumerate(base) if n is None]
    if not free:
        return [int(n) for n in base]  # type: ignore[arg-type]
    alone = [filler.alone_best(i, count_candidates(filler.max_n[i])) if n is None else n
             for i, n in enumerate(base)]
    cands = {i: sorted({*_tile_candidates(filler.max_n[i]), alone[i]}) for i in free}
    small = sum(len(c) - 1 for c in cands.values()) <= _FULL_CHECK_FILLS
    floor = (0, filler.floor)
    uniform = [[min(u, filler.max_n[i]) if n is None else n for i, n in enumerate(base)]
               for u in sorted({n for i in free for n in cands[i]})]
    if small:
        best_uniform = min(uniform, key=filler.score)
        if filler.score(best_uniform) <= floor:
            return best_uniform
    else:
        best_uniform = min(uniform, key=lambda tiles: filler.alone_total(tiles, free))
    descend = _descend if small else _sweep
    tiles, current = descend(filler, alone, free, cands)
    if current > floor and best_uniform != alone:
        tiles, current = min((tiles, current), descend(filler, best_uniform, free, cands),
                             key=lambda r: r[1])
    if not small or current <= floor:
        return tiles
    while True:
        improved = False
        for i in free:
            for n in cands[i]:
                trial = [*tiles[:i], n, *tiles[i + 1:]]
                score = filler.score(trial)
                if score < current:
                    tiles, current, improved = trial, score, True
        if not improved:
            return tiles
        tiles, current = _descend(filler, tiles, free, cands)


_SINGLE_TRIES = 4
"""Single-block moves a large-schedule sweep tries when moving every block at once fails."""


def _descend(filler: _Filler, tiles: list[int], free: list[int], cands: dict[int, list[int]]
             ) -> tuple[list[int], tuple[int, float]]:
    """The descent of :func:`choose_tiles` on small schedules, from ``tiles``."""
    current = filler.score(tiles)
    improved = True
    while improved and current > (0, filler.floor):
        improved = False
        for i in free:
            for _, n in filler.ranked(tiles, i, cands[i]):
                trial = [*tiles[:i], n, *tiles[i + 1:]]
                score = filler.score(trial)
                if score < current:
                    tiles, current, improved = trial, score, True
                    break
    return tiles, current


def _sweep(filler: _Filler, tiles: list[int], free: list[int], cands: dict[int, list[int]]
           ) -> tuple[list[int], tuple[int, float]]:
    """The descent of :func:`choose_tiles` on large schedules, from ``tiles``."""
    current = filler.score(tiles)
    while current > (0, filler.floor):
        moves = []  # (gain in the block's own traffic, block, count)
        for i in free:
            ranked = filler.ranked(tiles, i, cands[i])
            if ranked and ranked[0][0] > 0:
                moves.append((ranked[0][0], i, ranked[0][1]))
        if not moves:
            break
        trial = list(tiles)
        for _, i, n in moves:
            trial[i] = n
        trials = [trial] + [[*tiles[:i], n, *tiles[i + 1:]]
                            for _, i, n in sorted(moves, key=lambda m: (-m[0], m[1]))
                            [:_SINGLE_TRIES]] if len(moves) > 1 else [trial]
        for trial in trials:
            score = filler.score(trial)
            if score < current:
                tiles, current = trial, score
                break
        else:
            break
    return tiles, current


def lone_context(net: Network, layers: Sequence[str]) -> SegmentContext:
    """The context the greedy rule decides a segment of ``layers`` in before the mapping
    around it is known: nothing kept whole; written are the network outputs and the
    tensors read outside the segment."""
    inside = set(layers)
    outs = set(net.output_names)
    written = {n for n in layers if n in outs or any(c not in inside for c in net.consumers(n))}
    return SegmentContext(frozenset(), frozenset(written))


def greedy_pass(problem: Problem, scorer: Scorer, segs: list[Segment], only_local: bool,
                ctx: SegmentContext | None = None) -> list[Segment]:
    """One pass over the switches; ``only_local`` scores ``segs[0]`` alone in ``ctx``.

    A candidate is the current mapping with one switch applied and the
    touched segments refitted (every segment for an ``inputs`` switch). Only
    placement switches change segment contexts, and only those of the
    switched tensor's segments (:func:`_context_changes`), so only those are
    re-derived; a segment whose object and context are unchanged keeps its
    score, and one known to be its own refit in its context (its refit
    returned it) is not refitted again. Totals are updated by the changes, so
    a pass costs about linear time in the number of segments, with the same
    result as refitting and re-scoring everything for every candidate.
    """
    net = problem.network
    T = net.timesteps
    segs = list(segs)
    plan = {}
    if only_local:
        assert ctx is not None
        ctxs = [ctx]
    else:
        ctxs = mapping_contexts(net, Mapping(tuple(segs)))
        plan = {entry[0]: entry for entry in _context_plan(net, tuple(s.layers for s in segs))}
    scores = [scorer.segment(s, c) for s, c in zip(segs, ctxs, strict=True)]
    traffic = sum(s[0] for s in scores)
    over = sum(s[1] > scorer.cap for s in scores)  # segments that overflow
    unsettled = set(range(len(segs)))  # segments not known to be their own refit
    for idx, change in scorer.switches(segs):
        if only_local and "inputs" in change:
            continue
        options = [change]
        if "states" in change:
            name = next(iter(change["states"]))  # type: ignore[call-overload]
            if _tile_resident_ok(segs[idx], T):
                options.append({"states": {name: StateMode.TILE_RESIDENT},
                                "order": Order.SPACE_OUTER})
        for opt in options:
            cand = segs[idx].replace(**opt)
            new_ctxs: dict[int, SegmentContext] = {}
            placed = opt.get("activations") or opt.get("inputs")
            if not only_local and placed:
                tensor = next(iter(placed))  # type: ignore[call-overload]
                new_ctxs = _context_changes(plan[tensor], ctxs, segs, idx, cand)
            # (segment, score, settled) per segment the candidate changes
            new: dict[int, tuple[Segment, _Score, bool]] = {}
            out, score = scorer.fit(cand, new_ctxs.get(idx, ctxs[idx]))
            new[idx] = (out, score, False)
            if "inputs" in opt:
                for i in sorted(unsettled | new_ctxs.keys()):
                    if i != idx:
                        out, score = scorer.fit(segs[i], new_ctxs.get(i, ctxs[i]))
                        new[i] = (out, score, i not in new_ctxs and out is segs[i]
                                  and score == scores[i])
            else:
                for i, c_new in new_ctxs.items():
                    if i != idx:  # (keeps its decisions, but meets the rest anew)
                        new[i] = (segs[i], scorer.segment(segs[i], c_new), False)
            new_traffic = traffic + sum(sc[0] - scores[i][0] for i, (_, sc, _) in new.items())
            new_over = over + sum((sc[1] > scorer.cap) - (scores[i][1] > scorer.cap)
                                  for i, (_, sc, _) in new.items())
            for i, (_, _, settled) in new.items():
                if settled:  # (whether or not the candidate is kept)
                    unsettled.discard(i)
            if new_traffic < traffic and new_over == 0:
                for i, (seg, sc, settled) in new.items():
                    segs[i], scores[i] = seg, sc
                    if not settled:
                        unsettled.add(i)
                for i, c_new in new_ctxs.items():
                    ctxs[i] = c_new
                    unsettled.add(i)
                traffic, over = new_traffic, new_over
                break
    return segs


def _tensor_context(entry: tuple[str, int, tuple[int, ...], bool], segs: Sequence[Segment],
                    idx: int, seg: Segment) -> tuple[range, bool]:
    """The segments where the tensor of ``entry`` (:func:`_context_plan`) is kept whole
    and whether it is written, with ``segs[idx]`` replaced by ``seg`` (as
    :func:`mapping_contexts` decides them)."""
    tensor, p, cons_segs, to_dram = entry
    last_on_chip = None
    for s in cons_segs:
        segment = seg if s == idx else segs[s]
        if s == p:
            to_dram |= segment.activation(tensor) is Placement.DRAM
        elif segment.input(tensor) is Placement.ON_CHIP:
            last_on_chip = s
        else:
            to_dram = True
    whole = range(max(p, 0), last_on_chip + 1) if last_on_chip is not None else range(0)
    return whole, to_dram and p >= 0


def _context_changes(entry: tuple[str, int, tuple[int, ...], bool],
                     ctxs: Sequence[SegmentContext], segs: Sequence[Segment], idx: int,
                     seg: Segment) -> dict[int, SegmentContext]:
    """The contexts that change when ``segs[idx]`` becomes ``seg``, which differs from it
    in the placement of the tensor of ``entry`` only: a tensor's placements decide
    its own membership of the contexts' sets and nothing else."""
    tensor, p = entry[0], entry[1]
    old_whole, old_written = _tensor_context(entry, segs, idx, segs[idx])
    new_whole, new_written = _tensor_context(entry, segs, idx, seg)
    if old_whole == new_whole and old_written == new_written:
        return {}
    out = {}
    for s in sorted({*old_whole, *new_whole, *([p] if p >= 0 else [])}):
        ctx = ctxs[s]
        whole = ctx.whole | {tensor} if s in new_whole else ctx.whole - {tensor}
        written = ctx.written | {tensor} if s == p and new_written else ctx.written - {tensor}
        if whole != ctx.whole or written != ctx.written:
            out[s] = SegmentContext(frozenset(whole), frozenset(written))
    return out


def named_schedule(problem: Problem, name: str, tiles: Sequence[int] | int | None = None,
                   stop: Stop | None = None) -> Result:
    """Build, fill and score a named or hybrid schedule.

    Returns a :class:`Result` with status ``feasible`` when the mapping fits
    the global buffer, else ``infeasible`` with its lowest-peak variant.
    ``stop`` abandons the tile search once it fires
    (:class:`~stems_opt.stopping.SearchStoppedError`).
    """
    start = time.perf_counter()
    frames = parse_schedule(name, problem.network, tiles)
    mapping = greedy_mapping(problem, frames, name=name.upper(), stop=stop)
    cost = evaluate(problem, mapping)
    status = SolveStatus.FEASIBLE if cost.feasible else SolveStatus.INFEASIBLE
    value = cost.objective_value(problem.objective.value, problem.weights)
    msg = "" if cost.feasible else (
        f"does not fit: needs {cost.peak_gb_bits} bits of global buffer, capacity "
        f"{cost.capacity_bits}")
    return Result(status=status, solver=f"named:{name.upper()}",
                  objective=problem.objective.value, mapping=mapping, cost=cost,
                  objective_value=value, runtime_s=time.perf_counter() - start, message=msg)
