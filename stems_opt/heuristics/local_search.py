"""Randomized local search over segmentations, time batches and tile counts.

A state is a list of segment frames (layers, ``Tb``, tile count) covering the
layers in order; each frame is filled alone by the named schedules' greedy
rule (see :class:`~stems_opt.heuristics.greedy.FrameFiller`) and the state's
score is the sum of its frames' traffic. A move changes one or two frames:
retile, re-time (any divisor of T), merge two neighbours, split one, or move
the boundary between two neighbours by one layer. A move is kept when the
score does not grow (sideways moves let the search cross plateaus). The best
state gets the greedy rule's cross-segment switches; the result is the
better of it and the starting mapping, checked and scored by the cost model.

The trajectory depends only on the seed and the start, so a run stopped by
``max_iterations`` is deterministic; one stopped by ``time_limit_s`` is a
prefix of that same trajectory.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

from stems_opt.heuristics.greedy import FrameFiller, greedy_segments, heuristic_result
from stems_opt.mapping import Mapping
from stems_opt.network import divisors
from stems_opt.problem import Problem
from stems_opt.result import Result

FrameKey = tuple[tuple[str, ...], int, int]
"""``(layers, time_batch, tiles)`` of one segment."""

DEFAULT_ITERATIONS = 200
"""Moves tried when neither a time limit nor an iteration count is given."""


class _Search:
    """The state, its score and the moves."""

    def __init__(self, problem: Problem, filler: FrameFiller, rng: random.Random):
        self.problem = problem
        self.filler = filler
        self.rng = rng
        self.tbs = divisors(problem.network.timesteps)
        self.cap = problem.max_segment_layers

    def score(self, frames: Sequence[FrameKey]) -> float:
        total = 0
        for key in frames:
            f = self.filler.fill(*key)
            if f is None:
                return math.inf
            total += f.traffic_bits
        return total

    def _clip(self, layers: tuple[str, ...], tb: int, tiles: int) -> FrameKey:
        return layers, tb, min(tiles, self.filler.max_tiles(layers))

    def _fits_cap(self, layers: tuple[str, ...]) -> bool:
        return self.cap is None or len(layers) <= self.cap

    def move(self, frames: list[FrameKey]) -> list[FrameKey] | None:
        """A random neighbour of ``frames`` (``None`` when the drawn move does not apply)."""
        rng = self.rng
        i = rng.randrange(len(frames))
        layers, tb, n = frames[i]
        kind = rng.randrange(5)
        out = list(frames)
        if kind == 0:  # retile
            out[i] = (layers, tb, rng.randint(1, self.filler.max_tiles(layers)))
        elif kind == 1:  # re-time
            out[i] = (layers, rng.choice(self.tbs), n)
        elif kind == 2:  # merge with the next segment
            if i + 1 >= len(frames):
                return None
            nxt = frames[i + 1]
            merged = layers + nxt[0]
            if not self._fits_cap(merged):
                return None
            out[i:i + 2] = [self._clip(merged, rng.choice((tb, nxt[1])), min(n, nxt[2]))]
        elif kind == 3:  # split
            if len(layers) < 2:
                return None
            cut = rng.randrange(1, len(layers))
            out[i:i + 1] = [self._clip(layers[:cut], tb, n), self._clip(layers[cut:], tb, n)]
        else:  # move the boundary with the next segment by one layer
            if i + 1 >= len(frames):
                return None
            nxt = frames[i + 1]
            if rng.random() < 0.5 and len(layers) > 1:
                a, b = layers[:-1], (layers[-1], *nxt[0])
            elif len(nxt[0]) > 1:
                a, b = (*layers, nxt[0][0]), nxt[0][1:]
            else:
                return None
            if not (self._fits_cap(a) and self._fits_cap(b)):
                return None
            out[i:i + 2] = [self._clip(a, tb, n), self._clip(b, nxt[1], nxt[2])]
        return out


def _start_frames(problem: Problem, filler: FrameFiller, start: Mapping | None
                  ) -> list[FrameKey] | None:
    if start is None:
        fills = greedy_segments(problem, filler)
        if fills is None:
            return None
        segs = [f.segment for f in fills]
    else:
        segs = list(start.segments)
    return [(s.layers, s.time_batch, s.tiles) for s in segs]


def local_search(problem: Problem, seed: int = 0, time_limit_s: float | None = None,
                 max_iterations: int | None = None, start: Mapping | None = None) -> Result:
    """Randomized local search (see the module docstring).

    Parameters
    ----------
    seed
        Seed of the move generator.
    time_limit_s, max_iterations
        Stop after this wall time or this many moves, whichever comes first
        (:data:`DEFAULT_ITERATIONS` moves when neither is given). The time
        spent building the start is not counted.
    start
        The mapping to start from (e.g. the best named schedule); by default
        the greedy fusion's segments.
    """
    filler = FrameFiller(problem)
    frames = _start_frames(problem, filler, start)
    begin = time.perf_counter()
    if frames is None:
        return heuristic_result(problem, None, "local-search", begin)
    search = _Search(problem, filler, random.Random(seed))
    if max_iterations is None and time_limit_s is None:
        max_iterations = DEFAULT_ITERATIONS
    deadline = None if time_limit_s is None else begin + time_limit_s
    score = search.score(frames)
    moves = 0
    while (max_iterations is None or moves < max_iterations) and \
            (deadline is None or time.perf_counter() < deadline):
        moves += 1
        cand = search.move(frames)
        if cand is None:
            continue
        cand_score = search.score(cand)
        if cand_score <= score:
            frames, score = cand, cand_score
    found = None
    if score < math.inf:
        found = filler.finish([filler.fill(*key).segment for key in frames],  # type: ignore
                              "LOCAL-SEARCH")
    result = heuristic_result(problem, found, "local-search", begin,
                              message=f"{moves} moves, seed {seed}")
    if start is not None:
        own = heuristic_result(problem, start, "local-search", begin,
                               message=f"{moves} moves, seed {seed}: no improvement on the start")
        if own.cost is not None and own.cost.feasible and (
                result.objective_value is None or own.objective_value < result.objective_value):
            return own
    return result
