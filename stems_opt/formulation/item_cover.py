r"""One decision per item across every row of a frame: the capacity bound as a small
integer program (``docs/solver.md``, tightening).

:mod:`~stems_opt.formulation.bounds` bounds a frame by the fractional
knapsack of its worst row: every item (a decision with a cheap and an
expensive side) may free a different share of its hold on every row. But an
item is *one* decision of the frame: a tensor kept on chip holds its rows at
every position from its producer to its last reader, resident weights hold
``|W|`` at every row. A long frame whose rows each overflow by a little
(SEW-ResNet-152's stage 3 at 256 KB: every block's residual tensor and its
``conv3``'s weights cannot all stay) pays at one row in the knapsack, but at
every row in any mapping. So, per frame,

.. math:: \min \Big\{ \sum_i c_i x_i \;:\; \sum_i h_i(r)\, x_i \ge
          \sum_i h_i(r) - B(r) \;\; \forall r,\;\; x_i \in \{0, 1\},\;
          x_{\mathrm{chunked}(l)} \le x_{\mathrm{not\,resident}(l)} \Big\}

with :math:`x_i = 1` for an item taking its expensive side, :math:`h_i(r)`
and :math:`B(r)` the knapsack's holds and budgets, and :math:`c_i` the
largest excess any row charges the item (each row's excess is a lower bound
of the item's expensive side). Any mapping of the frame gives a feasible
:math:`x` (its cheap sides fit at every row) costing at least
:math:`\sum_i c_i x_i`: the items' traffic is disjoint (one item per weight
decision, state, tensor made in the frame, tensor read from outside), except a
layer's two weight items, resident-or-not on the other rows and whole-or-chunked
at its own row. Chunked weights are not resident, so the pair is one choice of
three: resident (0), streamed whole (:math:`c_{res}`), chunked
(:math:`c_{own} \ge c_{res}`); hence the linking row and the chunked item's cost
:math:`c_{own} - c_{res}`. The knapsack of any one row is a relaxation of this
program, so its optimum is at least the worst row's knapsack; it is solved by
CP-SAT in integers (holds rounded up, budgets and costs down: a relaxation),
and its proven bound is what counts (the optimum when solved).

The same program bounds the energy objective, with and without loop nests:
the items and holds are the knapsack's, their excesses in model units. An
item's expensive side costs DRAM traffic at the DRAM rates (each DRAM read
also writes the GB, each write reads it:
:class:`~stems_opt.cost.energy.EnergyRates`), the same disjoint bits as for
traffic; without loop nests one more item per layer, a sub-tile more than the
fewest that fit beside a weight chunk, costs the GB weight reads it adds
(:func:`~stems_opt.formulation.subtile_floor.subtile_item`), which no other
item counts (the chunked weights' item counts their DRAM reads, not the reads
from the GB to the array). The costs no item counts (the forced sub-tiles'
weight reads, a gapped layer's joint weight and input floor) hold whatever the
items take and are added beside the program (``extra`` of
:func:`raise_least`), as beside the knapsack. A binary program pays each item
whole, so it is also at least the row sums of
:mod:`~stems_opt.formulation.row_sum_floor` (each item's shares add up to its
excess); the bound is the larger of both anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: CP-SAT's deterministic time (about seconds) one frame's program may take: its
#: proven bound counts when cut short, the same on every run.
COVER_LIMIT_S = 0.2
#: Programs remembered (by their items, holds and needs), oldest dropped first.
SOLVED_CACHE = 1 << 16
_SOLVED: dict[tuple, float] = {}


@dataclass(frozen=True)
class Cover:
    """The items of one frame: costs ``(items,)``, holds ``(items, rows)`` of the items
    not forced, the rows' needs ``(rows,)`` (bits to free), the forced items' cost, and
    the weight pairs ``(not resident, chunked)`` as item indices."""

    cost: np.ndarray
    hold: np.ndarray
    need: np.ndarray
    forced_cost: float
    pairs: tuple[tuple[int, int], ...]


def frame_cover(e: np.ndarray, h: np.ndarray, forced: np.ndarray, budget: np.ndarray,
                pairs: tuple[tuple[int, int], ...]) -> Cover:
    """The :class:`Cover` of one frame from its knapsack arrays.

    ``e`` and ``forced`` are ``(items, rows)``; ``h`` the holds of the items not forced
    (0 where forced); ``budget`` per row; ``pairs`` the ``(resident, own-row)`` weight
    items of each layer. A forced item takes its expensive side at every row (one
    decision). A pair whose own-row item is forced is chunked: it costs its own-row
    excess alone (at least the resident item's, whose holds were dropped then)."""
    cost = e.max(axis=1) if e.shape[1] else np.zeros(e.shape[0])
    is_forced = forced.any(axis=1)
    pay = cost.copy()
    links = []
    for res, own in pairs:
        if is_forced[own]:
            pay[res] = 0.0  # (chunked: the own-row excess counts the reads)
        else:
            pay[own] = max(0.0, cost[own] - cost[res])
            links.append((res, own))
    forced_cost = float(pay[is_forced].sum())
    pay = np.where(is_forced, 0.0, pay)
    need = h.sum(axis=0) - budget
    return Cover(pay, h, need, forced_cost, tuple(links))


def cover_bound(cover: Cover, limit_s: float = COVER_LIMIT_S) -> float:
    """A lower bound on the program of the module (its optimum when CP-SAT proves it);
    ``inf`` when no choice fits."""
    rows = np.flatnonzero(cover.need > 0)
    if not rows.size:
        return cover.forced_cost
    # Items whose expensive side is free take it (unless a chunked item, which needs its
    # not-resident partner); items that hold nothing where room is needed stay cheap.
    cost = np.floor(cover.cost).astype(np.int64)
    hold = np.ceil(cover.hold[:, rows]).astype(np.int64)
    need = np.floor(cover.need[rows]).astype(np.int64)
    linked = {own for _, own in cover.pairs}
    free = (cost == 0) & np.array([i not in linked for i in range(len(cost))], dtype=bool)
    need = need - hold[free].sum(axis=0)
    keep = np.flatnonzero(need > 0)
    if not keep.size:
        return cover.forced_cost
    hold, need = hold[:, keep], need[keep]
    live = [i for i in range(len(cost)) if not free[i] and hold[i].any()]
    if (hold[live].sum(axis=0) < need).any():
        return math.inf  # no choice of the items frees enough on some row
    # A chunked item taken needs its layer's weights not resident: that item joins the
    # program even where it holds nothing (unless its expensive side is free).
    links = tuple((res, own) for res, own in cover.pairs if own in live and not free[res])
    live = sorted({*live, *(res for res, _ in links)})
    # Signatures and translated intervals often give the same program: solved once.
    key = (cost[live].tobytes(), hold[live].tobytes(), need.tobytes(),
           tuple((live.index(a), live.index(b)) for a, b in links))
    got = _SOLVED.get(key)
    if got is None:
        got = _solve(cost, hold, need, live, links, limit_s)
        if len(_SOLVED) >= SOLVED_CACHE:
            _SOLVED.pop(next(iter(_SOLVED)))
        _SOLVED[key] = got
    return cover.forced_cost + got


def _solve(cost: np.ndarray, hold: np.ndarray, need: np.ndarray, live: list[int],
           links: tuple[tuple[int, int], ...], limit_s: float) -> float:
    """CP-SAT's proven bound of ``min cost x`` over ``hold x >= need`` and ``x_own <=
    x_res`` for each link (items ``live``)."""
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    x = {i: m.new_bool_var(f"x{i}") for i in live}
    for r in range(len(need)):
        m.add(sum(int(hold[i, r]) * x[i] for i in live if hold[i, r] > 0) >= int(need[r]))
    for res, own in links:
        m.add_implication(x[own], x[res])
    m.minimize(sum(int(cost[i]) * v for i, v in x.items()))
    return least_bound(m, limit_s)


def least_bound(model: object, limit_s: float) -> float:
    """CP-SAT's proven lower bound on a small minimisation ``model`` (a
    ``cp_model.CpModel``) within ``limit_s`` of deterministic time: ``inf`` when
    it is infeasible, 0 when nothing was proven."""
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.cp_model_presolve = False  # (a third of the time on these small programs)
    solver.parameters.max_deterministic_time = limit_s
    status = solver.solve(model)
    if status == cp_model.INFEASIBLE:
        return math.inf
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return float(solver.best_objective_bound)
    return 0.0


def raise_least(best: np.ndarray, e: np.ndarray, h: np.ndarray, forced: np.ndarray,
                budget: np.ndarray, rows: int, frames: int,
                pairs: tuple[tuple[int, int], ...], extra: np.ndarray,
                every: bool = False, base: np.ndarray | None = None,
                floor: float = 0.0) -> np.ndarray:
    """Raise the least bounds of each signature's frames to their program's bound.

    ``best`` is the knapsack bound of every (signature, frame) row, signature-major,
    ``frames`` frames per signature and ``rows`` capacity rows per frame; ``e``, ``h``,
    ``forced`` and ``budget`` the knapsack's arrays (items by frame rows); ``extra`` a
    cost per frame no item counts (added to the program's bound). Per signature the
    frame with the least bound is raised, then the next least, until the least is one
    already raised: the least over the frames (the column's bound) is then as high as
    the programs make it, and no other frame is solved (``every``: all are, for the
    tests). Each bound only rises. ``base`` and ``floor``: the frames' order, as
    :func:`raise_frames` takes it.
    """
    def bound_of(k: int) -> float:
        r = slice(k * rows, (k + 1) * rows)
        return cover_bound(frame_cover(e[:, r], h[:, r], forced[:, r], budget[r], pairs)) \
            + extra[k]

    return raise_frames(best, frames, bound_of, every, base=base, floor=floor)


def raise_frames(best: np.ndarray, frames: int, bound_of: Callable[[int], float],
                 every: bool = False, relaxed_of: Callable[[int], float] | None = None,
                 base: np.ndarray | None = None, floor: float = 0.0) -> np.ndarray:
    """Raise each signature's least frame bounds of ``best`` (``frames`` per signature,
    signature-major) to ``bound_of(k)`` until the least is one already raised
    (``every``: raise all finite ones); each bound only rises.

    ``relaxed_of``: a cheaper bound of the same frame, at most ``bound_of``'s when that
    is solved (the program's LP relaxation): a least frame is raised to it first, and to
    ``bound_of`` only when it is still the least. The least over each signature's frames
    is the same (the least frame is raised by ``bound_of`` in the end, and every other
    frame is at most its ``bound_of``), with fewer programs solved: a frame whose
    relaxation lifts it above the least is not solved.

    ``base`` ``(frames,)`` and ``floor``: the frames are least by ``base + max(bound,
    floor)``, the frame bound the column takes (each frame's cheapest choices beside its
    excess, which differ with the tile count and, with loop nests, the time batch; and
    the interval's chunk floors). Least by the excess alone, the frame the column's bound
    comes from was often never raised: SEW-ResNet-152's ``s3_b1_conv3`` at 384 KB with
    loop nests, one tile at ``Tb = 4``, stayed at 80.80 uJ, its program 92.46 (exact).
    Any order gives valid bounds (each frame's is its own)."""
    best = best.copy()
    offset = np.zeros(frames) if base is None else np.asarray(base, dtype=np.float64)

    def raise_frame(k: int) -> None:
        best[k] = max(best[k], bound_of(k))

    for start in range(0, len(best), frames):
        if every:
            for k in range(start, start + frames):
                if np.isfinite(best[k]):
                    raise_frame(k)
            continue
        level = np.zeros(frames, dtype=np.int8)  # 0 as given, 1 relaxed, 2 raised
        while True:
            f = int(np.argmin(np.maximum(best[start:start + frames], floor) + offset))
            if level[f] == 2 or not np.isfinite(best[start + f]):
                break
            if level[f] == 0 and relaxed_of is not None:
                best[start + f] = max(best[start + f], relaxed_of(start + f))
                level[f] = 1
                continue
            raise_frame(start + f)
            level[f] = 2
    return best
