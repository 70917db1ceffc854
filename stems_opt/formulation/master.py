"""The master: one column per segment, as a shortest path over boundary states or as a MIP of
the backend.

A part of :class:`stems_opt.formulation.columns.ColumnSolver` (``docs/solver.md``)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from stems_opt.formulation.backend import SolveOptions
from stems_opt.formulation.column_base import (
    TIE_BATCH,
    TIE_S,
    TIE_SHARE,
    Column,
    MasterStoppedError,
    Signature,
)
from stems_opt.formulation.model import LinearModel

_UNPRICED = object()
"""A price not yet in the master's cache (``None`` is a price: no segment)."""

TIE_GROWTH_MAX = 256
"""Most a round of tied columns grows (times ``TIE_BATCH`` and ``TIE_S``)."""
TIE_USEFUL = 0.25
"""Share of a round's tied columns that must rise for the next round to grow."""
TIE_USEFUL_MIN = 25
"""Fewest tied columns that must rise for a round to be useful."""
PATH_ARRAYS = True
"""The master's paths (every price mode) and tied columns over arrays of its transitions
(:class:`PathGraph`); off only to compare (the same labels, paths and ties, tested)."""


@dataclass
class TieBudget:
    """How many tied columns (:meth:`MasterMixin.master_ties`) a round tightens, and for
    how long.

    A round may take ``TIE_S`` seconds and ``TIE_BATCH`` columns, times a
    growth that doubles after a *useful* round, where at least ``TIE_USEFUL``
    of the columns rose and at least ``TIE_USEFUL_MIN`` of them (a round cut
    short by its seconds counts what it tried), and
    falls back to 1 otherwise. A round after a useful one always runs; the
    others only while the rounds that were not useful took at most
    ``TIE_SHARE`` of the search so far. Where the buffer binds
    along a deep chain (SEW-ResNet-152 below 1 MB) most tied columns rise and
    tens of thousands must before the master's bound moves; where it does
    not (SEW-ResNet-18 at 1 MB) a round is a few columns, and a proof pricing
    a few columns does not wait for them.
    """

    growth: int = 1
    charged_s: float = 0.0
    spent_s: float = 0.0  # (every round's seconds, useful or not)

    def seconds(self, elapsed_s: float) -> float:
        """Seconds the next round may take, ``elapsed_s`` into the search."""
        if self.growth > 1:
            return TIE_S * self.growth
        return min(TIE_S, TIE_SHARE * elapsed_s - self.charged_s)

    def batch(self) -> int:
        """Columns the next round may take."""
        return TIE_BATCH * self.growth

    def record(self, tried: int, rose: int, spent_s: float) -> None:
        """A round tightened ``tried`` columns, ``rose`` of them rose, in ``spent_s``."""
        # (A few columns rising says little. A round cut by its seconds, not its batch,
        # is judged on what it tried: SEW-ResNet-152 at 384 KB tightens about 60 tied
        # columns a second, and 87 of 101 rising is a useful round.)
        grow = rose >= TIE_USEFUL * tried and rose >= TIE_USEFUL_MIN
        self.growth = min(TIE_GROWTH_MAX, 2 * self.growth) if grow else 1
        self.charged_s += 0.0 if grow else spent_s
        self.spent_s += spent_s


@dataclass
class PathGraph:
    """Every transition of the master's shortest path over boundary states, as arrays:
    the master's passes in every price mode (:meth:`MasterMixin.master_path`) and its
    tied columns (:meth:`MasterMixin.master_ties`) without a Python loop over
    transitions.

    A node is a boundary ``k`` and a state reachable from the start through any
    columns (whatever their prices); an edge is a column from a node and one of its
    next states (:meth:`MasterMixin._next_states`). Within a boundary, nodes are
    numbered in sorted state order, as the loop visits them. Built once per set of
    columns; the prices of each mode are refreshed for the columns touched since its
    last pass."""

    columns: int  # how many columns it was built for
    node_k: np.ndarray  # (nodes,) boundary of each node
    states: list[tuple]  # state of each node
    into: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per boundary: (src, col, dst)
    out_of: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per boundary: (src, col, dst)
    end: int  # the node (L, ()), -1 when none
    # Per price mode ("bound", "primal", "exact"): each column's price (inf: none), made
    # at the mode's first pass; the columns touched since its last pass; its labels
    # (least cost to reach each node, its last column, the node it left from).
    price: dict[str, np.ndarray] = field(default_factory=dict)
    dirty: dict[str, set[int]] = field(default_factory=lambda: {
        "bound": set(), "primal": set(), "exact": set()})
    labels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict)


def _labelled(graph: PathGraph | None) -> bool:
    """Whether ``graph`` has the labels of a bound pass that reached the end."""
    return graph is not None and "bound" in graph.labels and graph.end >= 0 \
        and graph.labels["bound"][0][graph.end] < math.inf


def _arrays(triples: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(src, col, dst)`` index arrays of a list of edges."""
    got = np.array(triples, dtype=np.int64).reshape(-1, 3)
    return got[:, 0].copy(), got[:, 1].copy(), got[:, 2].copy()


class MasterMixin:
    """The master (a mixin of ``ColumnSolver``)."""

    def master(self, exact_only: bool = False,
               time_limit_s: float | None = None) -> tuple[list[Column], float, float] | None:
        """Solve the master over the columns (at their bound or exact value).

        Returns the chosen columns, the objective and the backend's bound, or
        ``None`` when no cover exists.
        """
        if exact_only:  # segments actually found, at their values: a feasible mapping
            cols = [c for c in self.columns if c.upper is not None]
            prices = [c.upper for c in cols]
        else:
            cols = [c for c in self.columns if not (c.exact and c.value is None)]
            prices = [c.price for c in cols]
        lm = LinearModel()
        L = len(self.net.layers)
        z = [lm.var(f"z[{c.first},{c.last},{k}]", round(p))
             for k, (c, p) in enumerate(zip(cols, prices, strict=True))]
        cut = {k: lm.var(f"c[{k}]") for k in range(1, L)}
        w: dict[tuple[str, int], int] = {}
        for X in self.ctx.whole_candidates:
            for k in range(self.producer[X] + 1, self.last_consumer[X] + 1):
                w[(X, k)] = lm.var(f"w[{X},{k}]")
        by_layer: list[list[int]] = [[] for _ in range(L)]
        starts: dict[int, list[int]] = {}
        for c, var in zip(cols, z, strict=True):
            for i in range(c.first, c.last + 1):
                by_layer[i].append(var)
            if c.first > 0:
                starts.setdefault(c.first, []).append(var)
        for i, idx in enumerate(by_layer):
            lm.row(f"cover[{self.net.layers[i].name}]", idx, [1] * len(idx), 1, 1)
        for k, var in cut.items():
            idx = starts.get(k, [])
            lm.row(f"cut[{k}]", [var, *idx], [1] + [-1] * len(idx), 0, 0)
        groups: dict[tuple, list[int]] = {}
        for c, var in zip(cols, z, strict=True):
            for X, whole in c.sig.whole_in:
                groups.setdefault(("in", X, c.first, whole), []).append(var)
            for X, wa, cw in c.sig.outputs:
                groups.setdefault(("after", X, c.last + 1, wa), []).append(var)
                groups.setdefault(("last", X, self.last_consumer[X], not cw), []).append(var)
        for (kind, X, k, flag), idx in groups.items():
            family = "cross_in" if kind == "in" else "cross_out"
            # flag True: the chosen column needs w = 1; False: w = 0.
            if flag:
                lm.row(f"{family}[{X},{k},{kind},1]", [*idx, w[(X, k)]],
                       [1] * len(idx) + [-1], -math.inf, 0)
            else:
                lm.row(f"{family}[{X},{k},{kind},0]", [*idx, w[(X, k)]],
                       [1] * len(idx) + [1], -math.inf, 1)
        for X in self.ctx.whole_candidates:
            p, q = self.producer[X], self.last_consumer[X]
            for k in range(p + 2, q + 1):
                lm.row(f"whole_span[{X},{k}]", [w[(X, k)], w[(X, k - 1)]], [1, -1], -math.inf, 0)
                lm.row(f"whole_span[{X},{k},cut]", [w[(X, k - 1)], w[(X, k)], cut[k]],
                       [1, -1, -1], -math.inf, 0)
        self.stats["master_solves"] += 1
        ans = self.backend(lm, SolveOptions(time_limit_s=time_limit_s,
                                            threads=self.options.threads,
                                            seed=self.options.seed), None)
        if ans.values is None:
            if ans.status == "infeasible":
                return None
            raise MasterStoppedError(ans.bound)
        chosen = [c for c, var in zip(cols, z, strict=True) if ans.values[var] > 0.5]
        optimal = ans.status == "optimal"
        bound = ans.objective if optimal else (ans.bound or 0.0)
        return sorted(chosen, key=lambda c: c.first), float(ans.objective), float(bound), optimal

    def _next_states(self, col: Column, state: tuple) -> list[tuple]:
        """Boundary states after ``col`` entered from ``state``: its outputs as its
        signature says, and tensors passing through, each possibly dropped."""
        carry = [(X, w, cw) for X, w, cw in state if self.last_consumer[X] > col.last]
        out = []
        for drops in itertools.product(*[(False, True) if w else (False,)
                                         for _, w, _ in carry]):
            nxt = [*col.sig.outputs, *((X, w and not d, cw) for (X, w, cw), d
                                       in zip(carry, drops, strict=True))]
            out.append(tuple(sorted(nxt)))
        return out

    def _state_info(self, state: tuple) -> tuple[tuple, int, dict[int, list[tuple]]]:
        """For a boundary state: the whole-in key of the columns entering it, the first
        layer no column from it may end at or past, and its transitions by column id
        (:meth:`_next_states`, filled as the master path meets them)."""
        info = self._transitions.get(state)
        if info is None:
            lc, L = self.last_consumer, len(self.net.layers)
            # A tensor last read in the column is written exactly when it is not whole.
            limit = min((lc[X] for X, w, cw in state if cw == w), default=L)
            info = self._transitions[state] = (tuple((X, w) for X, w, _ in state), limit, {})
        return info

    def touch(self, col: Column) -> None:
        """Note that ``col``'s price may change before the next master solve."""
        for mode, touched in self._touched.items():
            touched.add(col.first)
            self._prices[mode].pop(id(col), None)
        # A column added since the graph was built is not in it (nor in its prices):
        # the next graph built has it, at its price then.
        if self._graph is not None and col.rank < self._graph.columns:
            for dirty in self._graph.dirty.values():
                dirty.add(col.rank)

    def master_path(self, exact_only: bool = False, primal: bool = False
                    ) -> tuple[list[Column], float, float, bool] | None:
        """The master solved exactly as a shortest path over segment boundaries.

        A node is a boundary ``k`` with, for every tensor that may stay whole
        and crosses ``k``, whether it is whole there and whether it is written
        for a later DRAM reader: exactly the master MIP's ``w`` and ``cross``
        variables, so the two have the same optimum (checked by the tests).
        Returns what :meth:`master` returns, or ``None`` when no cover exists.

        ``exact_only`` prices only columns with a segment found, at its value (a
        mapping); ``primal`` prices those so, and the others not yet repaired
        at their bound (the dive of :meth:`dive`); otherwise columns are priced
        at their exact value or bound (a lower bound on every mapping).
        """
        L = len(self.net.layers)
        if self._groups is None:
            self._groups = {}
            for c in self.columns:
                self._groups.setdefault((c.first, tuple(sorted(c.sig.whole_in))), []).append(c)
        mode = "exact" if exact_only else "primal" if primal else "bound"
        if PATH_ARRAYS:
            return self._graph_path(mode)
        cache = self._prices[mode]
        groups = self._groups
        if exact_only:  # only columns with a segment found take part: skip the others early
            groups = {}
            for c in self.columns:
                if c.upper is not None:
                    groups.setdefault((c.first, tuple(sorted(c.sig.whole_in))), []).append(c)

        def price_of(col: Column) -> float | None:
            if exact_only:
                price = col.upper
            elif col.exact and col.value is None:
                price = None
            elif primal:
                price = col.upper if col.upper is not None else \
                    None if col.repaired else float(round(col.price))
            else:
                price = float(round(col.price))
            cache[id(col)] = price
            return price

        # Boundaries up to the first start of a column touched since the last solve
        # keep their labels (only columns starting there or later changed price).
        start = 0
        if mode in self._table:
            start = min(self._touched[mode], default=L)
            best = self._table[mode]
            for k in range(start + 1, L + 1):
                best[k] = {}
        else:
            best = [{} for _ in range(L + 1)]
            best[0][()] = (0.0, None, None)
        self._table[mode], self._touched[mode] = best, set()
        cache_get, groups_get = cache.get, groups.get
        for k in range(max(0, start - self._reach), L):
            if mode == "bound" and self.stop.expired():
                # A pass takes up to a second on deep networks: give way to the deadline,
                # and rebuild the half-filled labels next time.
                del self._table[mode]
                raise MasterStoppedError(None)
            for state, (cost, _, _) in sorted(best[k].items()):
                whole, limit, moves = self._state_info(state)
                for col in groups_get((k, whole), ()):
                    last = col.last
                    if last >= limit or last < start:
                        continue
                    key = id(col)
                    price = cache_get(key, _UNPRICED)
                    if price is _UNPRICED:
                        price = price_of(col)
                    if price is None:
                        continue
                    total = cost + price
                    nexts = moves.get(key)
                    if nexts is None:
                        nexts = moves[key] = self._next_states(col, state)
                    after = best[last + 1]
                    after_get, rank = after.get, col.rank
                    for nxt in nexts:
                        old = after_get(nxt)
                        # Ties go to the column built first, whichever boundary was relabelled.
                        if old is None or total < old[0] or (total == old[0]
                                                             and rank < old[1].rank):
                            after[nxt] = (total, col, state)
        if () not in best[L]:
            return None
        value = best[L][()][0]
        chosen: list[Column] = []
        k, state = L, ()
        while k > 0:
            _, col, prev = best[k][state]
            assert col is not None and prev is not None
            chosen.append(col)
            k, state = col.first, prev
        self.stats["master_solves"] += 1
        return sorted(chosen, key=lambda c: c.first), value, value, True

    def master_ties(self, limit: int) -> list[Column]:
        """Up to ``limit`` columns not yet tightened that lie on some optimal path of
        the last bound master (:meth:`master_path`; its labels, read backwards).

        Tightening all of them at once, not only the one path returned, saves a
        master pass per column where many paths tie (deep networks at the
        compulsory traffic). Empty when the labels are not complete.
        """
        if PATH_ARRAYS:
            return self._graph_ties(limit)
        best = self._table.get("bound")
        L = len(self.net.layers)
        if best is None or () not in best[L]:
            return []
        cache_get, groups_get = self._prices["bound"].get, (self._groups or {}).get
        target = best[L][()][0]
        suf: list[dict] = [{} for _ in range(L + 1)]
        suf[L][()] = 0.0
        found: dict[int, Column] = {}
        inf = math.inf
        for k in range(L - 1, -1, -1):
            suf_k = suf[k]
            for state, (cost, _, _) in best[k].items():
                whole, limit_k, moves = self._state_info(state)
                moves_get = moves.get
                least = inf
                for col in groups_get((k, whole), ()):
                    key = id(col)
                    price = cache_get(key)
                    nexts = moves_get(key)
                    if col.last >= limit_k or price is None or nexts is None:
                        continue
                    after_get = suf[col.last + 1].get
                    rest = inf
                    for nxt in nexts:
                        there = after_get(nxt, inf)
                        if there < rest:
                            rest = there
                    here = price + rest
                    if here < least:
                        least = here
                    if not col.tight and not col.exact and cost + price + rest <= target + 0.5:
                        found[key] = col
                if least < inf:
                    suf_k[state] = least
        return sorted(found.values(), key=lambda c: c.rank)[:limit]

    def master_through(self, limit: int, target: float,
                       keep: Callable[[Column], bool] = lambda c: True) -> list[Column]:
        """Up to ``limit`` columns not yet tightened (and kept by ``keep``) whose least
        path through them costs less than ``target``, least first (:meth:`_through`, as
        :meth:`master_ties` reads them).

        Only such columns can hold the master's bound below ``target``: tightening
        them in this order raises it as fast as columns are tightened, where the
        tied columns alone (paths at the master's value) take a master pass per
        handful (SEW-ResNet-152 at 128 KB: 7,659 of 29,702 columns lie below 0.95
        of its best mapping). Empty when the labels are not complete."""
        graph = self._graph
        if not _labelled(graph):
            return []
        through = self._through(graph)
        below = np.flatnonzero(through < target)
        return self._untightened(below[np.argsort(through[below], kind="stable")].tolist(),
                                 limit, keep)

    def _through(self, graph: PathGraph) -> np.ndarray:
        """Each column's least path through it at the last bound pass's prices (``inf``
        for a column on no path, or touched since the pass)."""
        label = graph.labels["bound"][0]
        price = graph.price["bound"].copy()
        if graph.dirty["bound"]:
            price[list(graph.dirty["bound"])] = math.inf
        suf = np.full(len(label), math.inf)
        suf[graph.end] = 0.0
        for src, col, dst in reversed(graph.out_of[:-1]):
            if len(src):
                np.minimum.at(suf, src, price[col] + suf[dst])
        src = np.concatenate([e[0] for e in graph.out_of])
        col = np.concatenate([e[1] for e in graph.out_of])
        dst = np.concatenate([e[2] for e in graph.out_of])
        through = np.full(len(self.columns), math.inf)
        with np.errstate(invalid="ignore"):
            np.minimum.at(through, col, label[src] + price[col] + suf[dst])
        return through

    @staticmethod
    def _mode_price(col: Column, mode: str) -> float:
        """:meth:`master_path`'s price of ``col`` in ``mode`` (``inf``: none, never
        chosen)."""
        if mode == "exact":
            return math.inf if col.upper is None else col.upper
        if col.exact and col.value is None:
            return math.inf
        if mode == "primal" and col.upper is not None:
            return col.upper
        if mode == "primal" and col.repaired:
            return math.inf
        return float(round(col.price))

    def _path_graph(self, bound: bool, exact: bool = False) -> PathGraph:
        """The :class:`PathGraph` of the columns (built again when columns were added).

        Building it over SEW-ResNet-152's 60,000 columns takes a second or more on
        a loaded machine, so an ``exact`` pass (columns with a segment found, at
        its value) that finds no graph of every column gets a graph of those
        columns alone, built for it and not kept (the same path: it prices no other
        column; a few hundred columns, 0.05-0.2 s where the full graph took 0.7-2 s
        at the end of a search under a time limit); past the deadline a ``bound``
        pass raises :class:`MasterStoppedError` (also when the deadline comes while
        building), and a primal pass uses the last graph (a path over some of the
        columns is still a mapping).
        """
        graph = self._graph
        if graph is not None and graph.columns == len(self.columns):
            return graph
        if exact:
            return self._build_graph(lambda c: c.upper is not None, bound)
        if not bound and graph is not None and self.stop.expired():
            return graph
        self._graph = self._build_graph(lambda c: True, bound)
        return self._graph

    def _build_graph(self, keep: Callable[[Column], bool], bound: bool) -> PathGraph:
        """The :class:`PathGraph` of the columns ``keep`` keeps (a ``bound`` pass's build
        stops at the deadline)."""
        assert all(c.rank == r for r, c in enumerate(self.columns))  # (ties by rank)
        L = len(self.net.layers)
        groups = self._groups or {}
        at: list[set[tuple]] = [set() for _ in range(L + 1)]
        at[0].add(())
        index: dict[tuple[int, tuple], int] = {}
        states: list[tuple] = []
        node_k: list[int] = []
        edges: list[tuple[int, int, int, tuple]] = []  # (src, column, boundary, state)
        for k in range(L + 1):
            if bound and self.stop.expired():
                raise MasterStoppedError(None)
            for state in sorted(at[k]):  # (sorted: the order the loop visits them)
                index[(k, state)] = len(states)
                states.append(state)
                node_k.append(k)
            if k == L:
                break
            for state in sorted(at[k]):
                src = index[(k, state)]
                whole, limit, moves = self._state_info(state)
                for col in groups.get((k, whole), ()):
                    if col.last >= limit or not keep(col):
                        continue
                    nexts = moves.get(id(col))
                    if nexts is None:
                        nexts = moves[id(col)] = self._next_states(col, state)
                    for nxt in nexts:
                        at[col.last + 1].add(nxt)
                        edges.append((src, col.rank, col.last + 1, nxt))
        into: list[list[tuple[int, int, int]]] = [[] for _ in range(L + 1)]
        out_of: list[list[tuple[int, int, int]]] = [[] for _ in range(L + 1)]
        for src, rank, j, nxt in edges:
            triple = (src, rank, index[(j, nxt)])
            into[j].append(triple)
            out_of[node_k[src]].append(triple)
        return PathGraph(
            len(self.columns), np.array(node_k, dtype=np.int64), states,
            [_arrays(t) for t in into], [_arrays(t) for t in out_of],
            index.get((L, ()), -1))

    def _graph_path(self, mode: str) -> tuple[list[Column], float, float, bool] | None:
        """:meth:`master_path` in ``mode`` over the :class:`PathGraph`: per
        boundary, each node's least ``(cost, rank of the last column, order of the
        node it left)``, which is what the loop keeps (ties to the column built first,
        then to the node visited first)."""
        if mode == "bound" and self.stop.expired():
            raise MasterStoppedError(None)
        graph = self._path_graph(mode == "bound", mode == "exact")
        price = graph.price.get(mode)
        changed = price is None
        if price is None:
            price = graph.price[mode] = np.array(
                [self._mode_price(c, mode) for c in self.columns], dtype=np.float64)
        else:
            for r in graph.dirty[mode]:
                new = self._mode_price(self.columns[r], mode)
                changed = changed or new != price[r]
                price[r] = new
        graph.dirty[mode] = set()
        if mode == "exact" and not changed and mode in graph.labels:
            # (the incumbent's pass at every master: columns touched for their bounds
            # leave the segments found, and so its path, as they were)
            return self._labelled_path(graph, mode)
        n = len(graph.states)
        label = np.full(n, math.inf)
        arg_col = np.full(n, -1, dtype=np.int64)
        arg_src = np.full(n, -1, dtype=np.int64)
        label[0] = 0.0  # (node 0: the start, boundary 0 with nothing whole)
        for src, col, dst in graph.into[1:]:
            if not len(src):
                continue
            total = label[src] + price[col]
            ok = np.flatnonzero(total < math.inf)
            if not ok.size:
                continue
            src_o, col_o, dst_o, total_o = src[ok], col[ok], dst[ok], total[ok]
            order = np.lexsort((src_o, col_o, total_o, dst_o))
            d = dst_o[order]
            first = np.ones(len(d), dtype=bool)
            first[1:] = d[1:] != d[:-1]
            pick = order[first]
            label[dst_o[pick]] = total_o[pick]
            arg_col[dst_o[pick]] = col_o[pick]
            arg_src[dst_o[pick]] = src_o[pick]
        graph.labels[mode] = label, arg_col, arg_src
        self.stats["master_solves"] += 1
        return self._labelled_path(graph, mode)

    def _labelled_path(self, graph: PathGraph, mode: str
                       ) -> tuple[list[Column], float, float, bool] | None:
        """The path of ``graph``'s labels in ``mode`` (``None``: the end unreached)."""
        label, arg_col, arg_src = graph.labels[mode]
        if graph.end < 0 or label[graph.end] == math.inf:
            return None
        chosen: list[Column] = []
        node = graph.end
        while node != 0:
            chosen.append(self.columns[int(arg_col[node])])
            node = int(arg_src[node])
        value = float(label[graph.end])
        return sorted(chosen, key=lambda c: c.first), value, value, True

    def _graph_ties(self, limit: int) -> list[Column]:
        """:meth:`master_ties` over the :class:`PathGraph`: every column whose least path
        through it (:meth:`_through`) costs at most the master's value, in rank order
        (columns touched since the pass have no price here, as in the loop's price
        cache)."""
        graph = self._graph
        if not _labelled(graph):
            return []
        target = graph.labels["bound"][0][graph.end]
        on = np.flatnonzero(self._through(graph) <= target + 0.5)
        return self._untightened(on.tolist(), limit, lambda c: True)

    def _untightened(self, ranks: list[int], limit: int,
                     keep: Callable[[Column], bool]) -> list[Column]:
        """Up to ``limit`` of the columns ``ranks`` (in that order) not yet tightened and
        kept by ``keep``."""
        found = []
        for r in ranks:
            c = self.columns[r]
            if not c.tight and not c.exact and keep(c):
                found.append(c)
                if len(found) == limit:
                    break
        return found

    def column_of(self, first: int, last: int, sig: Signature) -> Column | None:
        """The column of interval ``first..last`` with signature ``sig`` (its interval
        opened first if it was not), or ``None`` outside the search space."""
        if not self.open_interval(first, last):
            return None
        return self._by_key.get((first, last, sig))
