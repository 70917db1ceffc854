"""Exhaustive enumeration of the mapping space of ``docs/model.md`` for tiny problems.

A test oracle for the exact optimiser (``stems_opt.solvers.solve``). It knows
nothing of the MIP: it walks the *whole* space a :class:`~stems_opt.mapping.Mapping`
can express, with none of the optimiser's reductions (no axis symmetry, no
order or Pareto pruning, no bound pruning, no exclusion of dominated
placements):

* every contiguous segmentation of the layer order;
* per segment: every ``Tb`` dividing T, both axes, every ``n`` in 1..the
  smallest extent along the axis, order ``time_outer`` (and ``space_outer``
  when ``n > 1`` and ``Tb < T``);
* per layer: every ``m`` in 1..``sub_tile_limits``; weights resident, or
  streamed with every chunk count ``k`` dividing K with ``K / k`` at least
  the array's K unrolling (``k = 1`` always); states resident, spilled, or
  tile_resident (only under ``space_outer``, which implies ``n > 1`` and
  ``Tb < T``);
* per tensor: every in-segment placement (``on_chip``/``dram``) of a tensor
  made and read in the segment, every cross-segment placement of a tensor
  made earlier (never ``on_chip`` for the network input), and every halo
  rule (``keep``/``reread``) of each tensor the segment reads from DRAM.

The per-segment enumeration depends only on the segment's layers, so it is
computed once per contiguous run and shared by every segmentation using it;
mappings are the :func:`itertools.product` of those lists.

:func:`brute_force_optimum` scores every mapping with
:func:`stems_opt.cost.evaluation.evaluate` (``fast=False``, the default) or with
:class:`SegmentScorer` (``fast=True``): the same cost-model term functions
``evaluate`` composes, cached per (segment, context), since a mapping's
traffic, memory energy and peak are sums / maxima of per-segment parts given
each segment's :class:`~stems_opt.cost.traffic.SegmentContext`. The fast path
re-scores its winner with ``evaluate``; ``tests/test_optimizer.py`` checks
that both paths agree on whole spaces.
"""

from __future__ import annotations

import itertools
import math
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from stems_opt.cost.energy import EnergyRates, layer_operand_energy_fj, nest_hardware
from stems_opt.cost.evaluation import evaluate
from stems_opt.cost.geometry import SegmentGeometry, sub_tile_limits, weight_chunks
from stems_opt.cost.latency import segment_latency
from stems_opt.cost.traffic import SegmentContext, mapping_contexts, peak_of, segment_terms
from stems_opt.mapping import (
    Halo,
    Mapping,
    Order,
    Placement,
    Segment,
    StateMode,
    WeightChoice,
    check_structure,
)
from stems_opt.network import Axis, Layer, Network, divisors
from stems_opt.problem import Objective, Problem

PLACEMENTS = (Placement.ON_CHIP, Placement.DRAM)
HALOS = (Halo.KEEP, Halo.REREAD)

Run = tuple[str, ...]


# ---------------------------------------------------------------------------
# The space
# ---------------------------------------------------------------------------


T = TypeVar("T")

RUN_DIR: Path | None = None
"""A directory the processes of one test run share (set by ``tests/conftest.py``
under pytest-xdist), or ``None``."""


def run_shared(key: str, compute: Callable[[], T]) -> T:
    """``compute()``, or the value another process of this test run computed for
    ``key`` (pickled in :data:`RUN_DIR`; written whole, then renamed, so a reader
    never sees half a file). Two processes asking at once both compute it."""
    if RUN_DIR is None:
        return compute()
    path = RUN_DIR / f"{key}.pickle"
    try:
        with path.open("rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        pass
    value = compute()
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    with part.open("wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(part, path)
    return value


def weight_choices(layer: Layer, k_unroll: int) -> list[WeightChoice]:
    """Resident, streamed in one chunk, and streamed in every ``k | K`` with ``K/k >= K_u``."""
    out = [WeightChoice(resident=True), WeightChoice()]
    out += [WeightChoice(chunks=k) for k in divisors(layer.k)
            if k > 1 and layer.k // k >= k_unroll]
    return out


def segmentations(layers: Sequence[str]) -> Iterator[tuple[Run, ...]]:
    """Every cut of ``layers`` into contiguous non-empty runs, in order."""
    L = len(layers)
    for cuts in itertools.product((False, True), repeat=max(0, L - 1)):
        runs, start = [], 0
        for i, cut in enumerate(cuts, start=1):
            if cut:
                runs.append(tuple(layers[start:i]))
                start = i
        runs.append(tuple(layers[start:]))
        yield tuple(runs)


def frames(network: Network, run: Run) -> Iterator[Segment]:
    """Bare segments over ``run``: every (Tb, axis, n, order)."""
    T = network.timesteps
    lays = [network.layer(n) for n in run]
    for tb in divisors(T):
        for axis in (Axis.OY, Axis.OX):
            max_n = min(lay.extent(axis) for lay in lays)
            for n in range(1, max_n + 1):
                orders = [Order.TIME_OUTER]
                if n > 1 and tb < T:
                    orders.append(Order.SPACE_OUTER)
                for order in orders:
                    yield Segment(run, tb, n, axis, order)


def segment_variants(problem: Problem, run: Run) -> list[Segment]:
    """Every segment over ``run`` with every decision written out."""
    net = problem.network
    ku = problem.hardware.array.factor("K")
    inside = set(run)
    lays = [net.layer(n) for n in run]
    weighted = [lay for lay in lays if lay.has_weights]
    stateful = [lay for lay in lays if lay.stateful]
    made_and_read = [lay.name for lay in lays if any(c in inside for c in net.consumers(lay.name))]
    earlier = list(dict.fromkeys(src for lay in lays for src in lay.inputs if src not in inside))
    w_opts = [weight_choices(lay, ku) for lay in weighted]
    a_opts = [PLACEMENTS] * len(made_and_read)
    i_opts = [(Placement.DRAM,) if src == net.input.name else PLACEMENTS for src in earlier]
    out: list[Segment] = []
    for base in frames(net, run):
        limits = sub_tile_limits(net, base)
        m_opts = [range(1, limits[n] + 1) for n in run]
        modes = [StateMode.RESIDENT, StateMode.SPILLED]
        if base.order is Order.SPACE_OUTER:
            modes.append(StateMode.TILE_RESIDENT)
        s_opts = [modes] * len(stateful)
        for ms, ws, ss, acts, ins in itertools.product(
                itertools.product(*m_opts), itertools.product(*w_opts),
                itertools.product(*s_opts), itertools.product(*a_opts),
                itertools.product(*i_opts)):
            activations = dict(zip(made_and_read, acts, strict=True))
            inputs = dict(zip(earlier, ins, strict=True))
            dram_read = sorted(t for t, p in {**activations, **inputs}.items()
                               if p is Placement.DRAM)
            for hs in itertools.product(HALOS, repeat=len(dram_read)):
                out.append(Segment(
                    layers=run, time_batch=base.time_batch, tiles=base.tiles, axis=base.axis,
                    order=base.order, sub_tiles=dict(zip(run, ms, strict=True)),
                    weights={lay.name: w for lay, w in zip(weighted, ws, strict=True)},
                    states={lay.name: s for lay, s in zip(stateful, ss, strict=True)},
                    activations=activations, inputs=inputs,
                    halos=dict(zip(dram_read, hs, strict=True))))
    return out


def segment_count(problem: Problem, run: Run) -> int:
    """``len(segment_variants(problem, run))`` by arithmetic, without building segments.

    Per frame: the product of the per-layer ``m`` ranges, weight choices and
    state modes, times 3 per tensor that may be on chip (on chip, or DRAM
    with either halo rule) and 2 for the network input (DRAM, either halo).
    """
    net = problem.network
    ku = problem.hardware.array.factor("K")
    inside = set(run)
    lays = [net.layer(n) for n in run]
    made_and_read = sum(1 for lay in lays if any(c in inside for c in net.consumers(lay.name)))
    earlier = list(dict.fromkeys(src for lay in lays for src in lay.inputs if src not in inside))
    tensors = 3 ** (made_and_read + sum(1 for s in earlier if s != net.input.name))
    tensors *= 2 ** sum(1 for s in earlier if s == net.input.name)
    weights = math.prod(len(weight_choices(lay, ku)) for lay in lays if lay.has_weights)
    stateful = sum(1 for lay in lays if lay.stateful)
    total = 0
    for base in frames(net, run):
        limits = sub_tile_limits(net, base)
        modes = 3 if base.order is Order.SPACE_OUTER else 2
        total += math.prod(limits.values()) * weights * modes ** stateful * tensors
    return total


class Space:
    """The mapping space of a problem, with per-run segment lists computed once.

    Per run it also keeps, per segment variant, whether ``check_structure``
    finds a violation in it and its *interface* (its activation and input
    placements: all that the :class:`~stems_opt.cost.traffic.SegmentContext`
    of any segment depends on besides the segmentation).
    """

    def __init__(self, problem: Problem):
        self.problem = problem
        self.network = problem.network
        self.k_unroll = problem.hardware.array.factor("K")
        self.names = [lay.name for lay in problem.network.layers]
        self._runs: dict[Run, list[Segment]] = {}
        self._valid: dict[Run, list[bool]] = {}
        self._iface: dict[Run, list[int]] = {}
        self._contexts: dict[tuple[tuple[Run, ...], tuple[int, ...]],
                             list[SegmentContext]] = {}

    def variants(self, run: Run) -> list[Segment]:
        """Every segment over ``run`` (cached)."""
        if run not in self._runs:
            segs = segment_variants(self.problem, run)
            self._runs[run] = segs
            keys: dict[tuple, int] = {}
            self._iface[run] = [keys.setdefault((tuple(s.activations.items()),
                                                 tuple(s.inputs.items())), len(keys))
                                for s in segs]
        return self._runs[run]

    def count(self) -> int:
        """Number of mappings in the space (neither mappings nor segments are built)."""
        sizes: dict[Run, int] = {}
        total = 0
        for runs in segmentations(self.names):
            size = 1
            for run in runs:
                if run not in sizes:
                    sizes[run] = segment_count(self.problem, run)
                size *= sizes[run]
            total += size
        return total

    def _validity(self, runs: tuple[Run, ...]) -> bool:
        """Fill the per-variant structure flags of ``runs``; whether the cut itself is valid.

        ``check_structure`` checks each segment on its own (nothing in its
        per-segment checks looks at other segments), so a variant's
        violations are those it gets next to any other segments; coverage
        and order violations depend on the cut only.
        """
        lists = [self.variants(run) for run in runs]
        firsts = [lst[0] for lst in lists]
        whole = check_structure(self.network, Mapping(tuple(firsts)), self.k_unroll)
        cut_ok = not any(v.segment is None for v in whole)
        for pos, (run, lst) in enumerate(zip(runs, lists, strict=True)):
            if run in self._valid:
                continue
            flags = []
            for seg in lst:
                segs = list(firsts)
                segs[pos] = seg
                found = check_structure(self.network, Mapping(tuple(segs)), self.k_unroll)
                flags.append(not any(v.segment == pos for v in found))
            self._valid[run] = flags
        return cut_ok

    def walk(self) -> Iterator[tuple[tuple[Run, ...], tuple[int, ...]]]:
        """Every mapping as its runs and per-run variant indices."""
        for runs in segmentations(self.names):
            lists = [self.variants(run) for run in runs]
            for idx in itertools.product(*(range(len(lst)) for lst in lists)):
                yield runs, idx

    def build(self, runs: tuple[Run, ...], idx: tuple[int, ...]) -> Mapping:
        """The mapping of ``runs`` with variants ``idx``."""
        return Mapping(tuple(self._runs[run][i] for run, i in zip(runs, idx, strict=True)))

    def valid_walk(self) -> Iterator[tuple[tuple[Run, ...], tuple[int, ...]]]:
        """:meth:`walk` without the mappings ``check_structure`` rejects."""
        for runs in segmentations(self.names):
            if not self._validity(runs):
                continue
            flags = [self._valid[run] for run in runs]
            lists = [[i for i, ok in enumerate(f) if ok] for f in flags]
            for idx in itertools.product(*lists):
                yield runs, idx

    def contexts(self, runs: tuple[Run, ...], idx: tuple[int, ...]) -> list[SegmentContext]:
        """The segment contexts of a mapping, cached by its segments' interfaces."""
        key = (runs, tuple(self._iface[run][i] for run, i in zip(runs, idx, strict=True)))
        hit = self._contexts.get(key)
        if hit is None:
            hit = mapping_contexts(self.network, self.build(runs, idx))
            self._contexts[key] = hit
        return hit

    def mappings(self) -> Iterator[Mapping]:
        """Every mapping of the space."""
        for runs in segmentations(self.names):
            lists = [self.variants(run) for run in runs]
            for segs in itertools.product(*lists):
                yield Mapping(tuple(segs))


def enumerate_mappings(problem: Problem) -> Iterator[Mapping]:
    """Every mapping of the whole space of ``problem`` (a generator)."""
    return Space(problem).mappings()


def space_size(problem: Problem) -> int:
    """Number of mappings :func:`enumerate_mappings` yields."""
    return Space(problem).count()


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SegmentScore:
    """A segment's share of a mapping's cost, given its context."""

    traffic_bits: int
    memory_fj: int  # DRAM reads/writes at their full rates + operand GB accesses
    peak_bits: int
    latency_cycles: int = 0


class SegmentScorer:
    """Per-segment traffic, memory energy and peak, cached per (run, variant, context).

    A mapping's traffic and memory energy are sums over its segments, its
    peak the maximum; the rest of the energy (compute, neuron updates) does
    not depend on the mapping. These are the sums ``evaluate`` forms.
    """

    def __init__(self, problem: Problem, latency: bool = True, gb_energy: bool = True):
        self.problem = problem
        self.latency = latency  # False: ``latency_cycles`` left 0 (traffic and energy only)
        # False: ``memory_fj`` leaves out the operand GB accesses (a fifth of the
        # scoring time), for frontiers that rank by traffic or latency only
        self.gb_energy = gb_energy
        self.rates = EnergyRates.of(problem.hardware)
        self._cache: dict[tuple[Run, int, SegmentContext], SegmentScore] = {}

    def segment(self, run: Run, index: int, seg: Segment, ctx: SegmentContext) -> SegmentScore:
        key = (run, index, ctx)
        hit = self._cache.get(key)
        if hit is None:
            net = self.problem.network
            geo = SegmentGeometry(net, seg)
            terms = segment_terms(net, seg, ctx, geo)
            peak = peak_of(terms, geo)[0]
            reads = sum(t.read_bits for t in terms)
            writes = sum(t.write_bits for t in terms)
            gb_fj = 0
            for lay in geo.layers if self.gb_energy else ():
                gb_fj += sum(layer_operand_energy_fj(geo, lay, seg.sub_tile(lay.name),
                                                     self.problem.hardware,
                                                     weight_chunks(seg, lay)).values())
            mem = reads * self.rates.read_fj_per_bit + writes * self.rates.write_fj_per_bit + gb_fj
            hw = self.problem.hardware
            cycles = sum(segment_latency(geo, ctx.written, hw, nest_hardware(hw)).values()) \
                if self.latency else 0
            hit = SegmentScore(reads + writes, mem, peak, cycles)
            self._cache[key] = hit
        return hit

    def mapping(self, space: Space, runs: tuple[Run, ...], idx: tuple[int, ...]
                ) -> tuple[int, int, int]:
        """``(traffic bits, memory fJ, peak bits)`` of a mapping of ``space``."""
        return self.scores(space, runs, idx)[:3]  # type: ignore[return-value]

    def scores(self, space: Space, runs: tuple[Run, ...], idx: tuple[int, ...]
               ) -> tuple[int, int, int, int]:
        """``(traffic bits, memory fJ, peak bits, latency cycles)`` of a mapping."""
        ctxs = space.contexts(runs, idx)
        traffic = mem = peak = cycles = 0
        for run, i, ctx in zip(runs, idx, ctxs, strict=True):
            key = (run, i, ctx)
            part = self._cache.get(key)
            if part is None:
                part = self.segment(run, i, space.variants(run)[i], ctx)
            traffic += part.traffic_bits
            mem += part.memory_fj
            peak = max(peak, part.peak_bits)
            cycles += part.latency_cycles
        return traffic, mem, peak, cycles


def brute_force_optimum(problem: Problem, fast: bool = False
                        ) -> tuple[float | None, Mapping | None, int]:
    """``(best value, best mapping, mappings enumerated)`` over the whole space.

    Mappings with ``check_structure`` violations are skipped (there should be
    none), and so are infeasible ones (over the GB capacity). ``best value``
    is ``evaluate(problem, best).objective_value(objective)``, ``None`` when no
    mapping fits; the first mapping reaching the minimum is returned.

    ``fast=False`` calls ``check_structure`` and ``evaluate`` on every
    mapping; ``fast=True`` checks each segment variant once and scores with
    :class:`SegmentScorer` (traffic bits, or memory energy in integer fJ:
    the rest of the energy is the same for every mapping).
    """
    objective = problem.objective
    space = Space(problem)
    cap = problem.hardware.gb_capacity_bits
    count = space.count()
    best_key: float | None = None
    best: Mapping | None = None
    if fast:
        scorer = SegmentScorer(problem, latency=objective not in (Objective.TRAFFIC,
                                                                  Objective.ENERGY),
                               gb_energy=objective not in (Objective.TRAFFIC, Objective.LATENCY))
        constant_fj = energy_constant_fj(problem)
        best_idx = None
        for runs, idx in space.valid_walk():
            traffic, mem, peak, cycles = scorer.scores(space, runs, idx)
            if peak > cap:
                continue
            key = {Objective.TRAFFIC: traffic, Objective.ENERGY: mem,
                   Objective.LATENCY: cycles}.get(objective)
            if key is None:  # EDP: the product itself (or the weighted sum)
                a, b = problem.weights or (None, None)
                key = (mem + constant_fj) * cycles if a is None else \
                    a * (mem + constant_fj) + b * cycles
            if best_key is None or key < best_key:
                best_key, best_idx = key, (runs, idx)
        best = None if best_idx is None else space.build(*best_idx)
    else:
        for mapping in space.mappings():
            if check_structure(problem.network, mapping, space.k_unroll):
                continue
            cost = evaluate(problem, mapping)
            if not cost.feasible:
                continue
            value = cost.objective_value(objective.value)
            if best_key is None or value < best_key:
                best_key, best = value, mapping
    if best is None:
        return None, None, count
    return evaluate(problem, best).objective_value(objective.value), best, count


def energy_constant_fj(problem: Problem) -> float:
    """Compute and neuron-update energy (fJ): the part no mapping changes."""
    net, hw = problem.network, problem.hardware
    total = 0.0
    for lay in net.layers:
        e = hw.array.mac_pj if lay.uses_mac else hw.array.accumulate_pj
        total += lay.operations(net.timesteps) * round(e * 1000) * lay.spike_rate
        total += lay.neuron_updates(net.timesteps) * round(hw.array.neuron_update_pj * 1000)
    return total


def energy_latency_points(problem: Problem, space: Space | None = None
                          ) -> list[tuple[int, int, Mapping]]:
    """``(memory fJ, latency cycles, mapping)`` of every feasible mapping whose
    pair no other feasible mapping's beats or equals in both (the Pareto set,
    one mapping per pair)."""
    space = space or Space(problem)
    scorer = SegmentScorer(problem)
    cap = problem.hardware.gb_capacity_bits
    best: dict[tuple[int, int], tuple[tuple[Run, ...], tuple[int, ...]]] = {}
    for runs, idx in space.valid_walk():
        _, mem, peak, cycles = scorer.scores(space, runs, idx)
        if peak <= cap and (mem, cycles) not in best:
            best[(mem, cycles)] = (runs, idx)
    front: list[tuple[int, int, Mapping]] = []
    for mem, cycles in sorted(best):
        if not front or cycles < front[-1][1]:
            front.append((mem, cycles, space.build(*best[(mem, cycles)])))
    return front


@dataclass(frozen=True)
class Point:
    """A mapping on the (peak, objective) Pareto frontier."""

    peak_bits: int
    rank: int  # traffic bits, memory energy in fJ, or latency cycles
    mapping: Mapping


def brute_force_frontiers(problem: Problem,
                          objectives: Sequence[Objective] = (Objective.TRAFFIC, Objective.ENERGY),
                          space: Space | None = None
                          ) -> tuple[dict[Objective, list[Point]], int]:
    """The (peak, objective) Pareto frontier of the whole space per objective, in one pass.

    The capacity is ignored: it only decides feasibility, so for a capacity
    ``C`` the optimum is the last frontier point with ``peak_bits <= C``
    (:func:`optimum_at`). Each frontier is sorted by increasing peak
    (strictly decreasing objective); per peak it keeps the first mapping
    reaching the minimum. Also returns the number of mappings. ``space``
    (of the same problem) reuses its segment lists.
    """
    index = {Objective.TRAFFIC: 0, Objective.ENERGY: 1, Objective.LATENCY: 3}
    picks = {obj: index[obj] for obj in objectives}
    space = space or Space(problem)
    scorer = SegmentScorer(problem, latency=Objective.LATENCY in picks,
                           gb_energy=Objective.ENERGY in picks)
    best_at: dict[Objective, dict[int, tuple[int, tuple[tuple[Run, ...], tuple[int, ...]]]]] = {
        obj: {} for obj in objectives}
    for runs, idx in space.valid_walk():
        score = scorer.scores(space, runs, idx)
        for obj, pick in picks.items():
            table = best_at[obj]
            hit = table.get(score[2])
            if hit is None or score[pick] < hit[0]:
                table[score[2]] = (score[pick], (runs, idx))
    out: dict[Objective, list[Point]] = {}
    for obj in objectives:
        frontier: list[Point] = []
        for peak in sorted(best_at[obj]):
            rank, where = best_at[obj][peak]
            if not frontier or rank < frontier[-1].rank:
                frontier.append(Point(peak, rank, space.build(*where)))
        out[obj] = frontier
    return out, space.count()


def brute_force_frontier(problem: Problem, objective: Objective | None = None,
                         space: Space | None = None) -> tuple[list[Point], int]:
    """:func:`brute_force_frontiers` for one objective (the problem's by default)."""
    objective = objective or problem.objective
    frontiers, count = brute_force_frontiers(problem, (objective,), space)
    return frontiers[objective], count


def optimum_at(frontier: Sequence[Point], capacity_bits: int) -> Point | None:
    """The cheapest frontier point that fits ``capacity_bits`` (``None``: nothing fits)."""
    fits = [p for p in frontier if p.peak_bits <= capacity_bits]
    return fits[-1] if fits else None
