"""The fast named-schedule greedy and cost-model loops against plain re-implementations.

``named.py`` scores candidates from cached per-layer groups and refits them
incrementally, and ``cost/geometry.py`` has inlined row loops; none of that may
change a single number. The references below are the straightforward
versions (the greedy re-scores every candidate through ``segment_terms``),
kept as oracles. They run on the tiny instances and on a small synthetic
network, under several global-buffer sizes so that the "nothing fits",
chunked-weight and multi-sub-tile paths are all taken.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from stems_opt.cost import geometry as cm
from stems_opt.cost.evaluation import evaluate
from stems_opt.cost.geometry import SegmentGeometry, sub_tile_limits, tile_bounds
from stems_opt.cost.traffic import (
    SegmentContext,
    Term,
    dram_read_term,
    mapping_contexts,
    output_term,
    peak_of,
    segment_terms,
    state_term,
    weight_term,
)
from stems_opt.heuristics import named
from stems_opt.io import load_instance, network_from_dict
from stems_opt.mapping import (
    RESIDENT,
    STREAMED,
    Halo,
    Mapping,
    Order,
    Placement,
    Segment,
    StateMode,
    WeightChoice,
)
from stems_opt.network import Axis, Network, divisors
from stems_opt.problem import Problem

ROOT = Path(__file__).resolve().parent.parent
TINY = ("tiny_residual", "tiny_chain", "tiny_ann_snn", "tiny_linear", "tiny_reset")

# Stem, a residual block, a strided block with a 1x1 downsample, a linear head.
SYNTH = {
    "name": "synth",
    "timesteps": 4,
    "defaults": {"neuron": "lif"},
    "input": {"channels": 2, "height": 12, "width": 8, "bits": 4},
    "layers": [
        {"name": "s_conv", "type": "conv", "inputs": ["input"],
         "loop_dims": {"K": 8, "FY": 3, "FX": 3}},
        {"name": "s_pool", "type": "pool", "inputs": ["s_conv"], "kernel": 2},
        {"name": "a_conv1", "type": "conv", "inputs": ["s_pool"],
         "loop_dims": {"K": 8, "FY": 3, "FX": 3}},
        {"name": "a_conv2", "type": "conv", "inputs": ["a_conv1"],
         "loop_dims": {"K": 8, "FY": 3, "FX": 3}},
        {"name": "a_add", "type": "add", "inputs": ["s_pool", "a_conv2"]},
        {"name": "b_conv1", "type": "conv", "inputs": ["a_add"],
         "loop_dims": {"K": 16, "FY": 3, "FX": 3}, "stride": 2},
        {"name": "b_conv2", "type": "conv", "inputs": ["b_conv1"],
         "loop_dims": {"K": 16, "FY": 3, "FX": 3}},
        {"name": "b_down", "type": "conv", "inputs": ["a_add"],
         "loop_dims": {"K": 16, "FY": 1, "FX": 1}, "stride": 2, "padding": 0},
        {"name": "b_add", "type": "add", "inputs": ["b_down", "b_conv2"]},
        {"name": "flat", "type": "flatten", "inputs": ["b_add"]},
        {"name": "fc", "type": "linear", "inputs": ["flat"], "loop_dims": {"K": 10}},
    ],
    "blocks": [
        {"name": "stem", "layers": ["s_conv", "s_pool"]},
        {"name": "a", "layers": ["a_conv1", "a_conv2", "a_add"]},
        {"name": "b", "layers": ["b_conv1", "b_conv2", "b_down", "b_add"]},
        {"name": "head", "layers": ["flat", "fc"]},
    ],
}


def _with_capacity(problem: Problem, bits: int) -> Problem:
    hw = problem.hardware
    hw = dataclasses.replace(hw, global_buffer=dataclasses.replace(hw.global_buffer,
                                                                   capacity_bits=bits))
    return Problem(problem.network, hw, problem.objective, f"{problem.network.name}@{bits}")


def _problems() -> list[Problem]:
    tiny = [load_instance(ROOT / "instances" / f"{name}.yaml") for name in TINY]
    out = []
    for p in tiny:
        cap = p.hardware.gb_capacity_bits
        out += [_with_capacity(p, c) for c in (cap // 16, cap // 3, cap, cap * 8)]
    synth = Problem(network_from_dict(SYNTH), tiny[0].hardware)
    # Nothing fits below ~4 kbit; from 32 kbit on everything does.
    return out + [_with_capacity(synth, c) for c in (6000, 12000, 20000, 131072)]


PROBLEMS = _problems()


# ---------------------------------------------------------------------------
# Reference cost-model pieces (the loops as first written)
# ---------------------------------------------------------------------------

def _ref_tile_bounds(network: Network, layers: tuple[str, ...], axis: Axis,
                     tiles: int) -> dict[str, tuple[int, ...]]:
    inside = set(layers)
    outputs = set(network.output_names)
    bounds: dict[str, tuple[int, ...]] = {}
    for name in reversed(layers):
        lay = network.layer(name)
        extent = lay.extent(axis)
        consumers = network.consumers(name)
        inner = [c for c in consumers if c in inside]
        is_out = name in outputs or not consumers or len(inner) < len(consumers)
        b = [0] * (tiles + 1)
        b[tiles] = extent
        for t in range(1, tiles):
            v = (t * extent) // tiles if is_out else 0
            for c in inner:
                v = max(v, network.layer(c).window(axis, 0, bounds[c][t])[1])
            b[t] = min(extent, v)
        bounds[name] = tuple(b)
    return bounds


def _ref_window_reads(geo: SegmentGeometry, consumer: str, m: int, keep: bool
                      ) -> tuple[int, list[int], list[int]]:
    lay = geo.network.layer(consumer)
    total, max_new, halo, prev_hi = 0, [0] * geo.n, [0] * geo.n, None
    for t, subs in enumerate(geo.sub_rows(consumer, m)):
        for j, (lo, hi) in enumerate(subs):
            a, b = lay.window(geo.seg.axis, lo, hi)
            overlap = max(0, min(prev_hi, b) - a) if prev_hi is not None else 0
            new = (b - a) - overlap if keep else (b - a)
            total += new
            max_new[t] = max(max_new[t], new)
            if keep and j:
                halo[t] = max(halo[t], overlap * geo.tb)
            prev_hi = b
    return total, max_new, halo


def _ref_kept_halo_rows(geo: SegmentGeometry, tensor: str) -> int:
    """Union over readers of the rows each keeps across its tile boundaries, at
    every (tile, position), with Layer.window directly."""
    net, axis = geo.network, geo.seg.axis
    readers = [c for c in net.consumers(tensor) if c in geo.inside]

    def rows(c: str, t: int) -> set[int]:
        b, lay = geo.bounds[c][t], net.layer(c)
        if not 0 < b < lay.extent(axis):
            return set()
        return set(range(lay.window(axis, b, b + 1)[0], lay.window(axis, 0, b)[1]))

    best = 0
    for t in range(geo.n):
        for p in range(len(geo.layers)):
            held: set[int] = set()
            for c in readers:
                held |= rows(c, t + 1 if geo.pos[c] < p else t)
            best = max(best, len(held))
    return best * geo.tile_keep_mult


def _ref_carried_rows(geo: SegmentGeometry, name: str) -> int:
    net, axis, b = geo.network, geo.seg.axis, geo.bounds[name]
    carried = 0
    for t in range(1, geo.n):
        need = [net.layer(c).window(axis, geo.bounds[c][t], geo.bounds[c][t] + 1)[0]
                for c in net.consumers(name)
                if c in geo.inside and geo.bounds[c][t] < net.layer(c).extent(axis)]
        if need:
            carried = max(carried, b[t] - min(need))
    return carried


def _ref_segment_terms(network: Network, seg: Segment, ctx: SegmentContext,
                       geo: SegmentGeometry) -> list[Term]:
    terms: list[Term] = []
    kept: list[str] = []
    for lay in geo.layers:
        m = seg.sub_tile(lay.name)
        if lay.has_weights:
            terms.append(weight_term(geo, lay, seg.weight(lay.name), m))
        if lay.stateful:
            terms.append(state_term(geo, lay, seg.state(lay.name), m, network.state_persistence))
        has_inner = any(c in geo.inside for c in network.consumers(lay.name))
        terms.append(output_term(geo, lay, seg.activation(lay.name) if has_inner else None,
                                 lay.name in ctx.whole, lay.name in ctx.written, m))
        for src in dict.fromkeys(lay.inputs):
            placement = seg.activation(src) if src in geo.inside else seg.input(src)
            if placement is not Placement.ON_CHIP:
                terms.append(dram_read_term(geo, src, lay, seg.halo(src), m))
                if seg.halo(src) is Halo.KEEP and geo.n > 1 and src not in kept:
                    kept.append(src)
    for src in kept:
        terms.append(Term("activations", src, "", persistent_bits=_ref_kept_halo_rows(geo, src)
                          * network.tensor_row_bits(src, seg.axis)))
    for name in sorted(ctx.whole - {lay.name for lay in geo.layers}):
        terms.append(Term("activations", name, "", persistent_bits=network.tensor_size_bits(name)))
    return terms


def _ref_mapping_contexts(network: Network, mapping: Mapping) -> list[SegmentContext]:
    where = {name: i for i, s in enumerate(mapping.segments) for name in s.layers}
    where[network.input.name] = -1
    whole: list[set[str]] = [set() for _ in mapping.segments]
    written: list[set[str]] = [set() for _ in mapping.segments]
    outputs = set(network.output_names)
    for tensor in [network.input.name] + [lay.name for lay in network.layers]:
        p = where[tensor]
        last_on_chip = None
        to_dram = tensor in outputs
        for s in sorted({where[c] for c in network.consumers(tensor)}):
            if s == p:
                to_dram |= mapping.segments[s].activation(tensor) is Placement.DRAM
            elif mapping.segments[s].input(tensor) is Placement.ON_CHIP:
                last_on_chip = s
            else:
                to_dram = True
        if last_on_chip is not None:
            for s in range(max(p, 0), last_on_chip + 1):
                whole[s].add(tensor)
        if to_dram and p >= 0:
            written[p].add(tensor)
    return [SegmentContext(frozenset(w), frozenset(x)) for w, x in zip(whole, written,
                                                                         strict=True)]


# ---------------------------------------------------------------------------
# Reference greedy: every candidate scored from its full segment terms
# ---------------------------------------------------------------------------

class _RefScorer:
    def __init__(self, problem: Problem):
        self.problem = problem
        self.cap = problem.hardware.gb_capacity_bits
        self._cache: dict[tuple[str, SegmentContext], tuple[int, int, int]] = {}

    def segment(self, seg: Segment, ctx: SegmentContext) -> tuple[int, int, int]:
        key = (repr(seg), ctx)
        if key not in self._cache:
            geo = SegmentGeometry(self.problem.network, seg)
            terms = segment_terms(self.problem.network, seg, ctx, geo)
            peak, _, _, pos = peak_of(terms, geo)
            self._cache[key] = (sum(t.read_bits + t.write_bits for t in terms), peak, pos)
        return self._cache[key]

    def mapping(self, segs: Sequence[Segment]) -> tuple[int, bool]:
        ctxs = mapping_contexts(self.problem.network, Mapping(tuple(segs)))
        scores = [self.segment(s, c) for s, c in zip(segs, ctxs, strict=True)]
        return sum(s[0] for s in scores), all(s[1] <= self.cap for s in scores)


def _ref_fit_layers(problem: Problem, seg: Segment, ctx: SegmentContext) -> Segment:
    net, cap = problem.network, problem.hardware.gb_capacity_bits
    limits = sub_tile_limits(net, seg)
    seg = seg.replace(sub_tiles=dict.fromkeys(seg.layers, 1))
    for pos, name in enumerate(seg.layers):
        layer = net.layer(name)
        weight_opts = [seg.weight(name)]
        if layer.has_weights and not seg.weight(name).resident:
            weight_opts = [WeightChoice(), WeightChoice(chunks=named._max_chunks(problem, layer.k))]
        candidates: list[dict[str, object]] = []
        for wc in weight_opts:
            for m in range(1, limits[name] + 1):
                cand: dict[str, object] = {"sub_tiles": {name: m}}
                if layer.has_weights:
                    cand["weights"] = {name: wc}
                candidates.append(cand)
        for cand in candidates:
            trial = seg.replace(**cand)
            geo = SegmentGeometry(net, trial)
            terms = segment_terms(net, trial, ctx, geo)
            local = np.zeros(geo.n, dtype=np.int64)
            for t in terms:
                if t.local is not None:
                    local += t.local[:, pos]
            if sum(t.persistent_bits for t in terms) + int(local.max()) <= cap:
                seg = trial
                break
    return seg


def _ref_greedy_pass(problem: Problem, scorer: _RefScorer, segs: list[Segment],
                     only_local: bool, ctx: SegmentContext | None = None) -> list[Segment]:
    net = problem.network

    def score(cands: list[Segment]) -> tuple[int, bool]:
        if only_local:
            assert ctx is not None
            traffic, peak, _ = scorer.segment(cands[0], ctx)
            return traffic, peak <= scorer.cap
        return scorer.mapping(cands)

    def refit(cands: list[Segment], touched: set[int]) -> list[Segment]:
        ctxs = [ctx] if only_local else mapping_contexts(net, Mapping(tuple(cands)))
        return [_ref_fit_layers(problem, s, c) if i in touched else s
                for i, (s, c) in enumerate(zip(cands, ctxs, strict=True))]

    segs = list(segs)
    traffic, _ = score(segs)
    for idx, change in named._switches(problem, segs):
        if only_local and "inputs" in change:
            continue
        options = [change]
        if "states" in change and named._tile_resident_ok(segs[idx], net.timesteps):
            options.append({"states": {next(iter(change["states"])): StateMode.TILE_RESIDENT},
                            "order": Order.SPACE_OUTER})
        for opt in options:
            cands = list(segs)
            cands[idx] = cands[idx].replace(**opt)
            cands = refit(cands, set(range(len(cands))) if "inputs" in opt else {idx})
            new_traffic, fits = score(cands)
            if fits and new_traffic < traffic:
                segs, traffic = cands, new_traffic
                break
    return segs


def _ref_greedy_mapping(problem: Problem, frames: Sequence[named.Frame], name: str,
                        tiles: Sequence[int]) -> Mapping:
    """The greedy filling ``frames`` with these tile counts."""
    net = problem.network
    scorer = _RefScorer(problem)
    segs = []
    for frame, n in zip(frames, tiles, strict=True):
        seg = Segment(layers=frame.layers, time_batch=frame.time_batch, tiles=n,
                      axis=Axis.OY, order=Order.TIME_OUTER)
        segs.append(_ref_fit_layers(problem, seg, named.lone_context(net, frame.layers)))
    segs = _ref_greedy_pass(problem, scorer, segs, only_local=False)
    return Mapping(tuple(segs), name).canonical(net)


def _ref_objective(problem: Problem, mapping: Mapping) -> tuple[int, float]:
    cost = evaluate(problem, mapping)
    if not cost.feasible:
        return 1, float(cost.peak_gb_bits)
    return 0, float(cost.objective_value(problem.objective.value))


# ---------------------------------------------------------------------------
# Random frames and mappings
# ---------------------------------------------------------------------------

def _random_frame(net: Network, rng: random.Random, max_layers: int = 6) -> Segment:
    names = [lay.name for lay in net.layers]
    i = rng.randrange(len(names))
    layers = tuple(names[i:i + rng.randint(1, max_layers)])
    max_n = min(net.layer(n).extent(Axis.OY) for n in layers)
    return Segment(layers, rng.choice(divisors(net.timesteps)), rng.randint(1, max_n),
                   order=rng.choice(list(Order)))


def _random_mapping(net: Network, rng: random.Random) -> Mapping:
    names = [lay.name for lay in net.layers]
    cuts = sorted(rng.sample(range(1, len(names)), rng.randint(0, len(names) - 1)))
    segs = []
    for a, b in zip([0, *cuts], [*cuts, len(names)], strict=True):
        layers = tuple(names[a:b])
        inside = set(layers)
        max_n = min(net.layer(n).extent(Axis.OY) for n in layers)
        frame = Segment(layers, rng.choice(divisors(net.timesteps)), rng.randint(1, max_n),
                        order=rng.choice(list(Order)))
        limits = sub_tile_limits(net, frame)
        lays = [net.layer(n) for n in layers]
        acts = {x.name: rng.choice(list(Placement)) for x in lays
                if any(c in inside for c in net.consumers(x.name))}
        ins = {src: Placement.DRAM if src == net.input.name else rng.choice(list(Placement))
               for x in lays for src in x.inputs if src not in inside}
        segs.append(frame.replace(
            sub_tiles={n: rng.randint(1, limits[n]) for n in layers},
            weights={x.name: rng.choice([STREAMED, RESIDENT,
                                         WeightChoice(chunks=rng.choice(divisors(x.k)))])
                     for x in lays if x.has_weights},
            states={x.name: rng.choice(list(StateMode)) for x in lays if x.stateful},
            activations=acts, inputs=ins,
            halos={t: rng.choice(list(Halo)) for t in [*acts, *ins]}))
    return Mapping(tuple(segs))


def _term_fields(t: Term) -> tuple[object, ...]:
    local = None if t.local is None else (t.local.dtype.str, t.local.tolist())
    return (t.tensor_class, t.tensor, t.layer, t.read_bits, t.write_bits, t.persistent_bits,
            local)


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("problem", PROBLEMS[::4], ids=lambda p: p.network.name)
def test_window_tables_match_layer_window(problem: Problem) -> None:
    # The row tables stand for Layer.window on every non-empty range of output rows.
    for lay in problem.network.layers:
        for axis in Axis:
            first, last = cm._row_windows(lay, axis)
            ext = lay.extent(axis)
            for lo in range(ext):
                for hi in range(lo + 1, ext + 1):
                    assert lay.window(axis, lo, hi) == (first[lo], last[hi])
            assert last[0] == lay.window(axis, 0, 0)[1]


@pytest.mark.parametrize("problem", PROBLEMS[::4], ids=lambda p: p.network.name)
def test_geometry_matches_reference(problem: Problem) -> None:
    net = problem.network
    rng = random.Random(1)
    for _ in range(40):
        frame = _random_frame(net, rng)
        for axis in Axis:
            max_n = min(net.layer(n).extent(axis) for n in frame.layers)
            for n in {1, max_n, rng.randint(1, max_n)}:
                assert tile_bounds(net, frame.layers, axis, n) == \
                    _ref_tile_bounds(net, frame.layers, axis, n)
        geo = SegmentGeometry(net, frame)
        limits = sub_tile_limits(net, frame)
        for name in frame.layers:
            assert geo.carried_rows(name) == _ref_carried_rows(geo, name)
            for m in {1, 2, limits[name], limits[name] + 3}:
                assert geo.max_sub_rows(name, m) == [
                    max((hi - lo for lo, hi in subs), default=0) for subs in geo.sub_rows(name, m)]
                for keep in (False, True):
                    expected = _ref_window_reads(geo, name, m, keep)
                    got = geo.window_reads(name, m, keep)
                    assert got == expected
                    assert all(type(v) is int for v in (got[0], *got[1], *got[2]))
                    args = (net, name, frame.axis, geo.bounds[name], m, keep,
                            geo.tb if keep else 0)
                    for threshold in (1, 10**9):  # the numpy and the loop version, uncached
                        orig = cm._VECTOR_SUB_TILES
                        cm._VECTOR_SUB_TILES = threshold
                        try:
                            total, max_new, halo = cm._window_reads.__wrapped__(*args)
                        finally:
                            cm._VECTOR_SUB_TILES = orig
                        assert (total, list(max_new), list(halo)) == expected
                        assert all(type(v) is int for v in (total, *halo, *max_new))
            assert geo.kept_halo_rows(name) == _ref_kept_halo_rows(geo, name)


@pytest.mark.parametrize("problem", PROBLEMS[::3], ids=lambda p: p.name)
def test_terms_contexts_and_scorer_match_reference(problem: Problem) -> None:
    net = problem.network
    rng = random.Random(2)
    scorer = named.Scorer(problem)
    for _ in range(25):
        mapping = _random_mapping(net, rng)
        ctxs = mapping_contexts(net, mapping)
        assert ctxs == _ref_mapping_contexts(net, mapping)
        cost = evaluate(problem, mapping)
        for seg, ctx, sc in zip(mapping.segments, ctxs, cost.segments, strict=True):
            geo = SegmentGeometry(net, seg)
            assert [_term_fields(t) for t in segment_terms(net, seg, ctx, geo)] == \
                [_term_fields(t) for t in _ref_segment_terms(net, seg, ctx, geo)]
            pos = seg.layers.index(sc.peak_layer)
            assert scorer.segment(seg, ctx) == (sc.traffic.total_bits, sc.peak_gb_bits, pos)
            fitted, score = scorer.fit(seg, ctx)
            reference = _ref_fit_layers(problem, seg, ctx)
            assert fitted == reference
            assert score == _RefScorer(problem).segment(reference, ctx)


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_named_schedules_match_reference(problem: Problem) -> None:
    net = problem.network
    nb = len(net.block_list)
    rng = random.Random(3)
    hybrids = {"HYBRID:" + "".join(rng.choice("ST") for _ in range(nb)) + ":"
               + "".join(rng.choice("FL") for _ in range(nb)) for _ in range(2)}
    for name in [*named.NAMED, *sorted(hybrids)]:
        frames = named.parse_schedule(name, net)
        fast = named.greedy_mapping(problem, frames, name=name)
        tiles = named.choose_tiles(named._Filler(problem, frames))
        assert fast == _ref_greedy_mapping(problem, frames, name, tiles)
        # Layer-by-layer frames: the fewest tiles that fit alone (if any does).
        for frame, n in zip(frames, tiles, strict=True):
            if frame.tiles is None and not frame.fused:
                ctx = named.lone_context(net, frame.layers)
                scorer = _RefScorer(problem)

                def peak(k: int, frame: named.Frame = frame, ctx: SegmentContext = ctx,
                         scorer: _RefScorer = scorer) -> int:
                    seg = Segment(frame.layers, frame.time_batch, k, Axis.OY, Order.TIME_OUTER)
                    return scorer.segment(_ref_fit_layers(problem, seg, ctx), ctx)[1]

                fits = [k for k in range(1, n + 1) if peak(k) <= scorer.cap]
                assert fits == [n] or (not fits and all(
                    peak(k) > scorer.cap for k in range(1, net.layer(frame.layers[0]).oy + 1)))
        # Fused frames without a count: no single-block change of a power of two
        # lowers the whole schedule's objective (each tried here with the reference).
        if len(frames) <= 4:
            here = _ref_objective(problem, fast)
            for i, frame in enumerate(frames):
                if frame.tiles is not None or not frame.fused:
                    continue
                max_n = min(net.layer(x).extent(Axis.OY) for x in frame.layers)
                for k in named._tile_candidates(max_n):
                    trial = [*tiles[:i], k, *tiles[i + 1:]]
                    other = _ref_greedy_mapping(problem, frames, name, trial)
                    assert _ref_objective(problem, other) >= here
        result = named.named_schedule(problem, name)
        assert result.mapping == fast
        assert result.cost == evaluate(problem, fast)
