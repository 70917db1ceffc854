r"""Exact decomposition: segment columns priced lazily, chained by a shortest path.

A *column* is an interval of layers :math:`I = first..last` with a boundary
*signature* :math:`\sigma`: for every tensor that may stay whole on chip and
crosses the interval's start, whether it does; for every such tensor made in
:math:`I` and read after it, whether it stays whole after :math:`I` and
whether a later segment reads it from DRAM. Given :math:`\sigma`, the
interval meets the rest of the mapping only through its cost, so

.. math::  c(I, \sigma) = \min_{f \text{ frame of } I} \; \text{local optimum of } f
           \text{ under } \sigma,

where a frame's local optimum is the frame MIP of
:func:`stems_opt.formulation.model.build_frame_model` (families 3, 4, 5, 10)
with the options :math:`\sigma` allows and the buffer less the tensors
:math:`\sigma` keeps whole. The master picks one column per segment
(families 1, 2, 6-8 of :mod:`stems_opt.formulation.model`, over columns
instead of options); it is solved exactly as a shortest path over boundary
states (:meth:`ColumnSolver.master_path`), or as that MIP
(``master_mip=True``).

Columns are priced lazily. Each starts at a cheap lower bound (its cheapest
choices plus what :math:`\sigma` forces). A column the master picks is first
tightened: every frame gets the capacity-aware bound of
:mod:`stems_opt.formulation.bounds`, and the column the least of them. A
column the master picks at its tight bound is priced exactly: frames in
increasing bound order, each directly (its cheapest choices scored by the
cost model, when they fit) or by its local MIP, stopping when the next bound
reaches the best value found. Repeat until the master's answer uses exact
columns only. Its value is then optimal: every column value used is at most
the column's exact value.

This module holds pricing and the main loop; the other parts of
:class:`ColumnSolver` are mixins in their own modules: opening intervals
(:mod:`~stems_opt.formulation.intervals`), column bounds
(:mod:`~stems_opt.formulation.column_bounds`), the master
(:mod:`~stems_opt.formulation.master`) and the mappings found before the
proof (:mod:`~stems_opt.formulation.column_primal`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Hashable, Iterable

import numpy as np

from stems_opt.cost.evaluation import fewest_cycles
from stems_opt.cost.geometry import SegmentGeometry
from stems_opt.formulation import column_base
from stems_opt.formulation.backend import SolveOptions
from stems_opt.formulation.chunk_floor import ChunkFloors
from stems_opt.formulation.column_base import (
    DIVE_ANYTIME_UP_TO_S,
    DIVE_CAP_S,
    DIVE_IMPROVING_CAP_S,
    DIVE_IMPROVING_SHARE,
    DIVE_IMPROVING_SHARE_SEEDED,
    DIVE_NONE_SHARE,
    DIVE_SHARE,
    EAGER_LAYERS,
    LOCAL_LIMIT_S,
    LOG,
    Backend,
    Column,
    FrameSpecs,
    MasterStoppedError,
    Signature,
)
from stems_opt.formulation.column_bounds import BoundsMixin
from stems_opt.formulation.column_helped import HelpedMixin, Raised
from stems_opt.formulation.column_primal import PrimalMixin
from stems_opt.formulation.column_share import ShareMixin
from stems_opt.formulation.data import (
    CHIP,
    Frame,
    FrameBuildStoppedError,
    FrameKey,
    LayerOption,
    _Context,
    frame_axes,
    make_context,
)
from stems_opt.formulation.energy_floor import layer_energy_floors
from stems_opt.formulation.frame_store import FrameStore
from stems_opt.formulation.intervals import IntervalsMixin
from stems_opt.formulation.master import MasterMixin, PathGraph, TieBudget
from stems_opt.formulation.model import build_frame_model
from stems_opt.formulation.neighbourhood import Turns, polish_seconds
from stems_opt.formulation.primal import Rates
from stems_opt.formulation.shapes import ShapeIndex
from stems_opt.mapping import (
    Mapping,
    Segment,
)
from stems_opt.problem import Objective, Problem
from stems_opt.progress import Progress
from stems_opt.stopping import SearchStoppedError, Stop

__all__ = ["Column", "ColumnSolver", "Signature"]


class ColumnSolver(IntervalsMixin, BoundsMixin, MasterMixin, PrimalMixin, ShareMixin,
                   HelpedMixin):
    """Lazy column pricing and the master MIP for one problem."""

    def __init__(self, problem: Problem, backend: Backend, options: SolveOptions,
                 master_mip: bool = False, progress: Progress | None = None,
                 bound_first: bool = False):
        self.master_mip = master_mip  # the master as a MIP of the backend, not a path
        # No dive, polish or neighbourhood turns: masters and pricing alone (a search run
        # for its bound).
        self.bound_first = bound_first
        self._groups: dict[tuple, list[Column]] | None = None
        # (kept from the first column on: built at once over 60,000 columns it took a
        # second past a deadline, when seeds arrived)
        self._by_key: dict[tuple, Column] = {}
        self._graph: PathGraph | None = None  # the master path's transitions (master.py)
        self._crossing: dict[int, list[str]] = {}
        self._interval_bounds: dict[tuple[int, int], dict[FrameKey, float]] = {}
        self._round_sigs: dict[tuple[int, int], list[tuple]] = {}  # (_tighten_for's round)
        self._by_interval: dict[tuple[int, int], list[Column]] | None = None
        self._extra_parts: dict[tuple[int, int], tuple[dict[str, int], dict[str, int]]] = {}
        self._transitions: dict[tuple, tuple[tuple, int, dict[int, list[tuple]]]] = {}
        # Per price mode ("bound": bounds and exact values, "primal": see master_path):
        self._table: dict[str, list[dict]] = {}  # the master path's labels, reused
        self._touched: dict[str, set[int]] = {"bound": set(), "primal": set(), "exact": set()}
        # (starts of columns repriced since), and the master prices, dropped on touch
        self._prices: dict[str, dict[int, float | None]] = {"bound": {}, "primal": {},
                                                            "exact": {}}
        self.problem = problem
        self.net = problem.network
        self.ctx: _Context = make_context(problem)
        self.backend = backend
        self.options = options
        index = {lay.name: i for i, lay in enumerate(self.net.layers)}
        self.producer = {self.net.input.name: -1, **index}
        self.last_consumer = {t: max(index[c] for c in self.net.consumers(t))
                              for t in [self.net.input.name, *index] if self.net.consumers(t)}
        self.stop = options.stop or Stop()
        self.progress = progress
        self.axes = frame_axes(self.net)
        self.specs = FrameSpecs(self.net, self.axes)
        self.frame_cache: dict[FrameKey, Frame | None] = {}
        self.frame_store = FrameStore(self.ctx)
        self.spec_bounds: dict[FrameKey, float] = {}
        self.cap_bounds: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._touched_tensors: dict[tuple[int, int], frozenset[str]] = {}
        self.cheapest: dict[tuple, float] = {}
        self.columns: list[Column] = []
        self._excluded: tuple[float, float] | None = None  # (bound, when computed)
        self._floor: np.ndarray | None = None
        # Called with each better mapping's value (model units) as the search finds it.
        self.on_incumbent: Callable[[float], None] | None = None
        self.best_found = math.inf
        # Mappings from elsewhere (named schedules as they arrive) to seed, polled.
        self.seed_source: Callable[[], Iterable[Mapping]] | None = None
        # (another search's mappings arrive through seed_source as it goes: a shorter dive)
        self.seeded_as_it_goes = False
        # A proven lower bound from elsewhere (model units), polled: the floor of the
        # least traffic the second process proved, once it arrives.
        self.floor_source: Callable[[], float | None] | None = None
        # Column bounds tightened elsewhere (column_helper.py), polled, and whether a
        # column is this process's to tighten (the other tightens the others).
        self.column_source: Callable[[], list[Raised]] | None = None
        self.helper_takes: Callable[[Column], bool] | None = None
        self.column_sink: Callable[[list[Raised]], None] | None = None  # (and what rose here)
        self._from_elsewhere: set[int] = set()  # (ranks of the columns raised so)
        # Each tightened column's frame bounds and slack, which pricing reads (a column
        # helper, which prices nothing, keeps none: 100 or so per SEW-ResNet-152 column).
        self.keep_frame_bounds = True
        # The best mapping from elsewhere arrived so far (model units), if any.
        self.named_value: Callable[[], float | None] | None = None
        self._seeded: set[int] = set()
        self._seed_keep: list[Mapping] = []
        self._lower = 0.0  # the search's proven bound so far (model units)
        self.stats = {"frames_built": 0, "local_solves": 0, "frames_direct": 0,
                      "master_solves": 0, "columns": 0, "columns_priced": 0,
                      "variables": 0, "constraints": 0, "frames_repaired": 0,
                      "columns_shared": 0, "shares_rejected": 0}
        # Model units per fJ of energy and per cycle of latency (traffic: bits).
        a, b = self.ctx.energy_weight, self.ctx.latency_weight
        energy = a > 0
        self.energy = energy
        self.latency_weight = b
        rates = self.ctx.rates
        traffic = problem.objective is Objective.TRAFFIC
        self.rate = a * min(rates.read_fj_per_bit, rates.write_fj_per_bit) if energy else \
            int(traffic)
        # DRAM read and write, GB operand read and write: cost per bit in model units.
        self.rates = (a * rates.read_fj_per_bit, a * rates.write_fj_per_bit,
                      a * rates.gb_read_fj_per_bit, a * rates.gb_write_fj_per_bit) if energy \
            else (int(traffic), int(traffic), 0, 0)
        self.unit_rates = Rates(*self.rates, hardware=problem.hardware, operand_weight=max(a, 1),
                                latency=b, fewest_cycles=fewest_cycles(problem))
        # Intervals equal up to names share bounds, exact values and segments (shapes.py).
        self.shapes = ShapeIndex(self.net, self.ctx.whole_candidates, self.ctx.outputs,
                                 self.producer, self.last_consumer, self.crossing_in,
                                 share=column_base.SHARE_SHAPES)
        self._siblings: dict[tuple, list[Column]] = {}
        self._shared_bounds: dict[Hashable, list[float]] = {}
        self._shared_prices: dict[tuple, tuple[float | None, tuple[int, int], Segment | None]] = {}
        self._found_shared: dict[tuple, float] = {}  # share key -> best found value offered
        self._long_fitted: set[tuple] = set()  # columns given long_fit (share keys)
        # (how many columns there were when last scanned, and the plain ones among them)
        self._long_plain: tuple[int, list[Column]] = (0, [])
        self._block_extras: dict[tuple, float] = {}  # (share key, blocks) -> block floor
        L = len(self.net.layers)
        self.max_len = min(L, problem.max_segment_layers or L)
        self._layer_parts = self._cheap_layer_parts()
        # Weight re-reads every segment containing a layer pays (chunk_floor.py).
        use_rate = self._weight_use_rate()
        energy_floors = layer_energy_floors(  # (energy_floor.py: energy without nests)
            self.net, self.ctx.capacity_bits, self.ctx.k_unroll, self.axes, self.rates[0],
            use_rate) if self.rates[0] and use_rate else None
        # Tensors held past a chunked layer and blocks' joint floors count DRAM traffic
        # alone. For traffic, and for energy through loop nests (whose operand and nest
        # floors hold whatever goes through DRAM), they add to the rest of the bound;
        # without nests the per-layer energy floors already trade the forced steps' GB
        # reads against DRAM re-reads, which a block's choice could pay instead.
        self.chunk_floors = ChunkFloors(self.net, self.ctx.capacity_bits, self.ctx.k_unroll,
                                        self.axes, self.rates[0], energy_floors,
                                        self.rates[1] if energy_floors is None else None)
        self._reach = 0
        self._opened: set[tuple[int, int]] = set()
        # Intervals up to this length are opened (their columns built); longer ones only
        # when asked for (:meth:`open_interval`) or when the proof needs them (open_more).
        self.open_len = 0
        self._budget_len = self._lengths_within(column_base.COLUMN_BUDGET)
        # A network too deep to build whole (or deeper than EAGER_LAYERS) starts from its
        # one-layer intervals: the dive finds a first mapping over them before the rest
        # of the budget is built.
        whole = self._budget_len >= self.max_len and L <= EAGER_LAYERS
        self._open_lengths(self._budget_len if whole else 1)
        self.stats.update(columns=len(self.columns), open_len=self.open_len)

    # --- opening intervals -------------------------------------------------------

    # --- signatures and bounds ------------------------------------------------
    def crossing_in(self, first: int) -> list[str]:
        """Tensors that may be whole and are made before ``first``, read from it on."""
        got = self._crossing.get(first)
        if got is None:
            got = self._crossing[first] = [
                X for X in self.ctx.whole_candidates
                if self.producer[X] < first <= self.last_consumer[X]]
        return got

    def outputs(self, first: int, last: int) -> list[str]:
        """Tensors that may be whole, made in the interval and read after it."""
        # Whole candidates are layer outputs, in layer order: only the interval's own.
        cands = self.ctx.whole_candidates
        return [X for X in (lay.name for lay in self.net.layers[first:last + 1])
                if X in cands and last < self.last_consumer[X]]

    def signatures(self, first: int, last: int) -> list[Signature]:
        """Every signature of an interval."""
        ins = self.crossing_in(first)
        outs = self.outputs(first, last)
        out_choices = [(False, True), (True, False), (True, True)]
        sigs = []
        for bits in itertools.product([False, True], repeat=len(ins)):
            for outc in itertools.product(out_choices, repeat=len(outs)):
                sigs.append(Signature(tuple(zip(ins, bits, strict=True)),
                                      tuple((X, w, c) for X, (w, c)
                                            in zip(outs, outc, strict=True))))
        return sigs

    # --- capacity-aware bounds -------------------------------------------------

    # --- pricing ---------------------------------------------------------------
    def _frame(self, spec: FrameKey) -> Frame | None:
        if spec in self.frame_cache:
            return self.frame_cache[spec]
        # Built once per process for this network, hardware and objective, and for
        # every smaller buffer (frame_store.py).
        frame = self.frame_store.frame(spec, self.stop.expired)
        self.stats["frames_built"] += 1
        self.stats["frames_shared"] = self.stats["frames_built"] - self.frame_store.built
        self.stats["frames_build_s"] = self.frame_store.build_s
        self.frame_cache[spec] = frame
        return frame

    def _restrict(self, frame: Frame, sig: Signature) -> tuple[Frame, int] | None:
        whole_in = dict(sig.whole_in)
        outs = {X: (w, c) for X, w, c in sig.outputs}
        budget = self.ctx.capacity_bits - sum(self.ctx.whole_candidates[X]
                                              for X, w in sig.whole_in if w)
        if budget < 0:
            return None
        options: dict[str, list[LayerOption]] = {}
        for name, opts in frame.options.items():
            keep = []
            for o in opts:
                if name in outs and (o.output.whole, o.output.cross_write) != outs[name]:
                    continue
                if any(not ic.in_frame and ic.tensor in whole_in
                       and (ic.source == CHIP) != whole_in[ic.tensor] for ic in o.inputs):
                    continue
                if int(o.coeff.max()) > budget:
                    continue
                keep.append(o)
            if not keep:
                return None
            options[name] = keep
        return Frame(0, frame.first, frame.last, frame.layers, frame.time_batch, frame.axis,
                     frame.tiles, frame.order, options, frame.rows, 0, (), (),
                     frame.frame_tensors, frame.halo_bits), budget

    def _local(self, frame: Frame, budget: int, limit_s: float
               ) -> tuple[float, float, dict[str, LayerOption]] | None:
        """``(value, bound, options)`` of the frame's best options (value == bound
        when proven), or ``None`` when nothing fits."""
        lm, v = build_frame_model(frame, budget)
        self.stats["local_solves"] += 1
        # The largest frame MIP solved, for the benchmark.
        self.stats["variables"] = max(self.stats["variables"], len(lm.names))
        self.stats["constraints"] = max(self.stats["constraints"], len(lm.rows))
        ans = self.backend(lm, SolveOptions(time_limit_s=self.stop.limit_s(limit_s),
                                            threads=self.options.threads, stop=self.stop,
                                            seed=self.options.seed), None)
        if ans.status == "infeasible":
            return None
        if ans.values is None:
            return math.inf, ans.bound if ans.bound is not None else 0.0, {}
        chosen = {}
        for name in frame.layers:
            for i, o in zip(v.options(0, name), frame.options[name], strict=True):
                if ans.values[i] > 0.5:
                    chosen[name] = o
        value = float(round(ans.objective))
        bound = value if ans.status == "optimal" else float(ans.bound or 0.0)
        return value, bound, chosen

    def _price_frame(self, col: Column, spec: FrameKey, best: float, extra: float,
                     limit_s: float | None = None) -> bool:
        """Solve one frame of ``col`` (within ``limit_s``, else the local limit of its
        attempt); ``False`` when the deadline stops the pricing."""
        try:
            if self.stop.expired():
                raise FrameBuildStoppedError("pricing stopped")
            frame = self._frame(spec)
        except FrameBuildStoppedError:
            col.bound = max(col.bound, min(best, self._spec_bound(spec) + extra,
                                           *col.unproven.values()))
            return False
        col.tried.add(spec)
        restricted = None if frame is None else self._restrict(frame, col.sig)
        if restricted is None:
            col.unproven.pop(spec, None)
            return True
        t0 = time.perf_counter()
        attempt = col.attempts.get(spec, 0)
        col.attempts[spec] = attempt + 1
        local = self._local(*restricted, LOCAL_LIMIT_S * 8 ** attempt if limit_s is None
                            else limit_s)
        LOG.debug("  frame %s: local %s in %.2f s", spec[2:], None if local is None
                  else local[:2], time.perf_counter() - t0)
        col.unproven.pop(spec, None)
        if local is None:
            return True
        value, bound, chosen = local
        if value < best:
            col.upper, col.frame, col.chosen, col.segment = value, restricted[0], chosen, None
        if bound < min(value, best):
            col.unproven[spec] = bound
        return True

    def price(self, col: Column) -> None:
        """Price ``col`` exactly: the best frame under its signature (or a translated
        column's, :mod:`~stems_opt.formulation.column_share`)."""
        if not col.exact and self.take_shared(col):
            return
        self.tighten(col)
        self.settle(col)  # (covered frames at their programs, not their relaxations)
        if col.exact:
            return
        extra = self._extra(col.first, col.last, col.sig)
        # Most slack first among equal bounds: the likeliest to reach its bound.
        specs = sorted(self.specs[(col.first, col.last)],
                       key=lambda s: (col.frame_bounds[s], -col.frame_slack[s],
                                      self.net.timesteps // s[2], s[4], s[5].value, s[3].value))
        best: float = math.inf if col.upper is None else col.upper
        for spec in list(col.unproven):  # frames a short local solve left open: try longer
            if col.unproven[spec] >= best:
                del col.unproven[spec]
                continue
            if not self._price_frame(col, spec, best, extra):
                return
            best = col.upper if col.upper is not None else math.inf
        for spec in specs:
            if col.frame_bounds[spec] + extra >= best:
                break
            if self.stop.expired():  # specs come in bound order: the rest are worth more
                col.bound = max(col.bound, min(best, col.frame_bounds[spec] + extra,
                                               *col.unproven.values()))
                return
            if spec in col.tried:
                continue
            if col.frame_slack[spec] >= 0:
                direct = None
                first, last, tb, axis, n, order = spec
                geo = SegmentGeometry(self.net, Segment(
                    tuple(lay.name for lay in self.net.layers[first:last + 1]), tb, n, axis, order))
                for fine, chunked in dict.fromkeys([(not self.energy, False), (True, False),
                                                    (True, True)]):
                    direct = self._direct(col, spec, fine, chunked, geo)
                    if direct is not None:
                        break
                if direct is not None and direct[1] < best:
                    self.stats["frames_direct"] += 1
                    col.upper, col.segment, col.frame, col.chosen = direct[1], direct[0], None, {}
                    best = direct[1]
                    if best <= col.frame_bounds[spec] + extra:
                        continue  # proven: the loop ends at the next bound
            if not self._price_frame(col, spec, best, extra):
                return
            best = col.upper if col.upper is not None else math.inf
        self.share_found(col)  # (its translates may take its found segment)
        if col.unproven:
            # Open frames: the column is worth at least the least of them and of the best.
            col.bound = max(col.bound, min(best, min(col.unproven.values())))
            return
        col.exact = True
        col.value = None if best == math.inf else best
        self.stats["columns_priced"] += 1
        self.share_exact(col)
        LOG.debug("priced %d..%d %s: bound %.0f value %s (%d frames built so far)", col.first,
                  col.last, col.sig, col.bound, col.value, self.stats["frames_built"])

    # --- master ------------------------------------------------------------------

    def solve(self, time_limit_s: float | None = None, lower_bound: float = 0.0
              ) -> tuple[Mapping | None, float, float]:
        """Price and re-solve until the master uses exact columns only, or until
        ``self.stop`` fires (or ``time_limit_s`` passes, when given).

        ``lower_bound`` is a proven lower bound from elsewhere (model units),
        for example the optimum or bound for a larger buffer: a mapping
        reaching it is optimal at once.

        Returns the best mapping found (or ``None``), its value in model units
        (``inf`` when none), and a proven lower bound.

        A loop-nest table stopped by :func:`stems_opt.stopping.checkpoint` (the
        caller's :meth:`Stop.active` block) ends the search wherever it is: the
        answer is the best mapping and bound so far.
        """
        self._lower = lower_bound
        try:
            # (a search stopped in its dive, before any master, still has this bound)
            self._lower = max(lower_bound, self.chain_floor())
            self._report(self._lower)
            return self._search(time_limit_s)
        except SearchStoppedError:
            return self._answer(self._lower)

    def _answer(self, lower: float) -> tuple[Mapping | None, float, float]:
        """The best mapping found, its value and the bound ``lower`` (at most the value)."""
        res = self.incumbent()
        if res is None:
            return None, math.inf, lower
        chosen, value = res
        return self.mapping_of(chosen), value, min(lower, value)

    def _search(self, time_limit_s: float | None) -> tuple[Mapping | None, float, float]:
        """:meth:`solve`'s search; its bound so far is kept in ``self._lower``."""
        start = time.perf_counter()
        local_end = None if time_limit_s is None else start + time_limit_s
        ties_budget = TieBudget()  # for tightening columns tied with the master's path

        def stopped() -> bool:
            return self.stop.expired() or (local_end is not None
                                           and time.perf_counter() >= local_end)

        left = self.stop.limit_s(time_limit_s)
        limit = self.stop.time_limit_s
        if limit is not None and limit > DIVE_ANYTIME_UP_TO_S:
            left = None  # (a long limit: the dive of a search without one)
        span = DIVE_CAP_S if left is None else left
        improving = DIVE_IMPROVING_SHARE_SEEDED if self.seeded_as_it_goes \
            else DIVE_IMPROVING_SHARE
        if not self.bound_first:
            self.dive(start + DIVE_SHARE * span, start + DIVE_NONE_SHARE * span,
                      None if left is None
                      else start + min(improving * span, DIVE_IMPROVING_CAP_S))
        self.stats["dive_s"] = time.perf_counter() - start
        # Every interval within the column budget opened before the proof (the dive opens
        # them a length at a time within its share only): a mapping through an unopened
        # interval is bounded by the per-layer cheap floors alone (excluded_bound), below
        # what the tightened columns see. (SEW-ResNet-152: 58,902 columns, a few seconds.)
        late = self.open_len < self.max_len  # (long intervals opened after the dive)
        # (the neighbourhood search's share of the time)
        turns = Turns(self, start, left, long_pass=late)
        if left is not None and not self.bound_first:
            # a short limit: beat the incumbent once before the opening
            with contextlib.suppress(SearchStoppedError):
                turns.polish(time.perf_counter() + polish_seconds(left, self.at_named()))
        if self._budget_len >= self.max_len > self.open_len:
            # (stopped: what was opened stays; the rest is still bounded apart)
            with contextlib.suppress(SearchStoppedError):
                self._open_lengths(self.max_len)
            self.stats.update(columns=len(self.columns), open_len=self.open_len)
        if self._lower > 0 and (proven := self._proven_incumbent()) is not None:
            return proven

        while not stopped():
            self._columns_arrived()
            try:
                res = self.master(time_limit_s=self.stop.limit_s(None)) if self.master_mip \
                    else self.master_path()
            except MasterStoppedError as stop:  # the deadline came during the master solve
                bound = min(stop.bound or 0.0, self.excluded_bound())
                self._lower = max(self._lower, bound)
                break
            if res is None and self.open_more():
                continue  # no cover by the opened intervals: longer ones may cover
            if res is None:
                return None, math.inf, math.inf  # no cover at all: infeasible
            chosen, value, bound, optimal = res
            self._raise_lower(bound)
            if self._floor_arrived():
                turns.favour_mapping()
                if (proven := self._proven_incumbent()) is not None:
                    return proven
            self._report(self._lower)
            self.poll_seeds()
            self.note_incumbent()
            LOG.debug("master %.0f (bound %.0f), %d of %d columns priced", value, bound,
                      self.stats["columns_priced"], len(self.columns))
            for c in chosen:
                if not c.exact and c.upper is not None and c.upper <= c.price:
                    # A segment found at the column's bound proves its value: no pricing.
                    c.exact, c.value = True, c.upper
                    self.stats["columns_priced"] += 1
                    self.share_exact(c)
            pending = [c for c in chosen if not c.exact]
            if not pending:
                if optimal and value <= self.excluded_bound(fresh=True):
                    return self.mapping_of(chosen), value, value
                if optimal and self.open_more():
                    continue  # a mapping through a longer interval may still be better
                break
            if not self.bound_first and turns.due():
                try:
                    turns.turn()
                except SearchStoppedError:
                    break
            # Every column on a path tied with the master's, tightened in one batch,
            # within a share of the search so far (TieBudget): a proof that prices a
            # few columns (most networks at large buffers) must not wait for hundreds
            # of ties.
            tie_s = self._round_s(ties_budget, time.perf_counter() - start,
                                  None if local_end is None else local_end - time.perf_counter())
            ties = [] if self.master_mip or tie_s <= 0 else self._ties(ties_budget.batch())
            for c in pending:
                self.touch(c)
            try:
                # Prices only rise: while the path's own columns keep theirs, it stays
                # the master's answer, whatever rose elsewhere (tied columns rise in
                # almost every round on SEW-ResNet-152, which starved the pricing).
                before = [c.price for c in pending]

                def moved(before: list[float] = before, pending: list[Column] = pending
                          ) -> bool:
                    return any(c.price != p for c, p in zip(pending, before, strict=True))

                if ties:  # (the labels they come from are stale once anything rose)
                    tie_start = time.perf_counter()
                    tried, rose = self._tighten_told(ties, tie_s)
                    ties_budget.record(tried, rose, time.perf_counter() - tie_start)
                    LOG.debug("ties: %d of %d tightened rose (growth %d)", rose, tried,
                              ties_budget.growth)
                # Intervals with many signatures: one bound for all of them first.
                if sum([self.raise_interval(c.first, c.last) for c in pending
                        if (c.first, c.last) not in self._interval_bounds
                        and self.signature_count(c.first, c.last) > 6]) and moved():
                    continue
                bounds = [c.bound for c in pending]
                raised = sum([self.tighten(c, cover=self.cover_in_search()) for c in pending])
                self._tell_helper(pending, bounds)
                if raised or moved():
                    continue  # bounds rose: ask the master again before pricing anything
                for col in pending:
                    if col.upper is None and col.tight and not col.exact and \
                            max(col.frame_slack.values(), default=-1) < 0:
                        # No frame's cheapest choices fit, so direct pricing finds nothing:
                        # a greedy segment first, which the exact pricing then stops at.
                        self.repair_price(col, 1)
                    self.price(col)
                    self.touch(col)  # (its price and found segment may have changed)
                    if stopped():
                        break
                    if not self.bound_first and turns.due():  # (a long list takes a while)
                        turns.turn()
            except SearchStoppedError:
                break
        self.stats.update(lns_moves=turns.moves, lns_improved=turns.improved,
                          lns_s=round(turns.used_s, 3))
        self._last_master()
        return self._answer(self._lower)

    def _raise_lower(self, master_bound: float) -> None:
        """Raise the search's bound with a bound master's: the master sees opened
        intervals only, the others are bounded apart (:meth:`excluded_bound`)."""
        self._lower = max(self._lower, min(master_bound, self.excluded_bound()))

    def _proven_incumbent(self) -> tuple[Mapping, float, float] | None:
        """The incumbent as a proven answer (mapping, value, bound) when it reaches the
        bound so far, else ``None``."""
        found = self.incumbent()
        if found is None or found[1] > self._lower:
            return None
        return self.mapping_of(found[0]), found[1], found[1]

    def _floor_arrived(self) -> bool:
        """Raise the bound to the floor from elsewhere (:attr:`floor_source`) where that is
        more; whether the floor is (still) above what the masters have raised."""
        floor = None if self.floor_source is None else self.floor_source()
        if floor is None or floor <= self._lower:
            return False
        self._lower = floor
        return True

    def _report(self, bound: float) -> None:
        """Tell the progress reporter the bound, and the incumbent when a report is due
        (finding the incumbent is a pass over every column, so not at every step)."""
        if self.progress is None:
            return
        incumbent = None
        if self.progress.due():
            found = self.incumbent()
            incumbent = None if found is None else found[1]
        self.progress.update(bound=bound, incumbent=incumbent,
                             columns_priced=self.stats["columns_priced"])

    def mapping_of(self, chosen: list[Column]) -> Mapping:
        """The mapping of exact columns."""
        segs = []
        for c in chosen:
            seg = self._found_segment(c)
            assert seg is not None
            segs.append(seg)
        return Mapping(tuple(segs)).canonical(self.net)
