"""The search's side of a column helper (``column_helper.py``): bounds tightened
elsewhere raised by key, this process's share tightened least path first, the bound
raised until the deadline, and the helper's own loop.

A part of :class:`stems_opt.formulation.columns.ColumnSolver` (``docs/solver.md``,
"Columns tightened on the second core")."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from stems_opt.formulation.column_base import (
    LOG,
    TIE_BATCH,
    Column,
    MasterStoppedError,
    Signature,
)
from stems_opt.stopping import SearchStoppedError

if TYPE_CHECKING:
    from stems_opt.formulation.master import TieBudget

HELPED_SHARE = 0.35
"""Most share of the search so far that rounds of columns beside a helper take in all:
they almost all rise (every column is tightened once), so ``TieBudget`` would let them
run at every master, and the pricing that proves the mapping waits (SEW-ResNet-152
energy at 384 KB under 60 s: proven in 56.0 and 56.9 s; without the share, its mapping
optimal but a gap of 0.004 % at the limit)."""
HELPED_ROUND_S = 0.5
"""Most seconds a round of columns to tighten takes beside a helper
(:attr:`ColumnSolver.column_source`): the helper's bounds, and the round's, reach the
master's bound at the next master."""
HELPER_BATCH = 200
"""Columns the helper tightens between two of its master passes (and sends at once)."""

Raised = tuple[int, int, Signature, float]
"""A column tightened: ``(first, last, signature, bound)`` (model units; ``inf``: no
frame of the column fits)."""


def raised_bounds(cols: list[Column], before: list[float]) -> list[Raised]:
    """The columns of ``cols`` whose bound rose from ``before`` (or that turned out to
    have no segment), as sent to the other process."""
    return [(c.first, c.last, c.sig, math.inf if c.exact and c.value is None else c.bound)
            for c, b in zip(cols, before, strict=True)
            if c.bound > b or (c.exact and c.value is None)]


class HelpedMixin:
    """Working with a column helper (a mixin of ``ColumnSolver``)."""

    def tighten_share(self, send: Callable[[list[Raised]], None],
                      takes: Callable[[Column], bool]) -> None:
        """The helper's loop: open the intervals the search opens, then tighten the
        columns ``takes`` least path first, :data:`HELPER_BATCH` at a time, sending
        what rose after each batch, until none is left."""
        self._open_lengths(min(self.max_len, self._budget_len))  # (as the search: budget)
        self.column_sink = send
        done = self._from_elsewhere  # (the search's own, tightened there)

        def mine(col: Column) -> bool:
            return col.rank not in done and takes(col)

        while True:
            self._columns_arrived()
            if self.master_path() is None:
                break
            cols = self.master_through(HELPER_BATCH, math.inf, mine)
            if not cols:
                break
            self._tighten_told(cols, math.inf)

    def bound_until(self, end: float) -> float:
        """With a helper (:attr:`column_source`), after the answer: raise the bound until
        ``end`` (``time.perf_counter``), the helper's bounds and this process's share
        tightened as in :meth:`solve`, then one last master; the bound (model units).
        Nothing when the master's graph would have to be built again (seconds on a
        deep network); a stop request ends it with the bound so far."""
        # (a stop requested meanwhile, Ctrl-C: the bound so far)
        with contextlib.suppress(MasterStoppedError, SearchStoppedError):
            while self.column_source is not None and self._graph is not None \
                    and self._graph.columns == len(self.columns):
                left = end - time.perf_counter()
                if left <= 0:
                    break
                self._columns_arrived()
                res = self.master_path()
                if res is None:
                    break
                self._raise_lower(res[2])
                ties = self._ties(TIE_BATCH)
                if not ties:  # (this process's share is done: the helper's may still come)
                    time.sleep(min(0.05, left))
                    continue
                self._tighten_told(ties, min(HELPED_ROUND_S, left))
        self._last_master()
        return self._lower

    def _last_master(self) -> None:
        """With a helper (:attr:`column_source`), one more master once the search has
        stopped: the bounds that arrived since the last one count too (a pass over the
        built graph takes tens of milliseconds; none once the deadline has passed, nor
        when the graph would have to be built again: 2 s limits overran by a tenth
        of a second on SEW-ResNet-152, building it)."""
        if self.column_source is None or self.master_mip or self._graph is None \
                or self._graph.columns != len(self.columns):
            return
        self._columns_arrived()
        with contextlib.suppress(MasterStoppedError, SearchStoppedError):
            res = self.master_path()
            if res is not None:
                self._raise_lower(res[2])
                self._report(self._lower)

    def _round_s(self, budget: TieBudget, elapsed_s: float,
                 left_s: float | None = None) -> float:
        """Seconds the next round of columns to tighten may take, ``elapsed_s`` into the
        search with ``left_s`` of its share left (a round past it counts nowhere): what
        ``budget`` allows, and beside a helper at most :data:`HELPED_ROUND_S` (its
        bounds, and the round's, count from the next master on) and what keeps all
        rounds within :data:`HELPED_SHARE` of the search."""
        seconds = budget.seconds(elapsed_s) if left_s is None \
            else min(budget.seconds(elapsed_s), left_s)
        if self.helper_takes is None:
            return seconds
        return min(seconds, HELPED_ROUND_S, HELPED_SHARE * elapsed_s - budget.spent_s)

    def _ties(self, limit: int) -> list[Column]:
        """Columns to tighten next beside the master's path: up to ``limit`` tied with
        it (:meth:`master_ties`), or with a helper (:attr:`column_source`) this
        process's share of every column least path first (:meth:`master_through`)."""
        if self.helper_takes is None:
            return self.master_ties(limit)
        takes, done = self.helper_takes, self._from_elsewhere
        return self.master_through(limit, math.inf,
                                   lambda c: c.rank not in done and not takes(c))

    def _tighten_told(self, cols: list[Column], seconds: float) -> tuple[int, int]:
        """:meth:`_tighten_for` (how many tightened and rose), and what rose sent to the
        other process (:meth:`_tell_helper`)."""
        before = [c.bound for c in cols]
        got = self._tighten_for(cols, seconds)
        self._tell_helper(cols, before)
        return got

    def _tell_helper(self, cols: list[Column], before: list[float]) -> None:
        """Send :attr:`column_sink` the columns of ``cols`` whose bound rose from
        ``before`` (``inf``: no frame fits)."""
        if self.column_sink is not None:
            self.column_sink(raised_bounds(cols, before))

    def _columns_arrived(self) -> None:
        """Raise the columns whose tightened bounds arrived from elsewhere
        (:attr:`column_source`; ``inf``: no frame of the column fits)."""
        if self.column_source is None:
            return
        arrived = self.column_source()
        for first, last, sig, bound in arrived:
            col = self._by_key.get((first, last, sig))
            if col is None or col.exact or bound <= col.bound:
                continue
            if bound == math.inf:
                if col.upper is not None:  # (a segment fits: never so; kept safe)
                    continue
                col.exact, col.value = True, None
            else:
                col.bound = bound
            self.touch(col)
            self._from_elsewhere.add(col.rank)
            self.stats["columns_helped"] = self.stats.get("columns_helped", 0) + 1
        if arrived:
            LOG.debug("helped: %d", self.stats.get("columns_helped", 0))
