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

*Energy without loop nests.* The GB sends the weights to the array once per
sub-tile and timestep, whether they are held whole or chunked; the frame's bound
counts the ``fewest`` sub-tiles' reads beside the program, and the knapsack has a
one-more-sub-tile item at the layer's row
(:func:`~stems_opt.formulation.subtile_floor.subtile_item`: the fewest sub-tiles'
larger buffers held, or one more read paid). That item
holds the same buffers as ``delta``: beside the choices it counted them twice
(a random frame bounded at 3,162,820 fJ against its optimum 3,154,500). So for
energy the choices replace it: every ``m``, with the weights chunked *or held
whole* (one choice of the group in any case), pays ``(m - fewest) T active |W|``
GB reads, and its largest sub-tile holds ``delta(m)`` beside the whole weights
too, where ``delta`` counts the DRAM inputs' buffer as the larger of the window
floor and the item's own measure, ``ceil(new / m)`` of the tile's new rows (the
cost model holds each buffer's largest sub-tile, ``docs/model.md`` 5). With ``m``
at ``fewest`` the whole choice holds at least the item's cheap side, and a larger
``m`` pays at least its expensive side: the program is at least the item cover's.

*Energy with loop nests.* The GB's operand accesses are the steps' optimal nest
energies, which depend on ``m``: the frame's bound counts each layer's least over
``m >= fewest`` beside the program (``nest_floor.nest_forced_excess``), and every
choice of ``m``, whole or chunked, pays what its own least (over the chunk counts)
adds to that (``nest_floor.nest_sub_tile_excess``). No item is replaced (there is
no one-more-sub-tile item with nests). An option with ``m`` sub-tiles costs at least
its steps' least nest energy at ``m``, so each choice's price is paid by every
mapping taking it.

*The LP relaxation first.* A least frame is raised to its program's LP relaxation
(:func:`_relaxation`, about a tenth of CP-SAT's time) and to the program only while it
is still the least (:func:`~stems_opt.formulation.item_cover.raise_frames`): each
signature's least bound is the same, fewer programs are solved. A column about to be
priced is settled with the programs alone (``ColumnSolver.settle``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np

from stems_opt.formulation.item_cover import (
    COVER_LIMIT_S,
    SOLVED_CACHE,
    frame_cover,
    least_bound,
    raise_frames,
)

#: The own-row weight items' sub-tile choices in the item cover; off only to compare.
SUBTILE_COVER = True
#: Frames are raised to the program's LP relaxation before the program itself
#: (:func:`~stems_opt.formulation.item_cover.raise_frames`); off only to compare.
RELAXED_FIRST = True
#: The LP's optimum is lowered by this share (and one unit) against its tolerances.
LP_MARGIN = 1e-6
_SOLVED: dict[tuple, float] = {}


@dataclass(frozen=True)
class SubTileChoices:
    """The chunked choices of one layer's own-row weight item for every frame row of a
    bound call: ``item`` (the own-row item's index), ``position`` (the layer's row in
    each frame), and per frame and sub-tile count ``m = 1 .. M`` the cost ``(F, M)``
    (``inf`` where ``m`` is not a choice) and ``delta`` ``(F, M)``, the bits the
    largest sub-tile holds beyond the finest split's whatever the items choose;
    ``links``: ``(item, delta (F, M))``, bits it holds beyond that when ``item`` takes
    its expensive side (a tensor through DRAM, whose rows the tile on chip held).
    For energy without loop nests, ``whole`` ``(F, M)``: the cost of the weights held
    whole with ``m`` sub-tiles (their GB reads past the fewest's; ``inf`` where ``m``
    is not a choice), which ``cost`` also counts beside the DRAM reads, and ``drop``:
    the one-more-sub-tile item (``subtile_floor.subtile_item``) the choices replace."""

    item: int
    position: int
    cost: np.ndarray
    delta: np.ndarray
    links: tuple[tuple[int, np.ndarray], ...] = ()
    whole: np.ndarray | None = None
    drop: int | None = None


def subtile_choices(item: int, position: int, runs: np.ndarray, fewest: np.ndarray,
                    finest: np.ndarray, rows: np.ndarray, row_bits: np.ndarray,
                    weight_bits: int, read_rate: int,
                    links: list[tuple[int, np.ndarray, bool]] = (),
                    least: np.ndarray | None = None,
                    window: tuple[np.ndarray, np.ndarray] | None = None,
                    sub_read: np.ndarray | None = None,
                    drop: int | None = None,
                    fresh: tuple[np.ndarray, np.ndarray] | None = None) -> SubTileChoices:
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
    largest sub-tile holds the rest. ``sub_read``: for energy without loop nests, the
    GB weight reads of one sub-tile more per frame ``(F,)`` (model units), which every
    choice of ``m`` pays ``m - fewest`` times, weights whole or chunked; with loop
    nests, ``(F, M)``: what each ``m`` adds to the layer's nest energy over its least at
    ``m >= fewest`` (model units), paid likewise (no item is dropped); ``drop`` the
    one-more-sub-tile item they replace; ``fresh``: the tile's new rows of its DRAM
    inputs and their bits per row ``(F,)``: the largest sub-tile's share of them,
    ``ceil(new / m)`` rows, is a floor of the same buffer as its window (the cost
    model holds the most new rows of any sub-tile, ``docs/model.md`` 5), so the larger
    of both counts (the one-more-sub-tile item's measure)."""
    top = int(max(1, finest.max(initial=1)))
    m = np.arange(1, top + 1)[None, :]
    sub = -(-rows[:, None] // m)
    finest_sub = -(-rows[:, None] // np.maximum(finest, 1)[:, None])
    extra_rows = np.maximum(0, sub - finest_sub)
    delta = extra_rows * row_bits[:, None]
    inputs = np.zeros_like(delta)
    if window is not None and least is not None:
        span = least[np.minimum(sub, len(least) - 1)]
        inputs = np.maximum(0, span * window[0][:, None] - window[1][:, None])
    if fresh is not None:
        new, bits = fresh[0][:, None], fresh[1][:, None]
        more = (-(-new // m) - -(-new // np.maximum(finest, 1)[:, None])) * bits
        inputs = np.maximum(inputs, np.where(rows[:, None] > 0, more, 0))
    delta = delta + inputs
    ok = (m >= np.maximum(fewest, 1)[:, None]) & (m <= np.maximum(finest, 1)[:, None])
    cost = np.where(ok, (runs[:, None] * m - 1) * weight_bits * read_rate, np.inf)
    whole = None
    if sub_read is not None:  # (per frame, or with loop nests per frame and m)
        price = sub_read if sub_read.ndim == 2 else \
            (m - np.maximum(fewest, 1)[:, None]) * sub_read[:, None]
        gb = np.where(ok, price, np.inf)
        cost, whole = cost + gb, gb.astype(np.float64)
    out = []
    for other, bits, window in links:
        if window:
            assert least is not None
            span = least[np.minimum(sub, len(least) - 1)]
            out.append((other, (span * bits[:, None]).astype(np.float64)))
        else:
            out.append((other, (extra_rows * bits[:, None]).astype(np.float64)))
    return SubTileChoices(item, position, cost.astype(np.float64), delta.astype(np.float64),
                          tuple(out), whole, drop)


def raise_least_subtiles(best: np.ndarray, e: np.ndarray, h: np.ndarray, forced: np.ndarray,
                         budget: np.ndarray, rows: int, frames: int,
                         pairs: tuple[tuple[int, int], ...], extra: np.ndarray,
                         choices: list[SubTileChoices], every: bool = False,
                         relaxed_first: bool = True, base: np.ndarray | None = None,
                         floor: float = 0.0) -> np.ndarray:
    """:func:`~stems_opt.formulation.item_cover.raise_least` with each layer's own-row
    weight item one of the choices of ``choices`` (the module's program): per
    signature the least frames are raised until the least is a raised one, through
    their LP relaxation first (``relaxed_first`` and :data:`RELAXED_FIRST`), least by
    ``base + max(bound, floor)`` (:func:`~stems_opt.formulation.item_cover.raise_frames`)."""
    def bound_of(k: int, relaxed: bool = False) -> float:
        r = slice(k * rows, (k + 1) * rows)
        return frame_bound(e[:, r], h[:, r], forced[:, r], budget[r], pairs,
                           [(c.item, c.position, c.cost[k], c.delta[k],
                             [(o, d[k]) for o, d in c.links],
                             None if c.whole is None else c.whole[k], c.drop)
                            for c in choices], relaxed=relaxed) + extra[k]

    return raise_frames(best, frames, bound_of, every,
                        partial(bound_of, relaxed=True) if RELAXED_FIRST and relaxed_first
                        else None, base, floor)


def frame_bound(e: np.ndarray, h: np.ndarray, forced: np.ndarray, budget: np.ndarray,
                pairs: tuple[tuple[int, int], ...], groups: list[tuple],
                limit_s: float = COVER_LIMIT_S, relaxed: bool = False) -> float:
    """The program's bound for one frame: the item cover's arrays (as
    :func:`~stems_opt.formulation.item_cover.frame_cover` takes them) with the own-row
    items of ``groups`` (``(item, position, cost (M,), delta (M,), [(other, delta
    (M,))])``, optionally followed by ``whole (M,)`` and ``drop``, as in
    :class:`SubTileChoices`) replaced by their choices; ``inf`` when no choice fits.
    ``relaxed``: the optimum of the program's LP relaxation instead (a bound at most
    the program's optimum, in about a tenth of the time)."""
    cover = frame_cover(e, h, forced, budget, pairs)
    is_forced = forced.any(axis=1)
    res_of = {own: res for res, own in pairs}
    forced_cost = cover.forced_cost
    hold, need = cover.hold, cover.need
    replaced: dict[int, tuple] = {}
    for group in groups:
        item, pos, cost, delta, links, whole, drop = (*group, None, None)[:7]
        must = bool(is_forced[item])
        if must:
            forced_cost -= float(e[item].max())  # (the group's least cost counts it)
        if drop is not None:
            # The choices hold the sub-tiles' buffers (at least the item's hold with the
            # fewest) and pay their GB reads: the one-more-sub-tile item, which holds and
            # pays the same, leaves the program. (Forced, its cheap side overflows the
            # row alone, and so does the fewest's choice.)
            if is_forced[drop]:
                forced_cost -= float(e[drop].max())
            else:
                need = need - hold[drop]
                hold = hold.copy()
                hold[drop] = 0.0
        res = res_of.get(item)
        # A chunked item pays over its resident partner's cost (counted by the partner,
        # forced or not), as in the item cover; when it is forced, its own reads alone.
        paid_res = 0.0 if must or res is None else float(e[res].max())
        opts = [_option(max(0.0, float(cost[j]) - paid_res),
                        float(cover.hold[item, pos]) - float(delta[j]), j, links, is_forced,
                        True) for j in np.flatnonzero(np.isfinite(cost))]
        if whole is not None and not must:  # (held whole: with the sub-tiles' buffers)
            opts += [_option(float(whole[j]), -float(delta[j]), j, links, is_forced, False)
                     for j in np.flatnonzero(np.isfinite(whole))]
        if not opts and (must or whole is not None):
            return math.inf
        replaced[item] = (pos, must or whole is not None, _undominated(opts),
                          None if must else res)
    return forced_cost + _program(cover.cost, hold, need, cover.pairs, replaced, limit_s,
                                  relaxed)


def _option(cost: float, freed: float, j: int, links: list[tuple], is_forced: np.ndarray,
            chunked: bool) -> tuple:
    """One choice ``(cost, freed, linked terms, chunked)`` at sub-tile index ``j``: a
    linked buffer whose item is forced through DRAM is held in every mapping."""
    terms = []
    for other, d in links:
        if d[j] <= 0:
            continue
        if is_forced[other]:  # (through DRAM in every mapping of the frame)
            freed -= float(d[j])
        else:
            terms.append((other, float(d[j])))
    return cost, freed, tuple(terms), chunked


def _undominated(opts: list[tuple]) -> list[tuple]:
    """The choices no cheaper one frees at least as much as, with no larger link (a
    chunked choice, which needs the weights not resident, does not rule out a whole
    one)."""
    opts = sorted(opts, key=lambda o: (o[0], -o[1], o[3]))
    kept: list[tuple] = []
    for c, f, terms, chunked in opts:
        mine = dict(terms)
        if any(f <= kf and (chunked or not kc) and all(kd <= mine.get(o, 0.0)
                                                       for o, kd in kterms)
               for _, kf, kterms, kc in kept):
            continue
        kept.append((c, f, terms, chunked))
    return kept


def _program(cost: np.ndarray, hold: np.ndarray, need: np.ndarray,
             links: tuple[tuple[int, int], ...], replaced: dict[int, tuple],
             limit_s: float, relaxed: bool = False) -> float:
    """CP-SAT's proven bound of the cover program with the replaced items' choices
    (integers: holds and freed bits rounded up, needs, costs and linked holds down);
    ``relaxed``: its LP relaxation's optimum (:func:`_relaxation`)."""
    icost = np.floor(cost).astype(np.int64)
    ihold = np.ceil(hold).astype(np.int64)
    ineed = np.floor(need).astype(np.int64)
    items = [i for i in range(len(icost)) if i not in replaced and (ihold[i].any() or any(
        res == i for _, _, _, res in replaced.values()))]
    present = set(items)
    # (A linked item in no row and no pair stays cheap in some optimum: its link is 0.)
    groups = tuple((item, pos, one, tuple(
        (math.floor(c), math.ceil(f),
         tuple((o, math.floor(d)) for o, d in terms if o in present and d >= 1), chunked)
        for c, f, terms, chunked in kept), res)
        for item, (pos, one, kept, res) in sorted(replaced.items()))
    rows = [r for r in range(len(ineed)) if ineed[r] > 0
            or any(pos == r for _, pos, _, _, _ in groups)]
    key = (icost[items].tobytes(), ihold[items][:, rows].tobytes(), ineed[rows].tobytes(),
           tuple(items), tuple(rows), groups, tuple((a, b) for a, b in links if a in present),
           relaxed)
    got = _SOLVED.get(key)
    if got is None:
        got = _relaxation(icost, ihold, ineed, items, groups, links, rows) if relaxed \
            else _solve(icost, ihold, ineed, items, groups, links, rows, limit_s)
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
    for item, pos, one, kept, res in groups:
        y = [m.new_bool_var(f"y{item}_{j}") for j in range(len(kept))]
        if one:  # (chunked when the weights cannot be whole; or a choice of m in any case)
            m.add_exactly_one(y)
        elif y:
            m.add_at_most_one(y)
        if res is not None and res in x:
            for (*_, chunked), v in zip(kept, y, strict=True):
                if chunked:
                    m.add_implication(v, x[res])
        for (c, f, terms, _), v in zip(kept, y, strict=True):
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
    return least_bound(m, limit_s)


def _relaxation(cost: np.ndarray, hold: np.ndarray, need: np.ndarray, items: list[int],
                groups: tuple, links: tuple[tuple[int, int], ...], rows: list[int]) -> float:
    """The optimum of the LP relaxation of :func:`_solve`'s program (HiGHS), lowered by
    :data:`LP_MARGIN` against its tolerances; 0 when not solved to optimality (an LP
    found infeasible within tolerances is left to the program). Each ``z`` (a choice
    and a linked item both taken) is at least ``y + x - 1``, as the program's clause
    makes it."""
    import highspy

    from stems_opt.formulation.quiet import quiet_stdout

    cols: list[float] = []  # objective per variable
    lines: list[tuple[list[tuple[int, float]], float, float]] = []  # (terms, lower, upper)
    at_row: dict[int, list[tuple[int, float]]] = {r: [] for r in rows}

    def var(c: float) -> int:
        cols.append(c)
        return len(cols) - 1

    x = {i: var(float(cost[i])) for i in items}
    for i, v in x.items():
        for r in rows:
            if hold[i, r] > 0:
                at_row[r].append((v, float(hold[i, r])))
    for _, pos, one, kept, res in groups:
        ys = []
        for c, f, terms, chunked in kept:
            y = var(float(c))
            ys.append(y)
            at_row[pos].append((y, float(f)))
            if chunked and res is not None and res in x:
                lines.append(([(y, 1.0), (x[res], -1.0)], -math.inf, 0.0))
            for other, d in terms:
                z = var(0.0)
                at_row[pos].append((z, -float(d)))
                lines.append(([(z, 1.0), (y, -1.0), (x[other], -1.0)], -1.0, math.inf))
        if one and not ys:
            return math.inf
        if ys:
            lines.append(([(y, 1.0) for y in ys], 1.0 if one else -math.inf, 1.0))
    for res, own in links:
        if own in x and res in x:
            lines.append(([(x[own], 1.0), (x[res], -1.0)], -math.inf, 0.0))
    lines = [(at_row[r], float(need[r]), math.inf) for r in rows] + lines
    inf = highspy.kHighsInf
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(cols), len(lines)
    lp.col_cost_ = np.array(cols)
    lp.col_lower_, lp.col_upper_ = np.zeros(len(cols)), np.ones(len(cols))
    lp.row_lower_ = np.array([lo if lo > -math.inf else -inf for _, lo, _ in lines])
    lp.row_upper_ = np.array([hi if hi < math.inf else inf for _, _, hi in lines])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = np.cumsum([0] + [len(t) for t, _, _ in lines], dtype=np.int32)
    lp.a_matrix_.index_ = np.array([v for t, _, _ in lines for v, _ in t], dtype=np.int32)
    lp.a_matrix_.value_ = np.array([a for t, _, _ in lines for _, a in t], dtype=np.float64)
    with quiet_stdout():  # (the first instance prints a banner)
        h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return 0.0
    value = float(h.getInfo().objective_function_value)
    return max(0.0, value * (1 - LP_MARGIN) - 1.0)
