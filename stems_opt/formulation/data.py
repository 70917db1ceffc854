"""Precomputed model data shared by every backend.

The joint problem is cut into *frames* and *layer options*:

* A **frame** is a candidate segment: a contiguous interval of layers with a
  time batch ``Tb``, an axis, a tile count ``n`` and an order.
* A **layer option** is everything one layer of a frame decides, under one
  *context*: its sub-tile count ``m``, its weight and state decisions, and
  the context of its tensors (in-segment placement of its output, whether
  the output is kept whole across segments or written for a later segment,
  where each input comes from and its halo rule).

Every option carries its objective coefficient (traffic bits, energy in
integer fJ, latency in cycles, or the EDP search's ``a fJ + b cycles``) and
its global-buffer coefficient on every capacity row of its frame
(``persistent + local[t, p]``), both computed by the cost model's own term
functions, so the MIP objective of a mapping is the cost model's value.
The rows a tensor read from DRAM keeps across tile boundaries are shared by
its readers, so they belong to the frame and tensor, not to one option
(:attr:`Frame.halo_bits`).

Exact reductions (each keeps at least one optimal mapping):

* OX frames are dropped when the network is symmetric under swapping the
  axes (same cost and occupancy as the OY frame).
* ``space_outer`` frames are kept only where a layer can be tile-resident
  (otherwise ``time_outer`` is never worse: same traffic, carried rows held
  for ``Tb`` instead of ``T`` timesteps).
* Within one layer and context, an option whose cost and every capacity
  coefficient are no smaller than another's is dropped (Pareto pruning);
  so is any option that alone overflows the buffer.
* Reading from DRAM a tensor that is kept whole on chip is excluded (the
  on-chip read is never worse).
* Frames with a layer that fits in no context are dropped, as are frames
  whose lower bound plus the best completion of the rest of the chain
  exceeds a known upper bound (a dynamic program over segment boundaries).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from stems_opt.cost.energy import EnergyRates, layer_operand_total_fj, nest_hardware
from stems_opt.cost.geometry import SegmentGeometry, sub_tile_limits, tile_bounds
from stems_opt.cost.latency import LayerLatency, layer_compute_floor
from stems_opt.cost.traffic import (
    Term,
    dram_read_term,
    kept_halo_term,
    output_term,
    state_term,
    weight_term,
)
from stems_opt.formulation.bounds import read_bits
from stems_opt.hardware import Hardware
from stems_opt.mapping import Halo, Order, Placement, Segment, StateMode, WeightChoice
from stems_opt.network import Axis, Layer, Network, divisors
from stems_opt.problem import Objective, Problem

CHIP, KEEP, REREAD = "chip", "keep", "reread"


class FrameBuildStoppedError(Exception):
    """A frame's build was stopped by the deadline (nothing of it is kept)."""


@dataclass(frozen=True)
class InputContext:
    """Where one input of a layer comes from in a frame: ``chip``, or DRAM with a halo rule."""

    tensor: str
    source: str  # CHIP, KEEP or REREAD
    in_frame: bool


@dataclass(frozen=True)
class OutputContext:
    """What happens to a layer's output in a frame.

    ``on_chip`` is the in-segment placement (``None`` without in-frame
    consumers); ``whole`` keeps it whole in the GB for later segments;
    ``cross_write`` writes it to DRAM for a later segment that reads it there.
    """

    on_chip: bool | None
    whole: bool
    cross_write: bool


@dataclass(frozen=True)
class LayerOption:
    """One layer's decisions in one context, with its coefficients."""

    layer: str
    m: int
    weight: WeightChoice | None
    state: StateMode | None
    inputs: tuple[InputContext, ...]
    output: OutputContext
    cost: int
    read_bits: int
    write_bits: int
    coeff: np.ndarray = field(compare=False, repr=False)  # GB bits on each capacity row


@dataclass
class Frame:
    """A candidate segment and the options of its layers."""

    index: int
    first: int
    last: int
    layers: tuple[str, ...]
    time_batch: int
    axis: Axis
    tiles: int
    order: Order
    options: dict[str, list[LayerOption]]
    rows: int
    lower_bound: int = 0
    in_tensors: tuple[str, ...] = ()
    out_tensors: tuple[str, ...] = ()
    frame_tensors: tuple[str, ...] = ()
    halo_bits: dict[str, int] = field(default_factory=dict)
    """Per tensor its readers may read from DRAM under ``keep``: the bits held across
    tile boundaries when they do (on every capacity row, with the halo variable)."""

    def segment(self) -> Segment:
        """The bare segment (decisions come from the chosen options)."""
        return Segment(self.layers, self.time_batch, self.tiles, self.axis, self.order)


@dataclass
class ModelData:
    """Everything a backend needs: frames, crossing tensors and constants."""

    problem: Problem
    objective: Objective
    frames: list[Frame]
    whole_candidates: dict[str, int]  # tensor -> size bits, may be kept whole across segments
    last_consumer: dict[str, int]     # tensor -> index of its last consumer
    producer: dict[str, int]          # tensor -> index of its producer (-1 for the input)
    constant: float                   # objective part no mapping changes (compute, neurons)
    capacity_bits: int
    upper_bound: float | None = None
    excluded_bound: float = math.inf  # least value of a mapping using a frame left out
    lower_bound: float = 0.0          # shortest-path bound over the whole space
    build_s: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)


def axis_symmetric(network: Network) -> bool:
    """Whether swapping OY and OX maps the network onto itself."""
    i = network.input
    if i.height != i.width:
        return False
    return all(lay.oy == lay.ox and lay.iy == lay.ix and lay.fy == lay.fx
               and lay.stride_y == lay.stride_x and lay.pad_y == lay.pad_x
               for lay in network.layers)


def _weight_choices(layer: Layer, k_unroll: int) -> list[WeightChoice]:
    out = [WeightChoice(resident=True), WeightChoice()]
    out += [WeightChoice(chunks=k) for k in divisors(layer.k)
            if k > 1 and layer.k // k >= k_unroll]
    return out


def _pareto(options: list[LayerOption]) -> list[LayerOption]:
    """Drop options no better than another in cost and in every capacity coefficient."""
    if len(options) <= 1:
        return options
    options = sorted(options, key=lambda o: (o.cost, int(o.coeff.sum()), o.m))
    kept: list[LayerOption] = []
    kept_mat = np.empty((len(options), options[0].coeff.size), dtype=np.int64)
    for o in options:
        # Sorted by cost, so every kept option costs no more than o.
        if kept and np.any(np.all(kept_mat[:len(kept)] <= o.coeff, axis=1)):
            continue
        kept_mat[len(kept)] = o.coeff
        kept.append(o)
    return kept


class _FrameBuilder:
    """Builds the options of one frame from the cost model's term functions."""

    def __init__(self, data_ctx: _Context, first: int, last: int, tb: int, axis: Axis,
                 tiles: int, order: Order, terms: dict[tuple, object] | None = None):
        self.c = data_ctx
        # The cost model's terms of this frame's geometry, by decision: the same for
        # every objective and buffer, so a caller may share them (frame_store.py).
        self.terms: dict[tuple, object] = {} if terms is None else terms
        net = data_ctx.network
        self.layers = tuple(lay.name for lay in net.layers[first:last + 1])
        self.first, self.last = first, last
        self.seg = Segment(self.layers, tb, tiles, axis, order)
        self.geo = SegmentGeometry(net, self.seg)
        self.inside = set(self.layers)
        self.limits = sub_tile_limits(net, self.seg)
        self.L = len(self.layers)
        self.latency: dict[str, LayerLatency] = {}
        # Per layer and context, the options generated in order as (index, largest
        # coefficient), each fitting a smaller buffer than those before: the order in
        # which contexts first fit, whatever the buffer (see frame_store.py).
        self.first_fit: dict[str, dict[tuple, list[tuple[int, int]]]] = {}

    def part(self, key: tuple, make: Callable[[], Term]) -> tuple[int, int, np.ndarray]:
        """``(read bits, write bits, coefficients)`` of the term ``make`` computes
        (memoised under ``key`` in :attr:`terms`; the arrays are never changed)."""
        got = self.terms.get(key)
        if got is None:
            t = make()
            got = self.terms[key] = (t.read_bits, t.write_bits,
                                     self.coeff(t.persistent_bits, t.local))
        return got  # type: ignore[return-value]

    def coeff(self, term_persistent: int, local: np.ndarray | None) -> np.ndarray:
        vec = np.full(self.geo.n * self.L, term_persistent, dtype=np.int64)
        if local is not None:
            vec += local.reshape(-1)
        return vec

    def halo_bits(self, options: dict[str, list[LayerOption]]) -> dict[str, int]:
        """:attr:`Frame.halo_bits` of the frame with these options."""
        kept = dict.fromkeys(ic.tensor for opts in options.values() for o in opts
                             for ic in o.inputs if ic.source == KEEP)
        return {X: kept_halo_term(self.geo, X).persistent_bits for X in kept}

    def build(self, stop: Callable[[], bool] | None = None
              ) -> dict[str, list[LayerOption]] | None:
        """Every layer's options, or ``None`` when some layer has none; raises
        :class:`FrameBuildStoppedError` when ``stop()`` turns true between layers
        (a frame of a deep interval can take seconds, longer than a time limit's
        grace)."""
        out: dict[str, list[LayerOption]] = {}
        for name in self.layers:
            if stop is not None and stop():
                raise FrameBuildStoppedError(f"frame {self.first}..{self.last} stopped")
            opts = self.layer_options(self.c.network.layer(name))
            if not opts:
                return None
            out[name] = opts
        return out

    def input_contexts(self, layer: Layer) -> list[list[InputContext]]:
        per_input = []
        for src in dict.fromkeys(layer.inputs):
            in_frame = src in self.inside
            sources = [KEEP, REREAD]
            if in_frame or src in self.c.whole_candidates:
                sources = [CHIP, *sources]
            per_input.append([InputContext(src, s, in_frame) for s in sources])
        return per_input

    def output_contexts(self, layer: Layer) -> list[OutputContext]:
        net = self.c.network
        cons = net.consumers(layer.name)
        inner = any(c in self.inside for c in cons)
        cross = any(c not in self.inside for c in cons)
        placements: list[bool | None] = [True, False] if inner else [None]
        crosses = [(False, False)]
        if cross:
            crosses = [(False, True)]
            if layer.name in self.c.whole_candidates:
                crosses += [(True, False), (True, True)]
        out = []
        for p, (whole, cw) in itertools.product(placements, crosses):
            if whole and p is False:
                continue  # a tensor kept whole is read on chip inside its segment too
            out.append(OutputContext(p, whole, cw))
        return out

    def layer_options(self, layer: Layer) -> list[LayerOption]:
        c = self.c
        geo = self.geo
        cap = c.capacity_bits
        name = layer.name
        net = c.network
        is_output = name in c.outputs
        weights = _weight_choices(layer, c.k_unroll) if layer.has_weights else [None]
        states: list[StateMode | None] = [None]
        if layer.stateful:
            states = [StateMode.RESIDENT, StateMode.SPILLED]
            if self.seg.order is Order.SPACE_OUTER:
                states.append(StateMode.TILE_RESIDENT)
        in_ctx = self.input_contexts(layer)
        out_ctx = self.output_contexts(layer)
        result: list[LayerOption] = []
        by_context: dict[tuple, list[LayerOption]] = {}
        first_fit = self.first_fit[name] = {}
        made = 0
        for m in range(1, self.limits[name] + 1):
            # Parts, each depending on one decision and m only.
            w_parts = []
            for wc in weights:
                if wc is None:
                    w_parts.append((None, 0, 0, None))
                    continue
                w_parts.append((wc, *self.part(("w", name, wc, m), lambda wc=wc, m=m:
                                               weight_term(geo, layer, wc, m))))
            v_parts = []
            for sm in states:
                if sm is None:
                    v_parts.append((None, 0, 0, None))
                    continue
                v_parts.append((sm, *self.part(("v", name, sm, m), lambda sm=sm, m=m:
                                               state_term(geo, layer, sm, m,
                                                          net.state_persistence))))
            o_parts = []
            for oc in out_ctx:
                written = is_output or oc.on_chip is False or oc.cross_write
                placement = None if oc.on_chip is None else (
                    Placement.ON_CHIP if oc.on_chip else Placement.DRAM)
                o_parts.append((oc, *self.part(
                    ("o", name, placement, oc.whole, written, m),
                    lambda p=placement, oc=oc, wr=written, m=m:
                    output_term(geo, layer, p, oc.whole, wr, m))))
            i_parts = []
            for choices in in_ctx:
                parts = []
                for ic in choices:
                    if ic.source == CHIP:
                        parts.append((ic, 0, 0, None))
                        continue
                    halo = Halo.KEEP if ic.source == KEEP else Halo.REREAD
                    parts.append((ic, *self.part(("i", name, ic.tensor, halo, m),
                                                 lambda ic=ic, h=halo, m=m:
                                                 dram_read_term(geo, ic.tensor, layer, h, m))))
                i_parts.append(parts)
            if c.latency_weight:  # every option's cycles at once (see option_cost)
                self.layer_latency(layer).prefill(
                    m, weights, states,
                    [is_output or oc.on_chip is False or oc.cross_write for oc in out_ctx],
                    [tuple((ic.tensor, Halo.KEEP if ic.source == KEEP else Halo.REREAD)
                           for ic in combo if ic.source != CHIP)
                     for combo in itertools.product(*in_ctx)])
            operand_fj: dict[int, int] = {}  # per weight-chunk count
            if c.energy_weight:
                for wc, *_ in w_parts:
                    chunks = _chunks(wc)
                    key = ("e", name, m, chunks)
                    if key not in self.terms:
                        self.terms[key] = layer_operand_total_fj(
                            geo, layer, m, c.hardware, chunks)
                    operand_fj[chunks] = self.terms[key]  # type: ignore[assignment]
            # Weight x state pairs, pruned once per m.
            wv = []
            for (wc, wr, ww, wcf), (sm, vr, vw, vcf) in itertools.product(w_parts, v_parts):
                coeff = np.zeros(geo.n * self.L, dtype=np.int64)
                if wcf is not None:
                    coeff = coeff + wcf
                if vcf is not None:
                    coeff = coeff + vcf
                wv.append((wc, sm, wr + vr, ww + vw, coeff))
            for oc_part in o_parts:
                for in_combo in itertools.product(*i_parts) if i_parts else [()]:
                    base_r = oc_part[1] + sum(p[1] for p in in_combo)
                    base_w = oc_part[2] + sum(p[2] for p in in_combo)
                    base_c = oc_part[3].copy()
                    for p in in_combo:
                        if p[3] is not None:
                            base_c += p[3]
                    ctx_key = (oc_part[0], tuple(p[0] for p in in_combo))
                    for wc, sm, r, w, coeff in wv:
                        rr, wwb = base_r + r, base_w + w
                        total = base_c + coeff
                        peak = int(total.max())
                        stairs = first_fit.setdefault(ctx_key, [])
                        if not stairs or peak < stairs[-1][1]:
                            stairs.append((made, peak))
                        made += 1
                        if peak > cap:
                            continue
                        cost = self.option_cost(layer, m, wc, sm, oc_part[0], in_combo,
                                                rr, wwb, operand_fj)
                        by_context.setdefault(ctx_key, []).append(LayerOption(
                            name, m, wc, sm, ctx_key[1], ctx_key[0], int(cost), rr, wwb, total))
        for opts in by_context.values():
            result.extend(_pareto(opts))
        return result

    def layer_latency(self, layer: Layer) -> LayerLatency:
        """The :class:`LayerLatency` of ``layer`` in this frame (memoised)."""
        lat = self.latency.get(layer.name)
        if lat is None:
            lat = self.latency[layer.name] = LayerLatency(
                self.geo, layer, self.c.hardware, nest_hardware(self.c.hardware),
                fewest_cycles=self.c.objective is Objective.LATENCY)
        return lat

    def option_cost(self, layer: Layer, m: int, wc: WeightChoice | None,
                    sm: StateMode | None, oc: OutputContext, in_combo: tuple,
                    reads: int, writes: int, operand_fj: dict[int, int]) -> int:
        """An option's objective coefficient in model units."""
        c = self.c
        if c.objective is Objective.TRAFFIC:
            return reads + writes
        cost = 0
        if c.energy_weight:
            cost = c.energy_weight * (reads * c.rates.read_fj_per_bit
                                      + writes * c.rates.write_fj_per_bit
                                      + operand_fj[_chunks(wc)])
        if c.latency_weight:
            lat = self.layer_latency(layer)
            written = layer.name in c.outputs or oc.on_chip is False or oc.cross_write
            dram = tuple((p[0].tensor, Halo.KEEP if p[0].source == KEEP else Halo.REREAD)
                         for p in in_combo if p[0].source != CHIP)
            cost += c.latency_weight * lat.cycles(m, wc, sm, written, dram)
        return cost


def _chunks(wc: WeightChoice | None) -> int:
    """Weight chunks a step walks under ``wc`` (1: resident, none or one chunk)."""
    return 1 if wc is None or wc.resident else wc.chunks


@dataclass
class _Context:
    network: Network
    objective: Objective
    capacity_bits: int
    k_unroll: int
    rates: EnergyRates
    whole_candidates: dict[str, int]
    outputs: set[str]
    hardware: Hardware
    energy_weight: int = 0   # model units per fJ of memory energy
    latency_weight: int = 0  # model units per cycle


def objective_weights(problem: Problem) -> tuple[int, int]:
    """Model units per fJ of energy and per cycle of latency (both 0 for traffic)."""
    obj = problem.objective
    if obj is Objective.EDP:
        if problem.weights is None:
            raise ValueError("the EDP objective is solved by weighted sums (stems_opt.edp)")
        return problem.weights
    return {Objective.TRAFFIC: (0, 0), Objective.ENERGY: (1, 0),
            Objective.LATENCY: (0, 1)}[obj]


def objective_constant(problem: Problem) -> float:
    """The part of the objective no mapping changes: compute and neuron-update
    energy in fJ (times the energy weight), 0 for traffic and latency."""
    a, _ = objective_weights(problem)
    if not a:
        return 0.0
    from stems_opt.cost.energy import pj_to_fj

    net, hw = problem.network, problem.hardware
    total = 0.0
    for lay in net.layers:
        e = hw.array.mac_pj if lay.uses_mac else hw.array.accumulate_pj
        total += lay.operations(net.timesteps) * pj_to_fj(e) * lay.spike_rate
        total += lay.neuron_updates(net.timesteps) * pj_to_fj(hw.array.neuron_update_pj)
    return a * total


def make_context(problem: Problem) -> _Context:
    """What option generation needs to know about ``problem``."""
    net, hw = problem.network, problem.hardware
    a, b = objective_weights(problem)
    return _Context(net, problem.objective, hw.gb_capacity_bits, hw.array.factor("K"),
                    EnergyRates.of(hw), _whole_candidates(problem), set(net.output_names), hw,
                    a, b)


def _whole_candidates(problem: Problem) -> dict[str, int]:
    """Tensors that may be kept whole across segments: read outside a segment that
    could hold their producer, and small enough to fit the buffer at all."""
    net = problem.network
    cap = problem.hardware.gb_capacity_bits
    out = {}
    for lay in net.layers:
        if net.consumers(lay.name) and net.tensor_size_bits(lay.name) < cap:
            out[lay.name] = net.tensor_size_bits(lay.name)
    return out


def frame_specs(problem: Problem) -> Iterable[tuple[int, int, int, Axis, int, Order]]:
    """Every (first, last, Tb, axis, n, order) of the search space, after the exact
    axis and order reductions."""
    axes = frame_axes(problem.network)
    L = len(problem.network.layers)
    max_len = problem.max_segment_layers or L
    for first in range(L):
        for last in range(first, min(L, first + max_len)):
            yield from interval_specs(problem.network, first, last, axes)


def frame_axes(network: Network) -> tuple[Axis, ...]:
    """The axes frames tile along: OY alone when the network is axis-symmetric."""
    return (Axis.OY,) if axis_symmetric(network) else (Axis.OY, Axis.OX)


def interval_specs(network: Network, first: int, last: int, axes: Iterable[Axis]
                   ) -> list[tuple[int, int, int, Axis, int, Order]]:
    """The frames of :func:`frame_specs` of the interval ``first..last``, in its order."""
    T = network.timesteps
    lays = network.layers[first:last + 1]
    stateful = any(lay.stateful for lay in lays)
    out = []
    for axis in axes:
        max_n = min(lay.extent(axis) for lay in lays)
        for tb in divisors(T):
            for n in range(1, max_n + 1):
                out.append((first, last, tb, axis, n, Order.TIME_OUTER))
                if stateful and n > 1 and tb < T:
                    out.append((first, last, tb, axis, n, Order.SPACE_OUTER))
    return out


FrameKey = tuple[int, int, int, Axis, int, Order]


def spec_lower_bound(ctx: _Context, spec: FrameKey) -> int:
    """A lower bound on any option set of frame ``spec``, cheap to compute.

    Per layer, each decision at its cheapest choice that fits the buffer
    alone: weights resident (else streamed in every step), state kept
    (resident, tile-resident or ``S = 1``; else spilled every time batch),
    outputs and inputs on chip where they can be (else written once / read
    by the union of the consumer's windows).
    """
    first, last, tb, axis, n, order = spec
    net, cap = ctx.network, ctx.capacity_bits
    lays = net.layers[first:last + 1]
    S = net.timesteps // tb
    from stems_opt.cost.geometry import tile_bounds

    bounds = tile_bounds(net, [lay.name for lay in lays], axis, n)
    total = cheapest_bits(ctx, spec)
    for lay in lays:
        b = bounds[lay.name]
        rows = [b[t + 1] - b[t] for t in range(n)]
        if lay.has_weights and lay.weight_size_bits > cap:
            total += (S * sum(1 for r in rows if r) - 1) * lay.weight_size_bits
        if lay.stateful:
            v = lay.state_size_bits
            kept = v <= cap or S == 1 or (order is Order.SPACE_OUTER
                                          and max(rows) * lay.state_row_bits(axis) <= cap)
            if not kept:
                total += 2 * (S - 1) * v
    return total


def cheapest_bits(ctx: _Context, spec: FrameKey) -> int:
    """Traffic of frame ``spec`` with every decision at its cheapest choice,
    regardless of the buffer: each weight once, the state traffic that
    ``state_persistence`` makes unavoidable, outputs written only when read
    outside (and not possibly kept whole), inputs from outside read once."""
    return sum(cheapest_split(ctx, spec))


def cheapest_split(ctx: _Context, spec: FrameKey) -> tuple[int, int]:
    """:func:`cheapest_bits` as DRAM reads and writes."""
    from stems_opt.network import StatePersistence

    first, last, _, axis, _, _ = spec
    net = ctx.network
    lays = net.layers[first:last + 1]
    inside = {lay.name for lay in lays}
    reads = writes = 0
    for lay in lays:
        reads += lay.weight_size_bits if lay.has_weights else 0
        if lay.stateful and net.state_persistence is StatePersistence.STREAMING:
            reads += lay.state_size_bits
            writes += lay.state_size_bits
        if lay.name in written_anyway(ctx, inside, lay.name):
            writes += net.tensor_size_bits(lay.name)
        for src in dict.fromkeys(lay.inputs):
            if src in inside or src in ctx.whole_candidates:
                continue
            reads += read_bits(net, src, lay.name, axis)
    return reads, writes


def written_anyway(ctx: _Context, inside: set[str], name: str) -> set[str]:
    """``{name}`` when ``name`` goes to DRAM whatever the frame does: a network
    output, or read outside the frame and never kept whole; else empty."""
    cons = ctx.network.consumers(name)
    if name in ctx.outputs or (any(c not in inside for c in cons)
                               and name not in ctx.whole_candidates):
        return {name}
    return set()


def _interleave(specs: list[tuple[FrameKey, int, float, int]], required: set[FrameKey],
                T: int) -> list[tuple[FrameKey, int, float, int]]:
    """Order frames for a capped model: the required ones, then round-robin over
    intervals (best bound first), each interval's frames by bound, the full
    time batch first, then the fewest tiles. Spreading the budget over the
    intervals keeps every segmentation reachable."""
    groups: dict[tuple[int, int], list[tuple[FrameKey, int, float, int]]] = {}
    head = [s for s in specs if s[0] in required]
    for s in specs:
        if s[0] not in required:
            groups.setdefault((s[0][0], s[0][1]), []).append(s)
    queues = []
    for group in groups.values():
        group.sort(key=lambda s: (s[2], T // s[0][2], s[0][4], s[0][5].value, s[3]))
        queues.append(group)
    queues.sort(key=lambda g: (g[0][2], g[0][3]))
    out = list(head)
    depth = 0
    while True:
        layer = [g[depth] for g in queues if depth < len(g)]
        if not layer:
            return out
        out.extend(layer)
        depth += 1


def _option_estimate(net: Network, spec: FrameKey) -> int:
    """Sub-tile choices summed over the frame's layers: a proxy for its build cost."""
    first, last, tb, axis, n, order = spec
    seg = Segment(tuple(lay.name for lay in net.layers[first:last + 1]), tb, n, axis, order)
    return sum(sub_tile_limits(net, seg).values())


def _energy_lower_bound(ctx: _Context, traffic_lb: int) -> int:
    # Every DRAM bit costs at least the cheaper of a read and a write (fJ).
    return traffic_lb * min(ctx.rates.read_fj_per_bit, ctx.rates.write_fj_per_bit)


def frame_latency_floor(ctx: _Context, spec: FrameKey) -> int:
    """A lower bound on the latency (cycles) of frame ``spec`` under any decisions
    and signature: per layer, the larger of its compute
    (:func:`~stems_opt.cost.latency.layer_compute_floor`) and its fewest
    DRAM bits over the DRAM bandwidth (:func:`cheapest_split`'s terms of that
    layer). Each step takes at least its compute and its DRAM time, so a
    layer's steps take at least the larger of their sums (``sum max(c, d) >=
    max(sum c, sum d)``, ``sum ceil(x_i) >= sum x_i``)."""
    from stems_opt.network import StatePersistence

    first, last, _, axis, n, _ = spec
    net, hw = ctx.network, ctx.hardware
    lays = net.layers[first:last + 1]
    inside = {lay.name for lay in lays}
    bounds = tile_bounds(net, [lay.name for lay in lays], axis, n)
    bw = float(hw.dram_bandwidth_bits_per_cycle)
    total = 0
    for lay in lays:
        bits = lay.weight_size_bits if lay.has_weights else 0
        if lay.stateful and net.state_persistence is StatePersistence.STREAMING:
            bits += 2 * lay.state_size_bits
        if lay.name in written_anyway(ctx, inside, lay.name):
            bits += net.tensor_size_bits(lay.name)
        bits += sum(read_bits(net, src, lay.name, axis) for src in dict.fromkeys(lay.inputs)
                    if src not in inside and src not in ctx.whole_candidates)
        # Integer ceiling for an integer bandwidth; else one cycle less than the
        # floor, safe from rounding in the steps' float divisions.
        dram = -(-bits // int(bw)) if bw.is_integer() else max(0, math.floor(bits / bw) - 1)
        total += max(dram, layer_compute_floor(lay, axis, bounds[lay.name], net.timesteps, hw))
    return total


def spec_objective_bound(ctx: _Context, spec: FrameKey) -> int:
    """:func:`spec_lower_bound` in model units: traffic bits, or the weighted sum of
    its energy (:func:`_energy_lower_bound`) and :func:`frame_latency_floor`."""
    lb = spec_lower_bound(ctx, spec)
    if ctx.objective is Objective.TRAFFIC:
        return lb
    out = ctx.energy_weight * _energy_lower_bound(ctx, lb) if ctx.energy_weight else 0
    if ctx.latency_weight:
        out += ctx.latency_weight * frame_latency_floor(ctx, spec)
    return out


def _dp_bounds(L: int, specs: list[tuple[FrameKey, int]]) -> tuple[list[float], list[float]]:
    """Shortest-path bounds over segment boundaries: prefix[i] for layers before i,
    suffix[j] for layers from j on."""
    inf = math.inf
    prefix = [inf] * (L + 1)
    prefix[0] = 0
    best: dict[tuple[int, int], int] = {}
    for spec, lb in specs:
        key = (spec[0], spec[1])
        best[key] = min(best.get(key, lb), lb)
    for (first, last), lb in sorted(best.items()):
        if prefix[first] < inf:
            prefix[last + 1] = min(prefix[last + 1], prefix[first] + lb)
    suffix = [inf] * (L + 1)
    suffix[L] = 0
    for (first, last), lb in sorted(best.items(), key=lambda kv: -kv[0][1]):
        if suffix[last + 1] < inf:
            suffix[first] = min(suffix[first], suffix[last + 1] + lb)
    return prefix, suffix


def build_model_data(problem: Problem, upper_bound: float | None = None,
                     required: Iterable[FrameKey] = (), max_frames: int | None = None,
                     max_options_per_frame: int | None = None) -> ModelData:
    """Generate and prune frames and options for ``problem``.

    ``upper_bound`` is the objective value (traffic bits or energy fJ) of a
    known mapping whose frames are listed in ``required``: frames that cannot
    be part of a strictly better mapping are dropped before their options are
    built (bound pruning), the required ones are always kept.

    ``max_frames`` and ``max_options_per_frame`` cap the model: frames are
    built in order of their bound, and frames left out (over either cap) are
    summarised by :attr:`ModelData.excluded_bound`, the least value any
    mapping using one of them can have. The optimum over the model is then
    the global optimum whenever it does not exceed that value.
    """
    import time

    start = time.perf_counter()
    net, hw = problem.network, problem.hardware
    ctx = make_context(problem)
    whole = ctx.whole_candidates
    index = {lay.name: i for i, lay in enumerate(net.layers)}
    producer = {net.input.name: -1, **index}
    last_consumer = {t: max(index[c] for c in net.consumers(t))
                     for t in [net.input.name, *index] if net.consumers(t)}
    L = len(net.layers)
    specs = []
    for spec in frame_specs(problem):
        specs.append((spec, spec_objective_bound(ctx, spec)))
    prefix, suffix = _dp_bounds(L, specs)
    constant = objective_constant(problem)
    required = set(required)
    kept_specs = []
    for spec, lb in specs:
        path = prefix[spec[0]] + lb + suffix[spec[1] + 1] + constant
        if spec in required or upper_bound is None or path < upper_bound:
            kept_specs.append((spec, lb, path, _option_estimate(net, spec)))
    kept_specs = _interleave(kept_specs, required, net.timesteps)
    excluded = math.inf
    frames: list[Frame] = []
    for spec, lb, path, estimate in kept_specs:
        if spec not in required and (
                (max_frames is not None and len(frames) >= max_frames)
                or (max_options_per_frame is not None and estimate > max_options_per_frame)):
            excluded = min(excluded, path)
            continue
        first, last, tb, axis, n, order = spec
        fb = _FrameBuilder(ctx, first, last, tb, axis, n, order)
        options = fb.build()
        if options is None:
            continue
        if order is Order.SPACE_OUTER and not any(
                o.state is StateMode.TILE_RESIDENT for opts in options.values() for o in opts):
            continue
        inside = set(fb.layers)
        in_t = tuple(dict.fromkeys(src for name in fb.layers for src in net.layer(name).inputs
                                   if src not in inside))
        out_t = tuple(name for name in fb.layers
                      if any(c not in inside for c in net.consumers(name)))
        fr_t = tuple(name for name in fb.layers if any(c in inside for c in net.consumers(name)))
        lb_opt = sum(min(o.cost for o in opts) for opts in options.values())
        frames.append(Frame(len(frames), first, last, fb.layers, tb, axis, n, order, options,
                            fb.geo.n * fb.L, max(lb, lb_opt), in_t, out_t, fr_t,
                            fb.halo_bits(options)))
    data = ModelData(problem, problem.objective, frames, whole, last_consumer, producer, constant,
                     hw.gb_capacity_bits, upper_bound)
    data.excluded_bound = excluded
    data.lower_bound = prefix[L] + constant
    data.stats.update(frames_excluded=len(kept_specs) - len(frames),
                      frames_in_space=len(specs), frames_after_bound=len(kept_specs),
                      frames_kept=len(frames),
                      options=sum(len(o) for f in frames for o in f.options.values()),
                      lower_bound_dp=prefix[L] + constant)
    data.build_s = time.perf_counter() - start
    return data
