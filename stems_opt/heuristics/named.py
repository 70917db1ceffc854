"""STEMS-style named schedules with the greedy residency rule of MODEL.md section 7.

Schedule names:

``ST-LBL``
    One segment with every layer, ``Tb = 1``, one tile.
``TB-LBL``
    Every layer its own segment, ``Tb = T``.
``TB-F`` / ``ST-F``
    One segment per block with ``Tb = T`` / ``Tb = 1`` and a tile count per
    fused block.
``HYBRID:<time>:<depth>``
    One character per block, as STEMS's command line has it: time ``T``
    (time-batched) or ``S`` (single timestep); depth ``F`` (fused) or ``L``
    (layer by layer). Consecutive ``S``/``L`` blocks run as one
    single-timestep segment (that is what layer-by-layer means with
    ``Tb = 1``); a ``T``/``L`` block is one segment per layer.

Every other decision follows one fixed greedy rule (see :func:`greedy_mapping`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stems_opt.cost_model import (
    SegmentContext,
    SegmentGeometry,
    evaluate,
    mapping_contexts,
    peak_of,
    segment_terms,
    sub_tile_limits,
)
from stems_opt.errors import Issue, StemsInputError
from stems_opt.mapping import (
    Halo,
    Mapping,
    Order,
    Placement,
    Segment,
    StateMode,
    WeightChoice,
)
from stems_opt.network import Axis, Network
from stems_opt.problem import Problem
from stems_opt.result import Result, SolveStatus

NAMED = ("ST-LBL", "TB-LBL", "TB-F", "ST-F")


@dataclass(frozen=True)
class Frame:
    """A segment skeleton before the greedy fills in its decisions.

    ``tiles`` is ``None`` for "choose": the fewest that fit for
    layer-by-layer segments, the least-traffic count that fits for fused ones.
    """

    layers: tuple[str, ...]
    time_batch: int
    tiles: int | None
    fused: bool


def parse_schedule(name: str, network: Network, tiles: Sequence[int] | int | None = None
                   ) -> list[Frame]:
    """Segment skeletons of a named or hybrid schedule.

    Parameters
    ----------
    tiles
        Tile count for every fused block (an int), one per fused block (a
        sequence), or ``None`` to choose per block.

    Raises
    ------
    StemsInputError
        For an unknown name or a hybrid string of the wrong length.
    """
    blocks = network.block_list
    nb = len(blocks)
    key = name.strip().upper()
    if key == "ST-LBL":
        time_s, depth_s = "S" * nb, "L" * nb
    elif key == "TB-LBL":
        time_s, depth_s = "T" * nb, "L" * nb
    elif key == "TB-F":
        time_s, depth_s = "T" * nb, "F" * nb
    elif key == "ST-F":
        time_s, depth_s = "S" * nb, "F" * nb
    elif key.startswith("HYBRID:") and key.count(":") == 2:
        _, time_s, depth_s = key.split(":")
        if len(time_s) != nb or len(depth_s) != nb or set(time_s) - {"S", "T"} or \
                set(depth_s) - {"F", "L"}:
            raise StemsInputError(Issue(
                f"hybrid schedule {name!r} needs {nb} time characters (S or T) and {nb} depth "
                f"characters (F or L), one per block ({', '.join(b.name for b in blocks)})",
                field="schedule"))
    else:
        raise StemsInputError(Issue(
            f"unknown schedule {name!r} (one of {', '.join(NAMED)} or HYBRID:<time>:<depth> "
            f"with one S/T and one F/L per block)", field="schedule"))
    n_fused = depth_s.count("F")
    if isinstance(tiles, Sequence) and len(tiles) != n_fused:
        raise StemsInputError(Issue(f"{len(tiles)} tile counts given for {n_fused} fused blocks",
                                    field="tiles"))
    T = network.timesteps
    frames: list[Frame] = []
    pending: list[str] = []
    fused_i = 0
    for block, tc, dc in zip(blocks, time_s, depth_s, strict=True):
        tb = T if tc == "T" else 1
        if tc == "S" and dc == "L":
            pending.extend(block.layers)
            continue
        if pending:
            frames.append(Frame(tuple(pending), 1, 1, fused=False))
            pending = []
        if dc == "F":
            n = tiles if isinstance(tiles, int) else (
                tiles[fused_i] if isinstance(tiles, Sequence) else None)
            fused_i += 1
            frames.append(Frame(block.layers, tb, n, fused=True))
        else:
            frames.extend(Frame((layer,), tb, None, fused=False) for layer in block.layers)
    if pending:
        frames.append(Frame(tuple(pending), 1, 1, fused=False))
    return frames


class _Scorer:
    """Per-segment traffic and peak, cached: the greedy re-scores often."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.cap = problem.hardware.gb_capacity_bits
        self._cache: dict[tuple[str, SegmentContext], tuple[int, int, int]] = {}

    def segment(self, seg: Segment, ctx: SegmentContext) -> tuple[int, int, int]:
        """``(traffic_bits, peak_bits, peak_position)`` of ``seg`` in ``ctx``."""
        key = (repr(seg), ctx)
        hit = self._cache.get(key)
        if hit is None:
            geo = SegmentGeometry(self.problem.network, seg)
            terms = segment_terms(self.problem.network, seg, ctx, geo)
            peak, _, _, pos = peak_of(terms, geo)
            hit = (sum(t.read_bits + t.write_bits for t in terms), peak, pos)
            self._cache[key] = hit
        return hit

    def mapping(self, segs: Sequence[Segment]) -> tuple[int, bool, list[int]]:
        """Total traffic, whether every segment fits, and each segment's peak."""
        ctxs = mapping_contexts(self.problem.network, Mapping(tuple(segs)))
        total, peaks = 0, []
        for seg, ctx in zip(segs, ctxs, strict=True):
            t, p, _ = self.segment(seg, ctx)
            total += t
            peaks.append(p)
        return total, all(p <= self.cap for p in peaks), peaks


def _max_chunks(problem: Problem, k: int) -> int:
    ku = problem.hardware.array.factor("K")
    return max(c for c in range(1, k + 1) if k % c == 0 and k // c >= ku) if k >= ku else 1


def _fit_layers(problem: Problem, seg: Segment, ctx: SegmentContext) -> Segment:
    """Per layer, streamed weights in one chunk if that fits (else the most
    chunks) and the fewest sub-tiles that fit; other decisions are kept."""
    net, cap = problem.network, problem.hardware.gb_capacity_bits
    limits = sub_tile_limits(net, seg)
    seg = seg.replace(sub_tiles=dict.fromkeys(seg.layers, 1))
    for pos, name in enumerate(seg.layers):
        layer = net.layer(name)
        candidates: list[dict[str, object]] = []
        weight_opts = [seg.weight(name)]
        if layer.has_weights and not seg.weight(name).resident:
            weight_opts = [WeightChoice(), WeightChoice(chunks=_max_chunks(problem, layer.k))]
        for wc in weight_opts:
            for m in range(1, limits[name] + 1):
                cand: dict[str, object] = {"sub_tiles": {name: m}}
                if layer.has_weights:
                    cand["weights"] = {name: wc}
                candidates.append(cand)
        best = None
        for cand in candidates:
            trial = seg.replace(**cand)
            geo = SegmentGeometry(net, trial)
            terms = segment_terms(net, trial, ctx, geo)
            persistent = sum(t.persistent_bits for t in terms)
            local = np.zeros(geo.n, dtype=np.int64)
            for t in terms:
                if t.local is not None:
                    local += t.local[:, pos]
            if persistent + int(local.max()) <= cap:
                best = trial
                break
        if best is not None:
            seg = best
    return seg


def _segment_fits(scorer: _Scorer, seg: Segment, ctx: SegmentContext) -> bool:
    return scorer.segment(seg, ctx)[1] <= scorer.cap


def _initial_segment(problem: Problem, scorer: _Scorer, frame: Frame, ctx: SegmentContext,
                     tiles: int) -> Segment:
    seg = Segment(layers=frame.layers, time_batch=frame.time_batch, tiles=tiles, axis=Axis.OY,
                  order=Order.TIME_OUTER)
    return _fit_layers(problem, seg, ctx)


def _switches(problem: Problem, segs: list[Segment]) -> list[tuple[int, dict[str, object]]]:
    """The greedy's switches in MODEL.md order: (segment index, change)."""
    net = problem.network
    where = {name: i for i, s in enumerate(segs) for name in s.layers}
    out: list[tuple[int, dict[str, object]]] = []
    layers = [layer for layer in net.layers if layer.name in where]
    for layer in layers:  # activations on chip, in producer order
        p = where[layer.name]
        for s in sorted({where[c] for c in net.consumers(layer.name) if c in where}):
            key = "activations" if s == p else "inputs"
            out.append((s, {key: {layer.name: Placement.ON_CHIP}}))
    for i, seg in enumerate(segs):  # halos kept
        if seg.tiles == 1 and all(seg.sub_tile(n) == 1 for n in seg.layers):
            continue
        read = dict.fromkeys(src for n in seg.layers for src in net.layer(n).inputs)
        for src in read:
            out.append((i, {"halos": {src: Halo.KEEP}}))
    for layer in layers:
        if layer.has_weights:
            out.append((where[layer.name], {"weights": {layer.name: WeightChoice(resident=True)}}))
    for layer in layers:
        if layer.stateful:
            out.append((where[layer.name], {"states": {layer.name: StateMode.RESIDENT}}))
    return out


def _tile_resident_ok(seg: Segment, T: int) -> bool:
    return seg.tiles > 1 and seg.time_batch < T


def greedy_mapping(problem: Problem, frames: Sequence[Frame], name: str = "") -> Mapping:
    """Fill ``frames`` with the fixed greedy rule of MODEL.md section 7.

    Axis ``OY``; everything streamed (one chunk if it fits, else the most),
    spilled, through DRAM, re-read; the tile count of each frame as given
    (layer-by-layer: the fewest that fit; fused without a count: the count
    with the least traffic among those that fit, each scored after its own
    in-segment greedy); then per layer the fewest sub-tiles that fit. Then,
    in order, each switch is kept if traffic drops and the mapping still
    fits (re-choosing the fewest sub-tiles after each): activations on chip
    in producer order, halos kept, weights resident in layer order, states
    resident (else tile-resident) in layer order.
    """
    net = problem.network
    scorer = _Scorer(problem)
    segs: list[Segment] = []
    # Choose tile counts segment by segment, with plain DRAM boundaries around each.
    for frame in frames:
        ctx = _lone_context(net, frame.layers)
        max_n = min(net.layer(n).extent(Axis.OY) for n in frame.layers)
        if frame.tiles is not None:
            if frame.tiles > max_n:
                raise StemsInputError(Issue(
                    f"{frame.tiles} tiles exceed the smallest OY extent ({max_n}) of the fused "
                    f"block {frame.layers[0]}..{frame.layers[-1]}", field="tiles"))
            segs.append(_initial_segment(problem, scorer, frame, ctx, frame.tiles))
            continue
        chosen = None
        if frame.fused:
            best_traffic = None
            for n in range(1, max_n + 1):
                seg = _initial_segment(problem, scorer, frame, ctx, n)
                seg = _greedy_pass(problem, scorer, [seg], only_local=True, ctx=ctx)[0]
                traffic, peak, _ = scorer.segment(seg, ctx)
                if peak <= scorer.cap and (best_traffic is None or traffic < best_traffic):
                    chosen, best_traffic = seg, traffic
            if chosen is not None:
                chosen = _initial_segment(problem, scorer, frame, ctx, chosen.tiles)
        else:
            for n in range(1, max_n + 1):
                seg = _initial_segment(problem, scorer, frame, ctx, n)
                if _segment_fits(scorer, seg, ctx):
                    chosen = seg
                    break
        if chosen is None:  # nothing fits: keep the lowest-peak variant
            trials = [_initial_segment(problem, scorer, frame, ctx, n) for n in range(1, max_n + 1)]
            chosen = min(trials, key=lambda s: scorer.segment(s, ctx)[1])
        segs.append(chosen)
    segs = _greedy_pass(problem, scorer, segs, only_local=False)
    return Mapping(tuple(segs), name).canonical(net)


def _lone_context(net: Network, layers: Sequence[str]) -> SegmentContext:
    inside = set(layers)
    outs = set(net.output_names)
    written = {n for n in layers if n in outs or any(c not in inside for c in net.consumers(n))}
    return SegmentContext(frozenset(), frozenset(written))


def _greedy_pass(problem: Problem, scorer: _Scorer, segs: list[Segment], only_local: bool,
                 ctx: SegmentContext | None = None) -> list[Segment]:
    net = problem.network
    T = net.timesteps
    segs = list(segs)

    def score(cands: list[Segment]) -> tuple[int, bool]:
        if only_local:
            assert ctx is not None
            traffic, peak, _ = scorer.segment(cands[0], ctx)
            return traffic, peak <= scorer.cap
        total, fits, _ = scorer.mapping(cands)
        return total, fits

    def refit(cands: list[Segment], touched: set[int]) -> list[Segment]:
        ctxs = [ctx] if only_local else mapping_contexts(net, Mapping(tuple(cands)))
        return [_fit_layers(problem, s, c) if i in touched else s
                for i, (s, c) in enumerate(zip(cands, ctxs, strict=True))]

    traffic, _ = score(segs)
    for idx, change in _switches(problem, segs):
        if only_local and "inputs" in change:
            continue
        options = [change]
        if "states" in change:
            name = next(iter(change["states"]))  # type: ignore[call-overload]
            seg = segs[idx]
            if _tile_resident_ok(seg, T):
                options.append({"states": {name: StateMode.TILE_RESIDENT},
                                "order": Order.SPACE_OUTER})
        for opt in options:
            cands = list(segs)
            cands[idx] = cands[idx].replace(**opt)
            touched = set(range(len(cands))) if "inputs" in opt else {idx}
            cands = refit(cands, touched)
            new_traffic, fits = score(cands)
            if fits and new_traffic < traffic:
                segs, traffic = cands, new_traffic
                break
    return segs


def named_schedule(problem: Problem, name: str, tiles: Sequence[int] | int | None = None
                   ) -> Result:
    """Build, fill and score a named or hybrid schedule.

    Returns a :class:`Result` with status ``feasible`` when the mapping fits
    the global buffer, else ``infeasible`` with its lowest-peak variant.
    """
    start = time.perf_counter()
    frames = parse_schedule(name, problem.network, tiles)
    mapping = greedy_mapping(problem, frames, name=name.upper())
    cost = evaluate(problem, mapping)
    status = SolveStatus.FEASIBLE if cost.feasible else SolveStatus.INFEASIBLE
    value = cost.objective_value(problem.objective.value)
    msg = "" if cost.feasible else (
        f"does not fit: needs {cost.peak_gb_bits} bits of global buffer, capacity "
        f"{cost.capacity_bits}")
    return Result(status=status, solver=f"named:{name.upper()}",
                  objective=problem.objective.value, mapping=mapping, cost=cost,
                  objective_value=value, runtime_s=time.perf_counter() - start, message=msg)
