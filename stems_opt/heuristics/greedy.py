"""Greedy layer fusion, as fused-layer mappers do it: grow each segment while traffic falls.

Layers are taken in order. The current segment absorbs the next layer when
the fused segment fits the global buffer and moves less off-chip traffic
than the current segment and the next layer run apart; otherwise the
current segment is closed and the next layer starts a new one. Each
candidate segment is scored alone (its boundaries through DRAM) at its best
time batch (``Tb = 1`` or ``T``, the two STEMS extremes) and tile count, its
decisions filled by the named schedules' greedy rule (MODEL.md section 7).
A single layer tries every power of two up to its smallest extent, and that
extent; a grown segment tries those screened first with everything through
DRAM and keeps the five best, plus the tile counts of its two parts. The chosen
segments then get the same rule's cross-segment switches (tensors kept on
chip between segments), and the mapping is checked and scored by the cost
model like any other.

Segments respect the instance's ``max_segment_layers``, so the heuristic
searches the optimiser's own space.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from stems_opt.cost.evaluation import evaluate
from stems_opt.cost.traffic import SegmentContext
from stems_opt.feasibility import check
from stems_opt.heuristics.named import Scorer, greedy_pass, lone_context
from stems_opt.mapping import Mapping, Order, Placement, Segment
from stems_opt.network import Axis, Network
from stems_opt.problem import Problem
from stems_opt.result import Result, SolveStatus


@dataclass(frozen=True)
class FrameFill:
    """A segment filled alone: its traffic (bits) with DRAM boundaries, and the segment."""

    traffic_bits: int
    segment: Segment


def tile_choices(max_tiles: int) -> tuple[int, ...]:
    """Powers of two below ``max_tiles``, then ``max_tiles`` itself."""
    out, n = [], 1
    while n < max_tiles:
        out.append(n)
        n *= 2
    out.append(max_tiles)
    return tuple(out)


def alone_context(network: Network, seg: Segment) -> SegmentContext:
    """How ``seg`` meets the rest of a mapping whose other tensors all pass through DRAM
    (as :func:`~stems_opt.cost.traffic.mapping_contexts` finds it): nothing kept whole;
    written are the network outputs, tensors read by later segments, and tensors this
    segment reads back from DRAM itself."""
    inside = set(seg.layers)
    outs = set(network.output_names)
    written = set()
    for name in seg.layers:
        consumers = network.consumers(name)
        if name in outs or any(c not in inside for c in consumers) or (
                any(c in inside for c in consumers)
                and seg.activation(name) is Placement.DRAM):
            written.add(name)
    return SegmentContext(frozenset(), frozenset(written))


class FrameFiller:
    """Fills and scores segment frames alone, with every result cached.

    Scores are exact sums of the cost model's terms (the named schedules'
    scorer), so a mapping of filled segments with DRAM boundaries moves
    exactly the sum of their ``traffic_bits``.
    """

    def __init__(self, problem: Problem):
        self.problem = problem
        self.scorer = Scorer(problem)
        self._fills: dict[tuple[tuple[str, ...], int, int], FrameFill | None] = {}

    def max_tiles(self, layers: Sequence[str]) -> int:
        """The most tiles a segment of ``layers`` may have along OY."""
        return min(self.problem.network.layer(n).extent(Axis.OY) for n in layers)

    def fill(self, layers: tuple[str, ...], time_batch: int, tiles: int) -> FrameFill | None:
        """The frame filled by the greedy rule, or ``None`` if it does not fit."""
        key = (layers, time_batch, tiles)
        if key not in self._fills:
            net = self.problem.network
            ctx = lone_context(net, layers)
            seg = Segment(layers, time_batch, tiles, Axis.OY, Order.TIME_OUTER)
            seg = self.scorer.fit(seg, ctx)[0]
            seg = greedy_pass(self.problem, self.scorer, [seg], only_local=True, ctx=ctx)[0]
            # The pass decides in the plain context; the score is exact in the segment's own.
            traffic, peak, _ = self.scorer.segment(seg, alone_context(net, seg))
            self._fills[key] = FrameFill(traffic, seg) if peak <= self.scorer.cap else None
        return self._fills[key]

    def best(self, layers: tuple[str, ...], time_batches: Sequence[int]) -> FrameFill | None:
        """The least-traffic fill of ``layers`` over ``time_batches`` and the tile choices
        (ties: the first found, smaller ``Tb`` and fewer tiles first)."""
        best = None
        for tb in time_batches:
            for n in tile_choices(self.max_tiles(layers)):
                f = self.fill(layers, tb, n)
                if f is not None and (best is None or f.traffic_bits < best.traffic_bits):
                    best = f
        return best

    def screen(self, layers: tuple[str, ...], time_batch: int, tiles: int) -> int | None:
        """Traffic of the frame refitted but before the greedy switches (everything
        through DRAM), or ``None`` if that does not fit: a cheap first look, which
        the greedy fusion uses to choose the tile counts worth a full fill."""
        net = self.problem.network
        seg = Segment(layers, time_batch, tiles, Axis.OY, Order.TIME_OUTER)
        seg = self.scorer.fit(seg, lone_context(net, layers))[0]
        traffic, peak, _ = self.scorer.segment(seg, alone_context(net, seg))
        return traffic if peak <= self.scorer.cap else None

    def best_screened(self, layers: tuple[str, ...], time_batches: Sequence[int],
                      hints: Sequence[int], keep: int = 5) -> FrameFill | None:
        """Like :meth:`best`, but the greedy switches run only on the ``keep`` tile
        counts per time batch with the least screened traffic, and on ``hints``: each
        fill of a long segment is costly, the screen is not."""
        top = self.max_tiles(layers)
        best = None
        for tb in time_batches:
            screened = [(t, n) for n in tile_choices(top)
                        if (t := self.screen(layers, tb, n)) is not None]
            chosen = {n for _, n in sorted(screened)[:keep]}
            chosen |= {min(max(h, 1), top) for h in hints}
            for n in sorted(chosen):
                f = self.fill(layers, tb, n)
                if f is not None and (best is None or f.traffic_bits < best.traffic_bits):
                    best = f
        return best

    def finish(self, segments: Sequence[Segment], name: str) -> Mapping:
        """The mapping of ``segments`` with the greedy rule's cross-segment switches."""
        segs = greedy_pass(self.problem, self.scorer, list(segments), only_local=False)
        return Mapping(tuple(segs), name).canonical(self.problem.network)


def heuristic_result(problem: Problem, mapping: Mapping | None, solver: str, start: float,
                     message: str = "") -> Result:
    """A heuristic's :class:`Result`: its mapping checked and scored by the cost model."""
    if mapping is None:
        return Result(SolveStatus.INFEASIBLE, solver, problem.objective.value,
                      runtime_s=time.perf_counter() - start,
                      message=message or "no segment of some layer fits the global buffer")
    violations = check(problem, mapping)
    assert not violations, f"{solver} built an invalid mapping: {violations}"
    cost = evaluate(problem, mapping)
    return Result(SolveStatus.FEASIBLE, solver, problem.objective.value, mapping=mapping,
                  cost=cost, objective_value=cost.objective_value(
                      problem.objective.value, problem.weights),
                  runtime_s=time.perf_counter() - start, message=message)


class DeadlineError(Exception):
    """The greedy passed its deadline before it had a mapping."""


def greedy_segments(problem: Problem, filler: FrameFiller, deadline: float | None = None
                    ) -> list[FrameFill] | None:
    """The greedy fusion's segments, each filled alone (``None`` if a layer never fits).

    Raises
    ------
    DeadlineError
        When ``time.perf_counter()`` passes ``deadline`` (checked between layers).
    """
    net = problem.network
    T = net.timesteps
    tbs = (1, T) if T > 1 else (1,)
    cap = problem.max_segment_layers
    names = [lay.name for lay in net.layers]
    closed: list[FrameFill] = []
    current = filler.best((names[0],), tbs)
    if current is None:
        return None
    for name in names[1:]:
        if deadline is not None and time.perf_counter() > deadline:
            raise DeadlineError
        alone = filler.best((name,), tbs)
        if alone is None:
            return None
        layers = (*current.segment.layers, name)
        hints = (current.segment.tiles, alone.segment.tiles)
        merged = None if cap is not None and len(layers) > cap else \
            filler.best_screened(layers, tbs, hints)
        if merged is not None and merged.traffic_bits < current.traffic_bits + alone.traffic_bits:
            current = merged
        else:
            closed.append(current)
            current = alone
    closed.append(current)
    return closed


def greedy_fusion(problem: Problem, deadline: float | None = None) -> Result:
    """Greedy layer fusion (see the module docstring), scored by the cost model.

    Past ``deadline`` (a ``time.perf_counter()`` value) it stops with status
    ``unknown`` and no mapping.
    """
    start = time.perf_counter()
    filler = FrameFiller(problem)
    try:
        fills = greedy_segments(problem, filler, deadline)
    except DeadlineError:
        return Result(SolveStatus.UNKNOWN, "greedy-fusion", problem.objective.value,
                      runtime_s=time.perf_counter() - start,
                      message="the time limit came first")
    mapping = None if fills is None else filler.finish([f.segment for f in fills],
                                                       "GREEDY-FUSION")
    return heuristic_result(problem, mapping, "greedy-fusion", start)
