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
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from stems_opt.cost_model import (
    SegmentContext,
    SegmentGeometry,
    layer_gb_access_bits,
    segment_terms,
)
from stems_opt.formulation.backend import BackendAnswer, SolveOptions
from stems_opt.formulation.bounds import (
    frame_gb_operand_bits,
    interval_excess_bounds,
    max_chunks,
    read_bits,
)
from stems_opt.formulation.data import (
    CHIP,
    Frame,
    FrameKey,
    LayerOption,
    _Context,
    _FrameBuilder,
    cheapest_split,
    frame_specs,
    make_context,
    spec_lower_bound,
    written_anyway,
)
from stems_opt.formulation.model import LinearModel, build_frame_model, segment_of
from stems_opt.mapping import (
    RESIDENT,
    Halo,
    Mapping,
    Order,
    Placement,
    Segment,
    StateMode,
    WeightChoice,
)
from stems_opt.network import Axis
from stems_opt.problem import Objective, Problem
from stems_opt.progress import Progress
from stems_opt.stopping import SearchStoppedError, Stop

LOG = logging.getLogger("stems_opt.columns")
LOCAL_LIMIT_S = 2.0
"""First time limit of a frame's local solve; a frame left open is retried with 8x more."""
Backend = Callable[[LinearModel, SolveOptions, dict[int, int] | None], BackendAnswer]


class _MasterStoppedError(Exception):
    """The master stopped (time limit) before finding any answer."""

    def __init__(self, bound: float | None):
        super().__init__("master stopped")
        self.bound = bound


@dataclass(frozen=True)
class Signature:
    """How an interval meets the rest of the mapping.

    ``whole_in``: (tensor, kept whole) for each tensor crossing the start;
    ``outputs``: (tensor, whole after, written for a later DRAM reader).
    """

    whole_in: tuple[tuple[str, bool], ...]
    outputs: tuple[tuple[str, bool, bool], ...]


@dataclass
class Column:
    """An interval with a signature, priced by a bound or exactly."""

    first: int
    last: int
    sig: Signature
    bound: float
    exact: bool = False
    value: float | None = None  # exact value, None when no frame fits
    upper: float | None = None  # best value found so far (a feasible segment)
    frame: Frame | None = None
    chosen: dict[str, LayerOption] = field(default_factory=dict)
    tried: set[FrameKey] = field(default_factory=set)
    unproven: dict[FrameKey, float] = field(default_factory=dict)  # frame -> its bound
    attempts: dict[FrameKey, int] = field(default_factory=dict)
    tight: bool = False  # frame bounds include what the buffer forces
    frame_bounds: dict[FrameKey, float] = field(default_factory=dict)
    frame_slack: dict[FrameKey, int] = field(default_factory=dict)
    segment: Segment | None = None  # found directly, without a frame model
    rank: int = 0  # build order, for deterministic ties in the master

    @property
    def price(self) -> float:
        """The value the master uses: exact, else a lower bound."""
        return self.value if self.exact and self.value is not None else self.bound


class ColumnSolver:
    """Lazy column pricing and the master MIP for one problem."""

    def __init__(self, problem: Problem, backend: Backend, options: SolveOptions,
                 master_mip: bool = False, progress: Progress | None = None):
        self.master_mip = master_mip  # the master as a MIP of the backend, not a path
        self._groups: dict[tuple, list[Column]] | None = None
        self._transitions: dict[tuple, list[tuple]] = {}
        self._table: list[dict] | None = None  # the master path's labels, reused
        self._touched: set[int] = set()  # starts of columns repriced since
        self._prices: dict[int, float | None] = {}  # master prices, dropped on touch
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
        self.specs: dict[tuple[int, int], list[FrameKey]] = {}
        for i, spec in enumerate(frame_specs(problem)):
            if i % 4096 == 0:
                self.stop.check()
            self.specs.setdefault((spec[0], spec[1]), []).append(spec)
        self.frame_cache: dict[FrameKey, Frame | None] = {}
        self.spec_bounds: dict[FrameKey, float] = {}
        self.cap_bounds: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.cheapest: dict[tuple, float] = {}
        self.columns: list[Column] = []
        self.stats = {"frames_built": 0, "local_solves": 0, "frames_direct": 0,
                      "master_solves": 0, "columns": 0, "columns_priced": 0,
                      "variables": 0, "constraints": 0}
        energy = problem.objective is Objective.ENERGY
        self.energy = energy
        rates = self.ctx.rates
        self.rate = min(rates.read_fj_per_bit, rates.write_fj_per_bit) if energy else 1
        # DRAM read and write, GB operand read and write: cost per bit in model units.
        self.rates = (rates.read_fj_per_bit, rates.write_fj_per_bit, rates.gb_read_fj_per_bit,
                      rates.gb_write_fj_per_bit) if energy else (1, 1, 0, 0)
        T = self.net.timesteps
        for (first, last), specs in self.specs.items():
            self.stop.check()  # building every column can take seconds on deep networks
            # The full time batch in one tile has the least cheap bound of any frame of the
            # interval, and one tile the fewest GB operand accesses.
            ones = [s for s in specs if s[2] == T and s[4] == 1]
            base = max(min(self._spec_bound(s) for s in ones),
                       min(self._cheapest(s) for s in ones))
            for sig in self.signatures(first, last):
                self.columns.append(Column(first, last, sig,
                                           base + self._extra(first, last, sig)))
        self.stats["columns"] = len(self.columns)
        for i, c in enumerate(self.columns):
            c.rank = i

    # --- signatures and bounds ------------------------------------------------
    def crossing_in(self, first: int) -> list[str]:
        """Tensors that may be whole and are made before ``first``, read from it on."""
        return [X for X in self.ctx.whole_candidates
                if self.producer[X] < first <= self.last_consumer[X]]

    def outputs(self, first: int, last: int) -> list[str]:
        """Tensors that may be whole, made in the interval and read after it."""
        return [X for X in self.ctx.whole_candidates
                if first <= self.producer[X] <= last < self.last_consumer[X]]

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

    def _cheapest(self, spec: FrameKey) -> float:
        """Cost of the frame's cheapest choices: DRAM traffic, and for energy the
        fewest GB operand accesses (they depend on the tile count too)."""
        key = (spec[0], spec[1], spec[3], spec[4] if self.energy else 0)
        got = self.cheapest.get(key)
        if got is None:
            r, w = cheapest_split(self.ctx, spec)
            got = r * self.rates[0] + w * self.rates[1]
            if self.energy:
                gr, gw = frame_gb_operand_bits(self.net, spec[0], spec[1], spec[3], spec[4])
                got += gr * self.rates[2] + gw * self.rates[3]
            self.cheapest[key] = got
        return got

    def _spec_bound(self, spec: FrameKey) -> float:
        b = self.spec_bounds.get(spec)
        if b is None:
            b = self.rate * spec_lower_bound(self.ctx, spec)
            self.spec_bounds[spec] = b
        return b

    def _extra(self, first: int, last: int, sig: Signature) -> float:
        """Cost the signature forces: DRAM reads of crossing tensors not kept whole
        (the union of each reader's windows), writes for later DRAM readers."""
        reads = writes = 0
        inside = {lay.name for lay in self.net.layers[first:last + 1]}
        for X, whole in sig.whole_in:
            if whole:
                continue
            for c in self.net.consumers(X):
                if c in inside:
                    reads += min(read_bits(self.net, X, c, a) for a in (Axis.OY, Axis.OX))
        for X, _, cw in sig.outputs:
            if cw and X not in self.ctx.outputs:
                writes += self.net.tensor_size_bits(X)
        return reads * self.rates[0] + writes * self.rates[1]

    # --- capacity-aware bounds -------------------------------------------------
    def _sig_parts(self, col: Column) -> tuple[int, frozenset[str], frozenset[str],
                                               frozenset[str]]:
        """Budget, tensors written anyway, own outputs kept whole, and every tensor
        kept whole in the GB during ``col``'s segment."""
        whole_in = {X for X, w in col.sig.whole_in if w}
        whole_out = {X for X, w, _ in col.sig.outputs if w}
        inside = {lay.name for lay in self.net.layers[col.first:col.last + 1]}
        written = {X for X, _, cw in col.sig.outputs if cw}
        for name in inside:
            written |= written_anyway(self.ctx, inside, name)
        budget = self.ctx.capacity_bits - sum(self.ctx.whole_candidates[X]
                                              for X in whole_in | whole_out)
        return budget, frozenset(written), frozenset(whole_out), frozenset(whole_in | whole_out)

    def tighten(self, col: Column) -> bool:
        """Bound every frame of ``col`` with what the buffer forces; ``True`` when
        the column's bound rose."""
        if col.tight:
            return False
        self.stop.check()
        budget, written, _, whole = self._sig_parts(col)
        if budget <= 0:  # the tensors kept whole alone fill the buffer
            col.tight = col.exact = True
            col.value = None
            return True
        extra = self._extra(col.first, col.last, col.sig)
        groups: dict[tuple, list[int]] = {}
        for spec in self.specs[(col.first, col.last)]:
            groups.setdefault((spec[2], spec[3], spec[5]), []).append(spec[4])
        best = math.inf
        for (tb, axis, order), tiles in groups.items():
            self.stop.check()  # the column stays at its cheap bound, still valid
            key = (col.first, col.last, tb, axis, order, budget, written, whole)
            got = self.cap_bounds.get(key)
            if got is None:
                got = interval_excess_bounds(self.net, col.first, col.last, tb, axis, order,
                                             tiles, budget, written, whole,
                                             read_rate=self.rates[0], write_rate=self.rates[1],
                                             k_unroll=self.ctx.k_unroll)
                self.cap_bounds[key] = got
            for n, excess, slack in zip(tiles, *got, strict=True):
                spec = (col.first, col.last, tb, axis, n, order)
                bound = self._cheapest(spec) + float(excess)
                col.frame_bounds[spec] = bound
                col.frame_slack[spec] = int(slack)
                best = min(best, bound)
        col.tight = True
        if best == math.inf:  # no frame fits its own transient buffers
            col.exact, col.value = True, None
            return True
        old = col.bound
        col.bound = max(col.bound, best + extra)
        return col.bound > old

    def _direct(self, col: Column, spec: FrameKey, fine: bool = True, chunked: bool = False,
                geo: SegmentGeometry | None = None) -> tuple[Segment, float] | None:
        """The frame with every decision at its cheapest choice, and its cost, when it
        fits the buffer: its value is then usually the frame's bound.

        ``fine`` splits each layer into the most sub-tiles (least transient
        buffer); otherwise one sub-tile (fewest GB operand accesses).
        ``chunked`` streams weights loaded once in the most chunks (least
        transient buffer) instead of whole."""
        first, last, tb, axis, n, order = spec
        net = self.net
        names = tuple(lay.name for lay in net.layers[first:last + 1])
        inside = set(names)
        _, written, _, whole = self._sig_parts(col)
        whole_in = {X for X, w in col.sig.whole_in if w}
        T = net.timesteps
        S = T // tb
        if geo is None:
            geo = SegmentGeometry(net, Segment(names, tb, n, axis, order))
        subs, weights, states, acts, ins, halos = {}, {}, {}, {}, {}, {}
        k_unroll = self.ctx.k_unroll
        for lay in net.layers[first:last + 1]:
            name = lay.name
            rows = geo.tile_rows(name)
            m = min(r for r in rows if r > 0) if fine else 1
            if lay.has_weights:
                runs = S * geo.active_tiles(name)
                if runs > 1:
                    weights[name] = RESIDENT
                elif not chunked:
                    weights[name] = WeightChoice()
                else:
                    chunks = max_chunks(lay.k, k_unroll)
                    weights[name] = WeightChoice(chunks=chunks)
                    if chunks > 1:
                        m = 1  # chunked weights are re-read per sub-tile
            if lay.stateful:
                states[name] = StateMode.SPILLED if S == 1 else (
                    StateMode.TILE_RESIDENT if order is Order.SPACE_OUTER else StateMode.RESIDENT)
            subs[name] = m
            if any(c in inside for c in net.consumers(name)):
                acts[name] = Placement.ON_CHIP  # (a tensor kept whole is read on chip too)
            for src in lay.inputs:
                if src in inside:
                    continue
                if src in whole_in:
                    ins[src] = Placement.ON_CHIP
                else:
                    ins[src] = Placement.DRAM
                    halos[src] = Halo.KEEP
        seg = Segment(names, tb, n, axis, order, sub_tiles=subs, weights=weights,
                      states=states, activations=acts, inputs=ins, halos=halos)
        terms = segment_terms(net, seg, SegmentContext(whole, written), geo)
        occupancy = sum(t.persistent_bits for t in terms) + sum(
            (t.local for t in terms if t.local is not None), np.zeros(1, dtype=np.int64))
        if int(occupancy.max()) > self.ctx.capacity_bits:
            return None
        reads = sum(t.read_bits for t in terms)
        writes = sum(t.write_bits for t in terms)
        value = reads * self.rates[0] + writes * self.rates[1]
        if self.energy:
            for lay in geo.layers:
                gr, gw = layer_gb_access_bits(geo, lay, subs[lay.name])
                value += gr * self.rates[2] + gw * self.rates[3]
        return seg, value

    # --- pricing ---------------------------------------------------------------
    def _frame(self, spec: FrameKey) -> Frame | None:
        if spec in self.frame_cache:
            return self.frame_cache[spec]
        first, last, tb, axis, n, order = spec
        fb = _FrameBuilder(self.ctx, first, last, tb, axis, n, order)
        options = fb.build()
        self.stats["frames_built"] += 1
        frame = None
        if options is not None and not (order is Order.SPACE_OUTER and not any(
                o.state is StateMode.TILE_RESIDENT for opts in options.values() for o in opts)):
            inside = set(fb.layers)
            frame = Frame(0, first, last, fb.layers, tb, axis, n, order, options, fb.geo.n * fb.L,
                          0, (), (), tuple(name for name in fb.layers if any(
                              c in inside for c in self.net.consumers(name))),
                          fb.halo_bits(options))
        self.frame_cache[spec] = frame
        return frame

    def _restrict(self, frame: Frame, sig: Signature) -> tuple[Frame, int] | None:
        whole_in = dict(sig.whole_in)
        outs = {X: (w, c) for X, w, c in sig.outputs}
        budget = self.ctx.capacity_bits - sum(self.ctx.whole_candidates[X]
                                              for X, w in sig.whole_in if w)
        if budget <= 0:
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

    def _price_frame(self, col: Column, spec: FrameKey, best: float, extra: float) -> bool:
        """Solve one frame of ``col``; ``False`` when the deadline stops the pricing."""
        if self.stop.expired():
            col.bound = max(col.bound, min(best, self._spec_bound(spec) + extra,
                                           *col.unproven.values()))
            return False
        col.tried.add(spec)
        frame = self._frame(spec)
        restricted = None if frame is None else self._restrict(frame, col.sig)
        if restricted is None:
            col.unproven.pop(spec, None)
            return True
        t0 = time.perf_counter()
        attempt = col.attempts.get(spec, 0)
        col.attempts[spec] = attempt + 1
        local = self._local(*restricted, LOCAL_LIMIT_S * 8 ** attempt)
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
        """Price ``col`` exactly: the best frame under its signature."""
        self.tighten(col)
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
        if col.unproven:
            # Open frames: the column is worth at least the least of them and of the best.
            col.bound = max(col.bound, min(best, min(col.unproven.values())))
            return
        col.exact = True
        col.value = None if best == math.inf else best
        self.stats["columns_priced"] += 1
        LOG.debug("priced %d..%d %s: bound %.0f value %s (%d frames built so far)", col.first,
                  col.last, col.sig, col.bound, col.value, self.stats["frames_built"])

    # --- master ------------------------------------------------------------------
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
            raise _MasterStoppedError(ans.bound)
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

    def touch(self, col: Column) -> None:
        """Note that ``col``'s price may change before the next master solve."""
        self._touched.add(col.first)
        self._prices.pop(id(col), None)

    def master_path(self, exact_only: bool = False
                    ) -> tuple[list[Column], float, float, bool] | None:
        """The master solved exactly as a shortest path over segment boundaries.

        A node is a boundary ``k`` with, for every tensor that may stay whole
        and crosses ``k``, whether it is whole there and whether it is written
        for a later DRAM reader: exactly the master MIP's ``w`` and ``cross``
        variables, so the two have the same optimum (checked by the tests).
        Returns what :meth:`master` returns, or ``None`` when no cover exists.
        """
        L = len(self.net.layers)
        if self._groups is None:
            self._groups = {}
            for c in self.columns:
                self._groups.setdefault((c.first, tuple(sorted(c.sig.whole_in))), []).append(c)
        cache = self._prices

        def price_of(col: Column) -> float | None:
            if exact_only:
                return col.upper
            key = id(col)
            if key in cache:
                return cache[key]
            price = None if col.exact and col.value is None else float(round(col.price))
            cache[key] = price
            return price

        # Boundaries up to the first start of a column touched since the last solve
        # keep their labels (only columns starting there or later changed price).
        start = 0
        if self._table is not None and not exact_only:
            start = min(self._touched, default=L)
            best = self._table
            for k in range(start + 1, L + 1):
                best[k] = {}
        else:
            best = [{} for _ in range(L + 1)]
            best[0][()] = (0.0, None, None)
        if not exact_only:
            self._table, self._touched = best, set()
        lc = self.last_consumer
        reach = max(c.last - c.first for c in self.columns) + 1 if self.columns else 0
        for k in range(max(0, start - reach), L):
            for state, (cost, _, _) in sorted(best[k].items()):
                group = self._groups.get((k, tuple((X, w) for X, w, _ in state)), ())
                # A tensor last read in the column is written exactly when it is not whole.
                limit = min((lc[X] for X, w, cw in state if cw == w), default=L)
                for col in group:
                    if col.last >= limit or col.last < start:
                        continue
                    price = price_of(col)
                    if price is None:
                        continue
                    total = cost + price
                    nexts = self._transitions.get((id(col), state))
                    if nexts is None:
                        nexts = self._transitions[(id(col), state)] = self._next_states(col, state)
                    after = best[col.last + 1]
                    for key in nexts:
                        old = after.get(key)
                        # Ties go to the column built first, whichever boundary was relabelled.
                        if old is None or total < old[0] or (total == old[0]
                                                             and col.rank < old[1].rank):
                            after[key] = (total, col, state)
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

    def solve(self, time_limit_s: float | None = None
              ) -> tuple[Mapping | None, float, float]:
        """Price and re-solve until the master uses exact columns only, or until
        ``self.stop`` fires (or ``time_limit_s`` passes, when given).

        Returns the best mapping found (or ``None``), its value in model units
        (``inf`` when none), and a proven lower bound.
        """
        local_end = None if time_limit_s is None else time.perf_counter() + time_limit_s
        lower = 0.0

        def stopped() -> bool:
            return self.stop.expired() or (local_end is not None
                                           and time.perf_counter() >= local_end)

        while not stopped():
            try:
                res = self.master(time_limit_s=self.stop.limit_s(None)) if self.master_mip \
                    else self.master_path()
            except _MasterStoppedError as stop:  # the deadline came during the master solve
                lower = max(lower, stop.bound or 0.0)
                break
            if res is None:
                return None, math.inf, math.inf  # no cover at all: infeasible
            chosen, value, bound, optimal = res
            lower = max(lower, bound)
            self._report(lower)
            LOG.debug("master %.0f (bound %.0f), %d of %d columns priced", value, bound,
                      self.stats["columns_priced"], len(self.columns))
            pending = [c for c in chosen if not c.exact]
            if not pending:
                if optimal:
                    return self.mapping_of(chosen), value, value
                break
            for c in pending:
                self.touch(c)
            try:
                if sum([self.tighten(c) for c in pending]):
                    continue  # bounds rose: ask the master again before pricing anything
                for col in pending:
                    self.price(col)
                    if stopped():
                        break
            except SearchStoppedError:
                break
        res = self.incumbent()
        if res is None:
            return None, math.inf, lower
        chosen, value = res
        return self.mapping_of(chosen), value, min(lower, value)

    def incumbent(self) -> tuple[list[Column], float] | None:
        """The best mapping over the segments found so far and its value, or ``None``."""
        try:
            res = self.master(exact_only=True, time_limit_s=10.0) if self.master_mip \
                else self.master_path(exact_only=True)
        except _MasterStoppedError:
            res = None
        return None if res is None else (res[0], res[1])

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
            if c.segment is not None:
                segs.append(c.segment)
                continue
            assert c.frame is not None
            segs.append(segment_of(c.frame, c.chosen))
        return Mapping(tuple(segs)).canonical(self.net)
