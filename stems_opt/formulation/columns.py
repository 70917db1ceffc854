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

import contextlib
import gc
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from stems_opt.cost.evaluation import fewest_cycles
from stems_opt.cost.geometry import SegmentGeometry
from stems_opt.cost.traffic import SegmentContext, mapping_contexts
from stems_opt.formulation.backend import BackendAnswer, SolveOptions
from stems_opt.formulation.bounds import (
    frames_excess_bounds,
    max_chunks,
    read_bits,
)
from stems_opt.formulation.data import (
    CHIP,
    Frame,
    FrameKey,
    LayerOption,
    _Context,
    frame_axes,
    frame_latency_floor,
    interval_specs,
    make_context,
    spec_lower_bound,
    written_anyway,
)
from stems_opt.formulation.frame_store import FrameStore
from stems_opt.formulation.model import LinearModel, build_frame_model, segment_of
from stems_opt.formulation.neighbourhood import Turns, first_fit
from stems_opt.formulation.nest_floor import frame_operand_floor
from stems_opt.formulation.operand_floors import operand_floor_fj
from stems_opt.formulation.primal import Rates, repair, segment_value
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
from stems_opt.network import Axis, Network
from stems_opt.problem import Objective, Problem
from stems_opt.progress import Progress
from stems_opt.stopping import SearchStoppedError, Stop

LOG = logging.getLogger("stems_opt.columns")
PRIMAL_FRAMES = 2
"""Frames of a column repaired per call of :meth:`ColumnSolver.repair_price`."""
REPAIR_TRIES = 6
"""Frames tried per frame to repair, when the greedy cannot fit some."""
DIVE_SHARE = 0.1
"""Share of the time limit the dive may take before the exact search."""
DIVE_NONE_SHARE = 0.5
"""Share of the time limit the dive may take while it has found no mapping at all."""
DIVE_ASK_S = 1.0
"""Seconds between the dive's checks for a first mapping once its share has passed."""
DIVE_CAP_S = 30.0
"""Without a time limit, the dive stops after ``DIVE_SHARE`` of this."""
LOCAL_LIMIT_S = 2.0
TIE_BATCH = 400
"""Columns on paths tied with the master's tightened together (:meth:`ColumnSolver.master_ties`)."""
TIE_S = 3.0
"""Seconds the tied columns of one round may take (the rest wait for the next round)."""
COLUMN_BUDGET = 100_000
"""Columns built up front at most: intervals are opened by length, shortest first, while
their columns fit; longer intervals are opened when the proof needs them."""
EAGER_LAYERS = 100
"""Deeper networks start from their one-layer intervals even when the budget allows
more: the dive's first mapping comes before the seconds it takes to build the rest."""
EXCLUDED_REFRESH_S = 1.0
"""Seconds between recomputations of the bound on mappings through unopened intervals."""
"""First time limit of a frame's local solve; a frame left open is retried with 8x more."""
Backend = Callable[[LinearModel, SolveOptions, dict[int, int] | None], BackendAnswer]


def _ladder(n: int) -> bool:
    """Tile counts the dive samples: 1, 2, 3, 4, 6, 8, 12, 16, 24, ..."""
    while n > 4 and n % 2 == 0:
        n //= 2
    return n <= 4


class _Specs(dict):
    """The frames of each interval ``(first, last)``, listed when first asked for."""

    def __init__(self, network: Network, axes: tuple[Axis, ...]):
        super().__init__()
        self.network, self.axes = network, axes

    def __missing__(self, key: tuple[int, int]) -> list[FrameKey]:
        specs = self[key] = interval_specs(self.network, key[0], key[1], self.axes)
        return specs


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector: building columns allocates a few
    objects per column and none in cycles, and the collections the allocations
    trigger would walk every column built so far, again and again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


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
    repaired: set[FrameKey] = field(default_factory=set)  # frames given a greedy segment
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
        self._by_key: dict[tuple, Column] | None = None
        self._crossing: dict[int, list[str]] = {}
        self._interval_bounds: dict[tuple[int, int], dict[FrameKey, float]] = {}
        self._by_interval: dict[tuple[int, int], list[Column]] | None = None
        self._extra_parts: dict[tuple[int, int], tuple[dict[str, int], dict[str, int]]] = {}
        self._transitions: dict[tuple, list[tuple]] = {}
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
        self.specs = _Specs(self.net, self.axes)
        self.frame_cache: dict[FrameKey, Frame | None] = {}
        self.frame_store = FrameStore(self.ctx)
        self.spec_bounds: dict[FrameKey, float] = {}
        self.cap_bounds: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.cheapest: dict[tuple, float] = {}
        self.columns: list[Column] = []
        self._excluded: tuple[float, float] | None = None  # (bound, when computed)
        self._floor: np.ndarray | None = None
        # Called with each better mapping's value (model units) as the search finds it.
        self.on_incumbent: Callable[[float], None] | None = None
        self.best_found = math.inf
        # Mappings from elsewhere (named schedules as they arrive) to seed, polled.
        self.seed_source: Callable[[], Iterable[Mapping]] | None = None
        self._seeded: set[int] = set()
        self._seed_keep: list[Mapping] = []
        self.stats = {"frames_built": 0, "local_solves": 0, "frames_direct": 0,
                      "master_solves": 0, "columns": 0, "columns_priced": 0,
                      "variables": 0, "constraints": 0, "frames_repaired": 0}
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
        L = len(self.net.layers)
        self.max_len = min(L, problem.max_segment_layers or L)
        self._layer_parts = self._cheap_layer_parts()
        self._reach = 0
        self._opened: set[tuple[int, int]] = set()
        # Intervals up to this length are opened (their columns built); longer ones only
        # when asked for (:meth:`open_interval`) or when the proof needs them (open_more).
        self.open_len = 0
        self._budget_len = self._lengths_within(COLUMN_BUDGET)
        # A network too deep to build whole (or deeper than EAGER_LAYERS) starts from its
        # one-layer intervals: the dive finds a first mapping over them before the rest
        # of the budget is built.
        whole = self._budget_len >= self.max_len and L <= EAGER_LAYERS
        self._open_lengths(self._budget_len if whole else 1)
        self.stats.update(columns=len(self.columns), open_len=self.open_len)

    # --- opening intervals -------------------------------------------------------
    def _lengths_within(self, budget: int) -> int:
        """The longest interval length whose intervals, with every shorter one, have at
        most ``budget`` columns (at least 1)."""
        L, total = len(self.net.layers), 0
        for length in range(1, self.max_len + 1):
            total += sum(self.signature_count(first, first + length - 1)
                         for first in range(L - length + 1))
            if total > budget:
                return max(1, length - 1)
        return self.max_len

    def _open_lengths(self, length: int) -> None:
        """Open every interval up to ``length`` layers (first layer first)."""
        L = len(self.net.layers)
        with _collector_paused():
            for first in range(L):
                for last in range(first + self.open_len, min(L, first + length)):
                    self.stop.check()  # building columns can take seconds on deep networks
                    if (first, last) not in self._opened:
                        self._add_interval(first, last)
        self.open_len = length

    def open_interval(self, first: int, last: int) -> bool:
        """Build the columns of ``first..last`` if they are not built yet and the
        interval lies in the search space; ``True`` when it is open."""
        length = last - first + 1
        if length > self.max_len or first < 0 or last >= len(self.net.layers):
            return False
        if length > self.open_len and (first, last) not in self._opened:
            self._add_interval(first, last)
        return True

    def open_more(self) -> bool:
        """Open the next interval lengths (about half the column budget more);
        ``False`` when every interval is open already, or when the search is stopped
        meanwhile (what was opened stays; the rest is still bounded apart)."""
        if self.open_len >= self.max_len:
            return False
        L, total, length = len(self.net.layers), 0, self.open_len
        while length < self.max_len and (length == self.open_len or total <= COLUMN_BUDGET // 2):
            length += 1
            total += sum(self.signature_count(first, first + length - 1)
                         for first in range(L - length + 1))
        try:
            self._open_lengths(length)
        except SearchStoppedError:
            return False
        self.stats.update(columns=len(self.columns), open_len=self.open_len)
        LOG.debug("opened intervals up to %d layers: %d columns", length, len(self.columns))
        return True

    def _add_interval(self, first: int, last: int) -> None:
        """Build the columns of one interval at their cheap bounds."""
        # The full time batch in one tile has the least cheap bound of any frame of the
        # interval (its capacity-free bound is its cheapest choices: one time batch and
        # one tile add nothing), and one tile the fewest GB operand accesses.
        T = self.net.timesteps
        # (With loop nests the nest floor depends on the time batch: the coarse one
        # holds for every time batch.)
        base = min(self._cheapest((first, last, T, axis, 1, Order.TIME_OUTER), any_tb=True)
                   for axis in self.axes)
        new = [Column(first, last, sig, base + self._extra(first, last, sig),
                      rank=len(self.columns) + i)
               for i, sig in enumerate(self.signatures(first, last))]
        self.columns.extend(new)
        self._opened.add((first, last))
        self._reach = max(self._reach, last - first + 1)
        for col in new:
            if self._groups is not None:
                self._groups.setdefault((col.first, tuple(sorted(col.sig.whole_in))),
                                        []).append(col)
            if self._by_key is not None:
                self._by_key[(col.first, col.last, col.sig)] = col
            if self._by_interval is not None:
                self._by_interval.setdefault((col.first, col.last), []).append(col)
        self._table.clear()  # the master's labels are recomputed with the new columns
        self._excluded = None

    def _layer_floor(self) -> np.ndarray:
        """Prefix sums of a per-layer floor of every column's cheap bound: weights
        read once, streamed state read and written, network outputs written, the
        network input read (its least reading over the axes), in model units."""
        from stems_opt.network import StatePersistence

        net, r0, r1 = self.net, self.rates[0], self.rates[1]
        streaming = net.state_persistence is StatePersistence.STREAMING
        floor = [0]
        for lay in net.layers:
            reads = lay.weight_size_bits if lay.has_weights else 0
            writes = net.tensor_size_bits(lay.name) if lay.name in self.ctx.outputs else 0
            if lay.stateful and streaming:
                reads += lay.state_size_bits
                writes += lay.state_size_bits
            for src in dict.fromkeys(lay.inputs):
                if self.producer[src] < 0 and src not in self.ctx.whole_candidates:
                    reads += min(read_bits(net, src, lay.name, a) for a in (Axis.OY, Axis.OX))
            floor.append(floor[-1] + reads * r0 + writes * r1)
        return np.array(floor, dtype=np.float64)

    def excluded_bound(self, fresh: bool = False) -> float:
        """A lower bound on every mapping with a segment over an interval not opened
        (``inf`` when every interval is open).

        Opened intervals count at their columns' least price, the others at
        the per-layer floor of :meth:`_layer_floor`; the bound is the least
        shortest path through one interval longer than :attr:`open_len`.
        Prices only rise, so a value computed earlier stays valid; it is
        recomputed when ``fresh`` or older than ``EXCLUDED_REFRESH_S``.
        """
        if self.open_len >= self.max_len:
            return math.inf
        now = time.perf_counter()
        if self._excluded is not None and not fresh and \
                now - self._excluded[1] < EXCLUDED_REFRESH_S:
            return self._excluded[0]
        if self._floor is None:
            self._floor = self._layer_floor()
        A, L = self._floor, len(self.net.layers)
        least: dict[tuple[int, int], float] = {}
        for c in self.columns:
            p = math.inf if c.exact and c.value is None else c.price
            key = (c.first, c.last)
            if p < least.get(key, math.inf):
                least[key] = p
        ending: dict[int, list[tuple[int, float]]] = {}
        starting: dict[int, list[tuple[int, float]]] = {}
        for (first, last), p in least.items():
            ending.setdefault(last + 1, []).append((first, p))
            starting.setdefault(first, []).append((last + 1, p))
        lo_len, hi_len = self.open_len + 1, self.max_len
        pre = np.full(L + 1, np.inf)
        pre[0] = 0.0
        for k in range(1, L + 1):
            best = min((pre[f] + p for f, p in ending.get(k, ())), default=math.inf)
            lo, hi = max(0, k - hi_len), k - lo_len
            if hi >= lo:
                best = min(best, float((pre[lo:hi + 1] - A[lo:hi + 1]).min() + A[k]))
            pre[k] = best
        suf = np.full(L + 1, np.inf)
        suf[L] = 0.0
        for k in range(L - 1, -1, -1):
            best = min((suf[e] + p for e, p in starting.get(k, ())), default=math.inf)
            lo, hi = k + lo_len, min(L, k + hi_len)
            if hi >= lo:
                best = min(best, float((suf[lo:hi + 1] + A[lo:hi + 1]).min() - A[k]))
            suf[k] = best
        through = math.inf
        for f in range(L):
            lo, hi = f + lo_len, min(L, f + hi_len)
            if hi >= lo:
                through = min(through, float(pre[f] - A[f] + (A[lo:hi + 1] + suf[lo:hi + 1]).min()))
        self._excluded = (through, now)
        return through

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

    def _cheapest(self, spec: FrameKey, any_tb: bool = False) -> float:
        """Cost of the frame's cheapest choices: DRAM traffic, and for energy the
        least operand energy below DRAM (it depends on the tile count and, with
        loop nests, the time batch; ``any_tb``: a bound for every time batch)."""
        tb = spec[2] if self.energy and self.problem.hardware.loop_nests and not any_tb \
            else None
        key = (spec[0], spec[1], spec[3],
               spec[4] if self.energy or self.latency_weight else 0, tb)
        got = self.cheapest.get(key)
        if got is None:
            r, w = self._cheapest_split(spec[0], spec[1], spec[3])
            got = r * self.rates[0] + w * self.rates[1]
            if self.energy and tb is None:  # (every tile count of the interval at once)
                got += self.ctx.energy_weight * operand_floor_fj(
                    self.net, spec[0], spec[1], spec[3], spec[4], self.problem.hardware)
            elif self.energy:  # (likewise, per time batch: nest_floor)
                got += self.ctx.energy_weight * frame_operand_floor(
                    self.net, spec[0], spec[1], spec[3], spec[4], self.problem.hardware, tb)
            if self.latency_weight:  # (it depends on the tile count, not the time batch)
                got += self.latency_weight * frame_latency_floor(self.ctx, spec)
            self.cheapest[key] = got
        return got

    def _cheap_layer_parts(self) -> list[tuple[int, int, int, int, tuple]]:
        """Per layer, what :func:`~stems_opt.formulation.data.cheapest_split` sums:
        reads and writes that do not depend on the interval, the output's size when
        it is written whenever read outside (0 otherwise), its last consumer, and
        ``(producer, bits along OY, bits along OX)`` of each input that is read from
        DRAM when made outside."""
        from stems_opt.network import StatePersistence

        net, ctx = self.net, self.ctx
        streaming = net.state_persistence is StatePersistence.STREAMING
        parts = []
        for lay in net.layers:
            reads = lay.weight_size_bits if lay.has_weights else 0
            writes = 0
            if lay.stateful and streaming:
                reads += lay.state_size_bits
                writes += lay.state_size_bits
            size = net.tensor_size_bits(lay.name)
            outside = 0
            if lay.name in ctx.outputs:
                writes += size
            elif lay.name not in ctx.whole_candidates:
                outside = size
            ins = tuple((self.producer[src], read_bits(net, src, lay.name, Axis.OY),
                         read_bits(net, src, lay.name, Axis.OX))
                        for src in dict.fromkeys(lay.inputs) if src not in ctx.whole_candidates)
            parts.append((reads, writes, outside, self.last_consumer.get(lay.name, -1), ins))
        return parts

    def _cheapest_split(self, first: int, last: int, axis: Axis) -> tuple[int, int]:
        """:func:`~stems_opt.formulation.data.cheapest_split` of the frames of
        ``first..last`` along ``axis``, from the per-layer parts (it is called for
        every interval opened)."""
        along = 1 if axis is Axis.OY else 2
        reads = writes = 0
        for reads_j, writes_j, outside, lc, ins in self._layer_parts[first:last + 1]:
            reads += reads_j
            writes += writes_j
            if outside and lc > last:
                writes += outside
            for src in ins:
                if src[0] < first:
                    reads += src[along]
        return reads, writes

    def _spec_bound(self, spec: FrameKey) -> float:
        b = self.spec_bounds.get(spec)
        if b is None:
            b = self.rate * spec_lower_bound(self.ctx, spec)
            if self.latency_weight:
                b += self.latency_weight * frame_latency_floor(self.ctx, spec)
            self.spec_bounds[spec] = b
        return b

    def _extra(self, first: int, last: int, sig: Signature) -> float:
        """Cost the signature forces: DRAM reads of crossing tensors not kept whole
        (the union of each reader's windows), writes for later DRAM readers."""
        parts = self._extra_parts.get((first, last))
        if parts is None:
            inside = {lay.name for lay in self.net.layers[first:last + 1]}
            reads = {X: sum(min(read_bits(self.net, X, c, a) for a in (Axis.OY, Axis.OX))
                            for c in self.net.consumers(X) if c in inside)
                     for X in self.crossing_in(first)}
            writes = {X: 0 if X in self.ctx.outputs else self.net.tensor_size_bits(X)
                      for X in self.outputs(first, last)}
            parts = self._extra_parts[(first, last)] = (reads, writes)
        reads, writes = parts
        r = sum(reads[X] for X, whole in sig.whole_in if not whole)
        w = sum(writes[X] for X, _, cw in sig.outputs if cw)
        return r * self.rates[0] + w * self.rates[1]

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

    def interval_frame_bounds(self, first: int, last: int) -> dict[FrameKey, float]:
        """A bound on every frame of ``first..last`` under *any* signature (before
        the signature's own :meth:`_extra`), computed once per interval.

        It is :meth:`tighten`'s bound with the whole buffer as the budget,
        every tensor that may stay whole across the interval's boundaries
        counted as maybe whole (its cheap side holds the less of the tensor and
        its line buffer, no halo), and every output read later as written
        anyway: each is a relaxation of what a signature fixes.
        """
        got = self._interval_bounds.get((first, last))
        if got is not None:
            return got
        inside = {lay.name for lay in self.net.layers[first:last + 1]}
        outs = self.outputs(first, last)
        written = set(outs)
        for name in inside:
            written |= written_anyway(self.ctx, inside, name)
        maybe = frozenset(self.crossing_in(first)) | frozenset(outs)
        got = {}
        for axis, specs in self._by_axis(self.specs[(first, last)]).items():
            self.stop.check()
            excess, _ = frames_excess_bounds(
                self.net, first, last, axis, [(s[2], s[5], s[4]) for s in specs],
                self.ctx.capacity_bits, frozenset(written), frozenset(), maybe,
                read_rate=self.rates[0], write_rate=self.rates[1], k_unroll=self.ctx.k_unroll)
            for spec, e in zip(specs, excess.tolist(), strict=True):
                got[spec] = self._cheapest(spec) + e
        self._interval_bounds[(first, last)] = got
        return got

    def signature_count(self, first: int, last: int) -> int:
        """How many signatures (columns) the interval has."""
        return 2 ** len(self.crossing_in(first)) * 3 ** len(self.outputs(first, last))

    def raise_interval(self, first: int, last: int) -> bool:
        """Raise every column of ``first..last`` to the interval's signature-free
        bound (:meth:`interval_frame_bounds`); ``True`` when some bound rose."""
        if self._by_interval is None:
            self._by_interval = {}
            for c in self.columns:
                self._by_interval.setdefault((c.first, c.last), []).append(c)
        bounds = self.interval_frame_bounds(first, last)
        best = min(bounds.values(), default=math.inf)
        rose = False
        for col in self._by_interval.get((first, last), []):
            if col.exact or best == math.inf:
                continue
            new = best + self._extra(first, last, col.sig)
            if new > col.bound:
                col.bound = new
                self.touch(col)
                rose = True
        return rose

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
        best = math.inf
        for axis, specs in self._by_axis(self.specs[(col.first, col.last)]).items():
            self.stop.check()  # the column stays at its cheap bound, still valid
            key = (col.first, col.last, axis, budget, written, whole)
            got = self.cap_bounds.get(key)
            if got is None:
                got = frames_excess_bounds(self.net, col.first, col.last, axis,
                                           [(s[2], s[5], s[4]) for s in specs], budget, written,
                                           whole, read_rate=self.rates[0],
                                           write_rate=self.rates[1], k_unroll=self.ctx.k_unroll)
                self.cap_bounds[key] = got
            for spec, excess, slack in zip(specs, got[0].tolist(), got[1].tolist(), strict=True):
                bound = self._cheapest(spec) + excess
                col.frame_bounds[spec] = bound
                col.frame_slack[spec] = slack
                best = min(best, bound)
        col.tight = True
        if best == math.inf:  # no frame fits its own transient buffers
            col.exact, col.value = True, None
            return True
        old = col.bound
        col.bound = max(col.bound, best + extra)
        return col.bound > old

    def _cheapest_segment(self, col: Column, spec: FrameKey, fine: bool = True,
                          chunked: bool = False, geo: SegmentGeometry | None = None
                          ) -> tuple[Segment, SegmentContext]:
        """The frame with every decision at its cheapest choice, and its context
        under ``col``'s signature.

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
        return seg, SegmentContext(whole, written)

    def _direct(self, col: Column, spec: FrameKey, fine: bool = True, chunked: bool = False,
                geo: SegmentGeometry | None = None) -> tuple[Segment, float] | None:
        """The frame with every decision at its cheapest choice
        (:meth:`_cheapest_segment`), and its cost, when it fits the buffer: its
        value is then usually the frame's bound."""
        seg, sctx = self._cheapest_segment(col, spec, fine, chunked, geo)
        value, peak = segment_value(self.net, seg, sctx, self.unit_rates, geo)
        if peak > self.ctx.capacity_bits:
            return None
        return seg, value

    def _one_tile(self, col: Column) -> bool:
        """Give ``col`` a segment of the largest time batch and the fewest tiles (1, 2,
        3, 4, 6, 8, ... along the first axis where some fit, as the layer-by-layer
        named schedules choose theirs) where the choices that hold the least fit
        (:func:`~stems_opt.formulation.neighbourhood.first_fit`); ``True`` when its
        found value improved."""
        for axis in self.axes:
            got = first_fit(self, col, axis)
            if got is not None:  # (one axis is enough for a first mapping)
                if col.upper is None or got[1] < col.upper:
                    col.upper, col.segment, col.frame, col.chosen = got[1], got[0], None, {}
                    return True
                return False
        return False

    def _sampled_bounds(self, col: Column) -> dict[FrameKey, float]:
        """Capacity-aware bounds (:meth:`tighten`'s) of a sample of ``col``'s frames:
        tile counts 1, 2, 3, 4, 6, 8, 12, ... and the largest, for ranking only
        (the column's bound needs every frame). Empty when the tensors kept
        whole fill the buffer."""
        if col.tight:
            return col.frame_bounds
        budget, written, _, whole = self._sig_parts(col)
        if budget <= 0:
            return {}
        out = {}
        for axis, specs in self._by_axis(self.specs[(col.first, col.last)]).items():
            if self.stop.expired():  # (ranking only: what is sampled so far will do)
                break
            top = max(s[4] for s in specs)
            sample = [s for s in specs if s[4] == top or _ladder(s[4])]
            excess, _ = frames_excess_bounds(
                self.net, col.first, col.last, axis, [(s[2], s[5], s[4]) for s in sample],
                budget, written, whole, read_rate=self.rates[0], write_rate=self.rates[1],
                k_unroll=self.ctx.k_unroll)
            for spec, e in zip(sample, excess.tolist(), strict=True):
                out[spec] = self._cheapest(spec) + e
        return out

    @staticmethod
    def _by_axis(specs: list[FrameKey]) -> dict[Axis, list[FrameKey]]:
        """Frames grouped by axis (bounded together), in their order."""
        groups: dict[Axis, list[FrameKey]] = {}
        for spec in specs:
            groups.setdefault(spec[3], []).append(spec)
        return groups

    def repair_price(self, col: Column, frames: int = PRIMAL_FRAMES,
                     until: float | None = None) -> bool:
        """Give ``col`` a feasible segment by greedy repair
        (:func:`stems_opt.formulation.primal.repair`) of its ``frames`` lowest-bound
        frames not repaired before (among a sample of tile counts unless the
        column is tightened); ``True`` when its best value found improved.
        Only upper bounds come from here, never proofs. Past ``until`` (a
        ``time.perf_counter()`` value) no more frames are repaired, and a repair
        under way gives up."""
        if col.exact and col.value is None:
            return False

        def stopped() -> bool:
            return self.stop.expired() or (until is not None and time.perf_counter() >= until)

        extra = self._extra(col.first, col.last, col.sig)
        bounds = self._sampled_bounds(col)
        specs = sorted(bounds, key=lambda s: (bounds[s], s[4], self.net.timesteps // s[2],
                                              s[5].value, s[3].value))
        improved, tried, found = False, 0, 0
        failed: set[tuple] = set()
        for spec in specs:
            bound = bounds[spec] + extra
            if bound == math.inf or (col.upper is not None and bound >= col.upper):
                break
            if spec in col.repaired or spec[2:4] + spec[5:] in failed:
                continue
            if stopped():
                break
            col.repaired.add(spec)
            tried += 1
            seg, sctx = self._cheapest_segment(col, spec, fine=True)
            got = repair(self.net, seg, sctx, self.ctx.capacity_bits, self.unit_rates,
                         self.ctx.k_unroll, stopped=stopped)
            self.stats["frames_repaired"] += 1
            if got is not None and (col.upper is None or got[1] < col.upper):
                col.upper, col.segment, col.frame, col.chosen = got[1], got[0], None, {}
                self.touch(col)
                improved = True
            # Frames the greedy cannot fit do not count, up to a few; after a failure the
            # next try has another time batch, axis or order (their transients differ most).
            found += got is not None
            if got is None:
                failed.add(spec[2:4] + spec[5:])
            if found >= frames or tried >= REPAIR_TRIES * frames:
                break
        return improved

    # --- pricing ---------------------------------------------------------------
    def _frame(self, spec: FrameKey) -> Frame | None:
        if spec in self.frame_cache:
            return self.frame_cache[spec]
        # Built once per process for this network, hardware and objective, and for
        # every smaller buffer (frame_store.py).
        frame = self.frame_store.frame(spec)
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

    def _price_frame(self, col: Column, spec: FrameKey, best: float, extra: float,
                     limit_s: float | None = None) -> bool:
        """Solve one frame of ``col`` (within ``limit_s``, else the local limit of its
        attempt); ``False`` when the deadline stops the pricing."""
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
        for mode, touched in self._touched.items():
            touched.add(col.first)
            self._prices[mode].pop(id(col), None)

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
        cache = self._prices[mode]
        groups = self._groups
        if exact_only:  # only columns with a segment found take part: skip the others early
            groups = {}
            for c in self.columns:
                if c.upper is not None:
                    groups.setdefault((c.first, tuple(sorted(c.sig.whole_in))), []).append(c)

        def price_of(col: Column) -> float | None:
            key = id(col)
            if key in cache:
                return cache[key]
            if exact_only:
                price = col.upper
            elif col.exact and col.value is None:
                price = None
            elif primal:
                price = col.upper if col.upper is not None else \
                    None if col.repaired else float(round(col.price))
            else:
                price = float(round(col.price))
            cache[key] = price
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
        lc = self.last_consumer
        for k in range(max(0, start - self._reach), L):
            if mode == "bound" and self.stop.expired():
                # A pass takes up to a second on deep networks: give way to the deadline,
                # and rebuild the half-filled labels next time.
                del self._table[mode]
                raise _MasterStoppedError(None)
            for state, (cost, _, _) in sorted(best[k].items()):
                group = groups.get((k, tuple((X, w) for X, w, _ in state)), ())
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

    def master_ties(self, limit: int) -> list[Column]:
        """Up to ``limit`` columns not yet tightened that lie on some optimal path of
        the last bound master (:meth:`master_path`; its labels, read backwards).

        Tightening all of them at once, not only the one path returned, saves a
        master pass per column where many paths tie (deep networks at the
        compulsory traffic). Empty when the labels are not complete.
        """
        best = self._table.get("bound")
        L = len(self.net.layers)
        if best is None or () not in best[L]:
            return []
        cache, groups, lc = self._prices["bound"], self._groups or {}, self.last_consumer
        target = best[L][()][0]
        suf: list[dict] = [{} for _ in range(L + 1)]
        suf[L][()] = 0.0
        found: dict[int, Column] = {}
        for k in range(L - 1, -1, -1):
            for state, (cost, _, _) in best[k].items():
                group = groups.get((k, tuple((X, w) for X, w, _ in state)), ())
                limit_k = min((lc[X] for X, w, cw in state if cw == w), default=L)
                least = math.inf
                for col in group:
                    price = cache.get(id(col))
                    nexts = self._transitions.get((id(col), state))
                    if col.last >= limit_k or price is None or nexts is None:
                        continue
                    after = suf[col.last + 1]
                    rest = min((after.get(key, math.inf) for key in nexts), default=math.inf)
                    least = min(least, price + rest)
                    if not col.tight and cost + price + rest <= target + 0.5:
                        found[id(col)] = col
                if least < math.inf:
                    suf[k][state] = least
        return sorted(found.values(), key=lambda c: c.rank)[:limit]

    def _tighten_for(self, cols: list[Column], seconds: float) -> int:
        """Tighten ``cols`` in order for at most about ``seconds`` (the master, the
        seeds and the deadline are looked at between rounds); how many rose."""
        end, rose = time.perf_counter() + seconds, 0
        for col in cols:
            if time.perf_counter() > end:
                break
            if self.tighten(col):
                rose += 1
            self.touch(col)
        return rose

    def column_of(self, first: int, last: int, sig: Signature) -> Column | None:
        """The column of interval ``first..last`` with signature ``sig`` (its interval
        opened first if it was not), or ``None`` outside the search space."""
        if not self.open_interval(first, last):
            return None
        if self._by_key is None:
            self._by_key = {(c.first, c.last, c.sig): c for c in self.columns}
        return self._by_key.get((first, last, sig))

    def seed(self, mapping: Mapping) -> int:
        """Offer ``mapping``'s segments to their columns as found segments (upper
        values); returns how many columns improved.

        A segment's column is its interval with the signature the mapping
        gives it. Inputs kept whole are read on chip (never worse, as in the
        frame options); a segment is then scored in its column's context and
        skipped if it overflows there, or if it does not cover a contiguous
        interval of the layer order.
        """
        net = self.net
        index = {lay.name: i for i, lay in enumerate(net.layers)}
        segs = mapping.segments
        where = {name: k for k, seg in enumerate(segs) for name in seg.layers}
        ctxs = mapping_contexts(net, mapping)
        improved = 0
        for k, (seg, sctx) in enumerate(zip(segs, ctxs, strict=True)):
            first, last = index[seg.layers[0]], index[seg.layers[-1]]
            if seg.layers != tuple(lay.name for lay in net.layers[first:last + 1]):
                continue
            outs = []
            for X in self.outputs(first, last):
                later = [where[c] for c in net.consumers(X) if where[c] > k]
                # Read from DRAM by a later segment: written there.
                outs.append((X, X in ctxs[k + 1].whole,
                             any(X not in ctxs[j].whole for j in later)))
            sig = Signature(tuple((X, X in sctx.whole) for X in self.crossing_in(first)),
                            tuple(outs))
            col = self.column_of(first, last, sig)
            if col is None or (col.exact and col.value is None):
                continue
            inputs = {src: Placement.ON_CHIP if src in sctx.whole else p
                      for src, p in seg.inputs.items()}
            seg = seg.replace(inputs=inputs)
            _, written, _, whole = self._sig_parts(col)
            dram = {X for X, p in seg.activations.items() if p is Placement.DRAM}
            value, peak = segment_value(net, seg, SegmentContext(whole, written | dram),
                                        self.unit_rates)
            if peak > self.ctx.capacity_bits or (col.upper is not None and value >= col.upper):
                continue
            col.upper, col.segment, col.frame, col.chosen = value, seg, None, {}
            self.touch(col)
            improved += 1
        return improved

    def dive(self, until: float | None, until_none: float | None = None) -> None:
        """Find mappings fast: the master over repaired columns (:meth:`repair_price`),
        the others at their bounds, until its answer uses repaired columns only
        or ``until`` (a ``time.perf_counter()`` value) passes; while no mapping
        is found, until ``until_none`` passes.

        Each answer's columns without a segment are repaired, so the path moves
        to the columns whose greedy segments are cheapest; every column found
        also serves the exact search (an upper value to stop its pricing at).
        """
        found = [False, 0.0]  # (a mapping found, when last asked)

        def over(ask: bool = False) -> bool:
            if self.stop.expired():
                return True
            now = time.perf_counter()
            if until is None or now < until:
                return False
            # Past the share: go on only while nothing is found, up to the second limit
            # (asking for the incumbent is a pass over every column: a few times a second
            # in the first pass below, once per step after it).
            if until_none is None or now >= until_none or found[0]:
                return True
            if ask or now - found[1] >= DIVE_ASK_S:
                found[0], found[1] = self.incumbent() is not None, now
            return found[0]

        # First one layer per segment, and one block per segment, with every tensor
        # through DRAM: the path below then has a complete alternative to every column
        # it tries (and the named schedules' segmentations are among them).
        index = {lay.name: i for i, lay in enumerate(self.net.layers)}
        blocks = {(index[b.layers[0]], index[b.layers[-1]]) for b in self.net.block_list}
        for first, last in sorted(blocks):
            self.open_interval(first, last)
        # One-layer columns first, each at the fewest tiles that fit (a few scorings):
        # with them alone the path has a mapping. Then each of these columns and the
        # blocks' is repaired greedily from its frames of least bound (better segments).
        plain = [c for c in self.columns if (c.first == c.last or (c.first, c.last) in blocks)
                 and not any(w for _, w in c.sig.whole_in)
                 and all(not w and cw for _, w, cw in c.sig.outputs)]
        for col in plain:
            if col.first == col.last and col.upper is None:
                if over():
                    return
                self.touch(col)
                self._one_tile(col)
        self.note_incumbent()
        for col in sorted(plain, key=lambda c: c.first == c.last):
            if not col.repaired:
                if over(ask=True):
                    return
                self.touch(col)
                self.repair_price(col)
        self.note_incumbent()
        while self.open_len < self._budget_len:  # one length at a time: a stop keeps them
            try:
                self._open_lengths(self.open_len + 1)
            except SearchStoppedError:
                return  # (the intervals opened so far stay; the rest are bounded apart)
            self.stats.update(columns=len(self.columns), open_len=self.open_len)
        while not over(ask=True):
            # (repairs stop at the share once a mapping is found, else at the second limit)
            found[0] = found[0] or self.incumbent() is not None
            if not self.dive_step(over, None if until is None else until if found[0]
                                  else until_none):
                return

    def dive_step(self, over: Callable[[], bool] | None = None,
                  until: float | None = None) -> bool:
        """One step of :meth:`dive`'s loop: the master over repaired columns, the others
        at their bounds, and a greedy repair of the columns it picks without a
        segment (until ``over()`` says so, or ``until`` passes, a ``time.perf_counter()``
        value); ``False`` when there is nothing to repair."""
        self.poll_seeds()
        res = self.master_path(primal=True)
        if res is None:
            return False
        self.note_incumbent()
        pending = [c for c in res[0] if c.upper is None]
        for col in pending:
            self.touch(col)
            self.repair_price(col, until=until)
            if not col.repaired:  # nothing left to repair: keep it out of the dive
                col.repaired.add(())
            if over is not None and over():
                break
        return bool(pending)

    def solve(self, time_limit_s: float | None = None, lower_bound: float = 0.0
              ) -> tuple[Mapping | None, float, float]:
        """Price and re-solve until the master uses exact columns only, or until
        ``self.stop`` fires (or ``time_limit_s`` passes, when given).

        ``lower_bound`` is a proven lower bound from elsewhere (model units),
        for example the optimum or bound for a larger buffer: a mapping
        reaching it is optimal at once.

        Returns the best mapping found (or ``None``), its value in model units
        (``inf`` when none), and a proven lower bound.
        """
        start = time.perf_counter()
        local_end = None if time_limit_s is None else start + time_limit_s
        lower = lower_bound

        def stopped() -> bool:
            return self.stop.expired() or (local_end is not None
                                           and time.perf_counter() >= local_end)

        left = self.stop.limit_s(time_limit_s)
        span = DIVE_CAP_S if left is None else left
        self.dive(start + DIVE_SHARE * span, start + DIVE_NONE_SHARE * span)
        self.stats["dive_s"] = time.perf_counter() - start
        turns = Turns(self, start, left)  # the neighbourhood search's share of the time
        if lower > 0:
            found = self.incumbent()
            if found is not None and found[1] <= lower:
                return self.mapping_of(found[0]), found[1], found[1]

        while not stopped():
            try:
                res = self.master(time_limit_s=self.stop.limit_s(None)) if self.master_mip \
                    else self.master_path()
            except _MasterStoppedError as stop:  # the deadline came during the master solve
                lower = max(lower, min(stop.bound or 0.0, self.excluded_bound()))
                break
            if res is None and self.open_more():
                continue  # no cover by the opened intervals: longer ones may cover
            if res is None:
                return None, math.inf, math.inf  # no cover at all: infeasible
            chosen, value, bound, optimal = res
            # The master sees opened intervals only: the others are bounded apart.
            lower = max(lower, min(bound, self.excluded_bound()))
            self._report(lower)
            self.poll_seeds()
            self.note_incumbent()
            LOG.debug("master %.0f (bound %.0f), %d of %d columns priced", value, bound,
                      self.stats["columns_priced"], len(self.columns))
            pending = [c for c in chosen if not c.exact]
            if not pending:
                if optimal and value <= self.excluded_bound(fresh=True):
                    return self.mapping_of(chosen), value, value
                if optimal and self.open_more():
                    continue  # a mapping through a longer interval may still be better
                break
            if turns.due():
                try:
                    turns.turn()
                except SearchStoppedError:
                    break
            # Every column on a path tied with the master's, tightened in one batch.
            ties = [] if self.master_mip else self.master_ties(TIE_BATCH)
            for c in pending:
                self.touch(c)
            try:
                # Intervals with many signatures: one bound for all of them first.
                if sum([self.raise_interval(c.first, c.last) for c in pending
                        if (c.first, c.last) not in self._interval_bounds
                        and self.signature_count(c.first, c.last) > 6]):
                    continue
                if sum([self.tighten(c) for c in pending]) + self._tighten_for(ties, TIE_S):
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
                    if turns.due():  # (pricing a long list takes a while)
                        turns.turn()
            except SearchStoppedError:
                break
        self.stats.update(lns_moves=turns.moves, lns_improved=turns.improved,
                          lns_s=round(turns.used_s, 3))
        res = self.incumbent()
        if res is None:
            return None, math.inf, lower
        chosen, value = res
        return self.mapping_of(chosen), value, min(lower, value)

    def poll_seeds(self) -> None:
        """Seed the mappings :attr:`seed_source` offers that were not seeded yet."""
        if self.seed_source is None:
            return
        for mapping in self.seed_source():
            if id(mapping) not in self._seeded:
                self._seeded.add(id(mapping))
                self._seed_keep.append(mapping)  # (keeps ids unique)
                self.seed(mapping)

    def note_incumbent(self) -> None:
        """Tell :attr:`on_incumbent` when the found segments make a better mapping."""
        if self.on_incumbent is None:
            return
        res = self.master_path(exact_only=True)
        if res is not None and res[1] < self.best_found:
            self.best_found = res[1]
            self.on_incumbent(res[1])

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
