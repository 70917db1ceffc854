r"""Chunked weights and the sub-tiles they run in, one choice in the item cover
(``docs/solver.md``, tightening).

The item cover (:mod:`~stems_opt.formulation.item_cover`) has, per layer with
weights, an item at the layer's own row: the weights held whole there, or
chunked, read once per sub-tile, so at least ``fewest`` times per tile, the
fewest sub-tiles whose buffers fit beside a chunk *in the whole buffer*.
Taking it frees ``|W|`` less the chunk at that row. But the fewer the
sub-tiles, the larger each one's buffers: a step computing ``ceil(r / m)`` of
its tile's ``r`` rows holds that many rows of its state (when the state is not
kept across time batches) and of its output (when no layer of the frame reads
it). The row's budget counts these buffers at the finest split only. So with
other items still held on the row, chunking in few sub-tiles frees much less
than the weights (SEW-ResNet-152's stage-3 ``conv3`` at 256 KB, one tile,
``Tb = 4``: two sub-tiles hold seven rows of its 2.4 Mbit state, 1.03 Mbit
more than fourteen, nearly all the weights give), and chunking in many costs a
read of the weights per sub-tile.

So the own-row item becomes one choice among: whole (it keeps its hold), or
chunked in ``m`` sub-tiles for each ``m`` from ``fewest`` to the finest split,
costing ``(runs m - 1) |W|`` and freeing ``|W| - chunk - delta(m)`` at the own
row, with ``delta(m) = (ceil(r / m) - ceil(r / finest)) * row_bits`` (may be
negative freeing: the row then needs more). At most one ``m`` is taken (one when
the weights cannot be whole at the row), and only with the weights not
resident, as before. *Valid:* a mapping that chunks the layer's weights runs
some ``m >= fewest`` sub-tiles, reads the weights ``runs m`` times, and its
largest sub-tile's step holds the chunk and ``ceil(r / m)`` rows of those
buffers beside the other items' cheap sides (``delta`` counts only buffers no
item holds: the state when ``S = 1``, the output when no layer of the frame
reads it); the budget already took the chunk and the finest buffers. With
``m`` at ``fewest`` and ``delta >= 0`` the choice is the old item or tighter, so
the program's bound is at least the item cover's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stems_opt.formulation.item_cover import (
    COVER_LIMIT_S,
    SOLVED_CACHE,
    frame_cover,
    raise_frames,
)

#: The own-row weight items' sub-tile choices in the item cover; off only to compare.
SUBTILE_COVER = True
_SOLVED: dict[tuple, float] = {}


@dataclass(frozen=True)
class SubTileChoices:
    """The chunked choices of one layer's own-row weight item for every frame row of a
    bound call: ``item`` (the own-row item's index), ``position`` (the layer's row in
    each frame), and per frame and sub-tile count ``m = 1 .. M`` the cost ``(F, M)``
    (``inf`` where ``m`` is not a choice) and ``delta`` ``(F, M)``, the bits the
    largest sub-tile holds beyond the finest split's whatever the items choose;
    ``links``: ``(item, delta (F, M))``, bits it holds beyond that when ``item`` takes
    its expensive side (a tensor through DRAM, whose rows the tile on chip held)."""

    item: int
    position: int
    cost: np.ndarray
    delta: np.ndarray
    links: tuple[tuple[int, np.ndarray], ...] = ()


def subtile_choices(item: int, position: int, runs: np.ndarray, fewest: np.ndarray,
                    finest: np.ndarray, rows: np.ndarray, row_bits: np.ndarray,
                    weight_bits: int, read_rate: int,
                    links: list[tuple[int, np.ndarray, bool]] = (),
                    least: np.ndarray | None = None,
                    window: tuple[np.ndarray, np.ndarray] | None = None) -> SubTileChoices:
    """The :class:`SubTileChoices` of one layer from per-frame arrays ``(F,)``: the
    weights' ``runs`` (time batches times active tiles), the ``fewest`` sub-tiles
    that fit beside a chunk, the ``finest`` split, the bounded tile's ``rows`` and
    the ``row_bits`` of its buffers no item holds. ``links``: ``(item, bits per row
    (F,), window)``: the largest sub-tile's rows (beyond the finest split's) of a
    buffer held when ``item`` takes its expensive side, or with ``window`` the input
    rows its window spans at least (``least[r]`` for ``r`` output rows, from
    ``bounds._sub_window_floor``; none are in the budget's own part). ``window``: bits
    per input row of the inputs read from DRAM from outside, and the bits of their
    window the budget and a kept halo already hold ``(F,)``: the window of the
    largest sub-tile holds the rest."""
    top = int(max(1, finest.max(initial=1)))
    m = np.arange(1, top + 1)[None, :]
    sub = -(-rows[:, None] // m)
    finest_sub = -(-rows[:, None] // np.maximum(finest, 1)[:, None])
    extra_rows = np.maximum(0, sub - finest_sub)
    delta = extra_rows * row_bits[:, None]
    if window is not None and least is not None:
        span = least[np.minimum(sub, len(least) - 1)]
        delta = delta + np.maximum(0, span * window[0][:, None] - window[1][:, None])
    ok = (m >= np.maximum(fewest, 1)[:, None]) & (m <= np.maximum(finest, 1)[:, None])
    cost = np.where(ok, (runs[:, None] * m - 1) * weight_bits * read_rate, np.inf)
    out = []
    for other, bits, window in links:
        if window:
            assert least is not None
            span = least[np.minimum(sub, len(least) - 1)]
            out.append((other, (span * bits[:, None]).astype(np.float64)))
        else:
            out.append((other, (extra_rows * bits[:, None]).astype(np.float64)))
    return SubTileChoices(item, position, cost.astype(np.float64), delta.astype(np.float64),
                          tuple(out))


def raise_least_subtiles(best: np.ndarray, e: np.ndarray, h: np.ndarray, forced: np.ndarray,
                         budget: np.ndarray, rows: int, frames: int,
                         pairs: tuple[tuple[int, int], ...], extra: np.ndarray,
                         choices: list[SubTileChoices], every: bool = False) -> np.ndarray:
    """:func:`~stems_opt.formulation.item_cover.raise_least` with each layer's own-row
    weight item one of the choices of ``choices`` (the module's program): per
    signature the least frames are raised until the least is a raised one."""
    def bound_of(k: int) -> float:
        r = slice(k * rows, (k + 1) * rows)
        return frame_bound(e[:, r], h[:, r], forced[:, r], budget[r], pairs,
                           [(c.item, c.position, c.cost[k], c.delta[k],
                             [(o, d[k]) for o, d in c.links]) for c in choices]) + extra[k]

    return raise_frames(best, frames, bound_of, every)


def frame_bound(e: np.ndarray, h: np.ndarray, forced: np.ndarray, budget: np.ndarray,
                pairs: tuple[tuple[int, int], ...], groups: list[tuple],
                limit_s: float = COVER_LIMIT_S) -> float:
    """The program's bound for one frame: the item cover's arrays (as
    :func:`~stems_opt.formulation.item_cover.frame_cover` takes them) with the own-row
    items of ``groups`` (``(item, position, cost (M,), delta (M,), [(other, delta
    (M,))])``) replaced by their choices; ``inf`` when no choice fits."""
    cover = frame_cover(e, h, forced, budget, pairs)
    is_forced = forced.any(axis=1)
    res_of = {own: res for res, own in pairs}
    forced_cost = cover.forced_cost
    replaced: dict[int, tuple] = {}
    for item, pos, cost, delta, links in groups:
        must = bool(is_forced[item])
        if must:
            forced_cost -= float(e[item].max())  # (the group's least cost counts it)
        res = res_of.get(item)
        # A chunked item pays over its resident partner's cost (counted by the partner,
        # forced or not), as in the item cover; when it is forced, its own reads alone.
        paid_res = 0.0 if must or res is None else float(e[res].max())
        opts = []
        for j in np.flatnonzero(np.isfinite(cost)):
            freed = float(cover.hold[item, pos]) - float(delta[j])
            terms = []
            for other, d in links:
                if d[j] <= 0:
                    continue
                if is_forced[other]:  # (through DRAM in every mapping of the frame)
                    freed -= float(d[j])
                else:
                    terms.append((other, float(d[j])))
            opts.append((max(0.0, float(cost[j]) - paid_res), freed, tuple(terms)))
        if not opts and must:
            return math.inf
        replaced[item] = (pos, must, _undominated(opts), None if must else res)
    return forced_cost + _program(cover.cost, cover.hold, cover.need, cover.pairs, replaced,
                                  limit_s)


def _undominated(opts: list[tuple]) -> list[tuple]:
    """The choices no cheaper one frees at least as much as, with no larger link."""
    opts = sorted(opts, key=lambda o: (o[0], -o[1]))
    kept: list[tuple] = []
    for c, f, terms in opts:
        mine = dict(terms)
        if any(f <= kf and all(kd <= mine.get(o, 0.0) for o, kd in kterms)
               for _, kf, kterms in kept):
            continue
        kept.append((c, f, terms))
    return kept


def _program(cost: np.ndarray, hold: np.ndarray, need: np.ndarray,
             links: tuple[tuple[int, int], ...], replaced: dict[int, tuple],
             limit_s: float) -> float:
    """CP-SAT's proven bound of the cover program with the replaced items' choices
    (integers: holds and freed bits rounded up, needs, costs and linked holds down)."""
    icost = np.floor(cost).astype(np.int64)
    ihold = np.ceil(hold).astype(np.int64)
    ineed = np.floor(need).astype(np.int64)
    items = [i for i in range(len(icost)) if i not in replaced and (ihold[i].any() or any(
        res == i for _, _, _, res in replaced.values()))]
    present = set(items)
    # (A linked item in no row and no pair stays cheap in some optimum: its link is 0.)
    groups = tuple((item, pos, must, tuple(
        (math.floor(c), math.ceil(f),
         tuple((o, math.floor(d)) for o, d in terms if o in present and d >= 1))
        for c, f, terms in kept), res)
        for item, (pos, must, kept, res) in sorted(replaced.items()))
    rows = [r for r in range(len(ineed)) if ineed[r] > 0
            or any(pos == r for _, pos, _, _, _ in groups)]
    key = (icost[items].tobytes(), ihold[items][:, rows].tobytes(), ineed[rows].tobytes(),
           tuple(items), tuple(rows), groups, tuple((a, b) for a, b in links if a in present))
    got = _SOLVED.get(key)
    if got is None:
        got = _solve(icost, ihold, ineed, items, groups, links, rows, limit_s)
        if len(_SOLVED) >= SOLVED_CACHE:
            _SOLVED.pop(next(iter(_SOLVED)))
        _SOLVED[key] = got
    return got


def _solve(cost: np.ndarray, hold: np.ndarray, need: np.ndarray, items: list[int],
           groups: tuple, links: tuple[tuple[int, int], ...], rows: list[int],
           limit_s: float) -> float:
    """CP-SAT's proven bound of the program (``inf`` when infeasible)."""
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    x = {i: m.new_bool_var(f"x{i}") for i in items}
    at_row: dict[int, list] = {r: [int(hold[i, r]) * x[i] for i in items if hold[i, r] > 0]
                               for r in rows}
    objective = [int(cost[i]) * v for i, v in x.items() if cost[i]]
    for item, pos, must, kept, res in groups:
        y = [m.new_bool_var(f"y{item}_{j}") for j in range(len(kept))]
        if must:
            m.add_exactly_one(y)
        elif y:
            m.add_at_most_one(y)
            if res is not None and res in x:
                for v in y:
                    m.add_implication(v, x[res])
        for (c, f, terms), v in zip(kept, y, strict=True):
            objective.append(c * v)
            at_row[pos].append(f * v)
            for other, d in terms:
                # Both taken: the sub-tile holds the linked buffer too.
                z = m.new_bool_var(f"z{item}_{other}")
                m.add_bool_or([v.Not(), x[other].Not(), z])
                at_row[pos].append(-d * z)
    for res, own in links:
        if own in x and res in x:
            m.add_implication(x[own], x[res])
    for r in rows:
        m.add(sum(at_row[r]) >= int(need[r]))
    m.minimize(sum(objective))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.cp_model_presolve = False
    solver.parameters.max_deterministic_time = limit_s
    status = solver.solve(m)
    if status == cp_model.INFEASIBLE:
        return math.inf
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return float(solver.best_objective_bound)
    return 0.0
