"""The row knapsacks of a frame added up: decisions that matter at one row only add.

The capacity-aware frame bound (:func:`~stems_opt.formulation.bounds.frames_excess_bounds`)
solves, for every capacity row of a frame, a fractional knapsack over the
frame's decisions (items: an excess for the expensive side, a hold for the
cheap side) and takes the *largest* row. Where several layers of a frame
each overflow their own row and each frees it by a decision that holds
nothing elsewhere (one more sub-tile of a layer, its weights chunked at its
own row), every mapping pays for all of them, but the largest row counts
one. SEW-ResNet-152's fused first stage at 2 MB is the case: four layers
each need a second sub-tile (34 nJ of GB weight reads each), the largest row
saw 31 nJ, and the 15-layer column stayed 70 nJ below the layer-by-layer
mapping it could not beat.

A lower bound that adds the rows (a Lagrangian decomposition of the frame's
covering problem): give each item's excess to the rows where it holds
something, a share ``e / r`` to each of its ``r`` rows. Any mapping's item
choices are feasible in every row's knapsack, and an item taken expensive
pays ``e`` in full, which is at least its shares summed; so the sum over the
rows of the knapsacks with shares is at most the mapping's excess. An item
held at one row only (the sub-tile item, the chunked weights at their own
row) keeps its whole excess there, and the rows add. Items forced expensive
(their cheap side overflows a row alone) are counted once, at the largest
row of them. The frame's bound is the larger of this and the largest row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: ``knapsack(e, h, need)``: per row (column), the fractional knapsack that frees
#: ``need`` bits of the holds ``h`` at the least excess ``e``.
Knapsack = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def cover_rows(e: np.ndarray, h: np.ndarray, need: np.ndarray, knapsack: Knapsack,
               whole: np.ndarray) -> np.ndarray:
    """Per row (column of ``e`` and ``h``), a lower bound on the least excess of the
    items taken expensive to free ``need > 0`` bits, at least the fractional
    knapsack's.

    ``whole`` marks the items that cost their whole excess as soon as any
    part of their hold is freed (one more sub-tile: it reads the weights
    once more however little it frees); the others may free their hold in
    part at a part of the cost, as the fractional knapsack assumes. A mapping
    either frees some of a whole item that holds ``need`` or more (*big*),
    and pays its excess, or frees the row with the other items, at least
    their fractional knapsack (infinite when they cannot free ``need``
    together). So the least excess is at least the less of the cheapest big
    item and that knapsack. Each is at least the fractional knapsack over
    all items (a big item alone is a solution of it; fewer items cost more),
    and where a second sub-tile is the cheap way out it is counted whole, not
    the fraction the overflow needs.
    """
    big = (h >= need[None, :]) & whole[:, None]
    cheapest_big = np.where(big, e, np.inf).min(axis=0, initial=np.inf)
    small_h = np.where(big, 0.0, h)
    enough = small_h.sum(axis=0) >= need
    small = np.full(need.shape, np.inf)
    if enough.any():
        small[enough] = knapsack(np.where(big, 0.0, e)[:, enough], small_h[:, enough],
                                 need[enough])
    out = np.minimum(cheapest_big, small)
    # No set frees the row (the frame has no mapping): any value bounds it; keep the
    # fractional knapsack's, as the largest row does.
    stuck = ~np.isfinite(out)
    if stuck.any():
        out[stuck] = knapsack(e[:, stuck], h[:, stuck], need[stuck])
    return out


def row_floor_excess(e: np.ndarray, h: np.ndarray, forced_excess: np.ndarray,
                     need: np.ndarray, frame_rows: int, knapsack: Knapsack,
                     whole_items: Sequence[int] = (), unshared: Sequence[int] = (),
                     row_knapsack: np.ndarray | None = None) -> np.ndarray:
    """Per frame, the larger of the largest row and the rows added up
    (:func:`row_sum_excess`), each row's knapsack by :func:`cover_rows` with the
    items ``whole_items`` (indices) paid whole; the items ``unshared`` count
    nothing in the sum (see :func:`row_sum_excess`). ``row_knapsack``: each
    row's fractional knapsack when already known (rows without a big whole
    item keep it)."""
    items, rows = h.shape
    whole = np.zeros(items, dtype=bool)
    whole[list(whole_items)] = True
    frames = rows // frame_rows
    over = need > 0
    largest = largest_row_excess(e, h, forced_excess, need, frame_rows, knapsack, whole_items,
                                 row_knapsack)
    # The sum exceeds the largest row only where two rows or more overflow.
    several = np.repeat(over.reshape(frames, frame_rows).sum(axis=1) > 1, frame_rows)
    if not several.any() or not items:
        return largest
    free = np.zeros(items, dtype=bool)
    free[list(unshared)] = True
    out = largest.copy()
    pick = np.flatnonzero(several.reshape(frames, frame_rows)[:, 0])
    cols = several
    added = row_sum_excess(e[:, cols], h[:, cols], forced_excess[cols], need[cols], frame_rows,
                           knapsack, whole, free)
    out[pick] = np.maximum(largest[pick], added)
    return out


def largest_row_excess(e: np.ndarray, h: np.ndarray, forced_excess: np.ndarray,
                       need: np.ndarray, frame_rows: int, knapsack: Knapsack,
                       whole_items: Sequence[int] = (),
                       row_knapsack: np.ndarray | None = None) -> np.ndarray:
    """Per frame, the largest row's excess, each row's knapsack by :func:`cover_rows`
    with the items ``whole_items`` paid whole (arguments as
    :func:`row_floor_excess`). At least the fractional knapsack's largest row."""
    items, rows = h.shape
    whole = np.zeros(items, dtype=bool)
    whole[list(whole_items)] = True
    over = need > 0
    extra = np.zeros(rows)
    if row_knapsack is not None:
        extra[over] = row_knapsack[over]
    # Only rows where a whole item alone frees the row can rise above the knapsack.
    redo = over & ((h >= need[None, :]) & whole[:, None]).any(axis=0) \
        if row_knapsack is not None else over
    if redo.any() and items:
        extra[redo] = cover_rows(e[:, redo], h[:, redo], need[redo], knapsack, whole)
    return (forced_excess + extra).reshape(rows // frame_rows, frame_rows).max(axis=1)


def row_sum_excess(e: np.ndarray, h: np.ndarray, forced_excess: np.ndarray,
                   need: np.ndarray, frame_rows: int, knapsack: Knapsack,
                   whole: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Per frame, the excess of every row's knapsack added up, items shared by rows.

    An item's shares must add up to at most what the decision behind it
    costs. Two items of one decision would each take a full share: the
    weights are one item on the other rows (resident or not) and one at
    their own row (held whole or chunked), and chunking pays the larger of
    the two excesses, not their sum. So the own-row item of each pair is
    ``free`` here (no share: it frees its row at no cost), and the other
    keeps its shares.

    Parameters
    ----------
    e, h
        ``(items, rows)`` excess and hold of the items not forced (hold 0 where
        forced), rows in blocks of ``frame_rows`` per frame.
    forced_excess
        ``(rows,)`` excess of the forced decisions at each row (counted once per
        frame: the largest row).
    need
        ``(rows,)`` bits each row must free (positive where it overflows).
    knapsack, whole
        The fractional knapsack of ``bounds`` and the items paid whole (each
        row's knapsack is :func:`cover_rows`).

    Returns
    -------
    numpy.ndarray
        ``(frames,)`` lower bound on each frame's excess (float).
    """
    items, rows = h.shape
    frames = rows // frame_rows
    once = forced_excess.reshape(frames, frame_rows).max(axis=1)
    over = np.flatnonzero(need > 0)
    if not over.size or not items:
        return once
    held = h > 0
    spread = held.reshape(items, frames, frame_rows).sum(axis=2)  # rows each item holds
    per_row = np.repeat(np.maximum(spread, 1), frame_rows, axis=1)
    share = np.where(held[:, over] & ~free[:, None], e[:, over] / per_row[:, over], 0.0)
    extra = np.zeros(rows)
    extra[over] = cover_rows(share, h[:, over], need[over], knapsack, whole)
    return once + extra.reshape(frames, frame_rows).sum(axis=1)
