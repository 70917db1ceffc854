r"""A feasible segment for a frame that its cheapest choices overflow: greedy repair.

The primal counterpart of the knapsack bound of
:mod:`stems_opt.formulation.bounds`. Starting from a segment (usually every
decision at its cheapest choice), while some capacity row overflows, the
decision change with the least added cost per bit of overflow it removes is
applied: weights resident -> streamed -> chunked, state kept -> spilled, an
in-segment activation on chip -> through DRAM, a kept halo -> re-read, more
sub-tiles. Once the segment fits, changes that lower the cost and still fit
are applied back, the largest saving first: one decision, or a layer's weights
with fewer sub-tiles at once (chunked weights leave room for larger sub-tiles,
which neither change alone fits).

Every number comes from the cost model's own term functions
(:func:`stems_opt.cost.traffic.layer_terms`), and the returned segment is
scored once more by :func:`stems_opt.cost.traffic.segment_terms`, so its value
is exactly what :func:`stems_opt.cost.evaluation.evaluate` gives it in the same
context. The search is a heuristic: it gives upper bounds, never proofs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from stems_opt.cost.energy import layer_operand_total_fj, nest_hardware
from stems_opt.cost.geometry import SegmentGeometry, sub_tile_limits, weight_chunks
from stems_opt.cost.latency import LayerLatency, dram_reads
from stems_opt.cost.traffic import SegmentContext, kept_halo_term, layer_terms, segment_terms
from stems_opt.formulation.bounds import max_chunks
from stems_opt.hardware import Hardware
from stems_opt.mapping import RESIDENT, STREAMED, Halo, Placement, Segment, StateMode, WeightChoice
from stems_opt.network import Layer, Network

MAX_STEPS = 400
"""Decision changes tried at most per repair (each is one greedy step)."""


@dataclass(frozen=True)
class Rates:
    """Model units per bit: DRAM read and write, GB operand read and write; the
    hardware whose operand energy (:func:`layer_operand_energy_fj`) counts;
    model units per fJ of operand energy (``operand_weight``) and per cycle of
    latency (``latency``, :mod:`stems_opt.cost.latency`); ``fewest_cycles``:
    steps run their least-cycles nests (the latency objective's)."""

    read: int = 1
    write: int = 1
    gb_read: int = 0
    gb_write: int = 0
    hardware: Hardware | None = None
    operand_weight: int = 1
    latency: int = 0
    fewest_cycles: bool = False

    def operand_fj(self, geo: SegmentGeometry, layer: object, m: int, chunks: int) -> int:
        """Operand energy below DRAM of ``layer`` in model units (0 without energy)."""
        if not self.energy or self.hardware is None:
            return 0
        return self.operand_weight * layer_operand_total_fj(
            geo, layer, m, self.hardware, chunks)  # type: ignore[arg-type]

    def latency_units(self, lat: LayerLatency | None, geo: SegmentGeometry, layer: Layer,
                      m: int, weight: WeightChoice | None, state: StateMode | None,
                      written: bool, reads: tuple[tuple[str, Halo], ...]) -> int:
        """The layer's latency in model units (0 unless latency counts); ``lat`` is
        the layer's :class:`LayerLatency` in ``geo`` if the caller keeps one."""
        if not self.latency or self.hardware is None:
            return 0
        lat = lat or LayerLatency(geo, layer, self.hardware, nest_hardware(self.hardware),
                                  self.fewest_cycles)
        return self.latency * lat.cycles(m, weight, state, written, reads)

    @property
    def energy(self) -> bool:
        """Whether GB operand accesses count (the energy objective)."""
        return bool(self.gb_read or self.gb_write)


def segment_value(network: Network, seg: Segment, ctx: SegmentContext, rates: Rates,
                  geo: SegmentGeometry | None = None) -> tuple[float, int]:
    """``(value, peak bits)`` of ``seg`` in ``ctx``, as the cost model scores it
    (value in model units: bits, or fJ of memory energy)."""
    geo = geo or SegmentGeometry(network, seg)
    terms = segment_terms(network, seg, ctx, geo)
    occupancy = sum(t.persistent_bits for t in terms) + sum(
        (t.local for t in terms if t.local is not None), np.zeros(1, dtype=np.int64))
    value = sum(t.read_bits for t in terms) * rates.read + \
        sum(t.write_bits for t in terms) * rates.write
    for lay in geo.layers:
        value += rates.operand_fj(geo, lay, seg.sub_tile(lay.name), weight_chunks(seg, lay))
        value += rates.latency_units(
            None, geo, lay, seg.sub_tile(lay.name), seg.weight(lay.name) if lay.has_weights
            else None, seg.state(lay.name) if lay.stateful else None, lay.name in ctx.written,
            dram_reads(seg, geo.inside, lay))
    return value, int(np.max(occupancy))


class _State:
    """The decisions of one segment, its per-layer groups and their totals."""

    def __init__(self, network: Network, seg: Segment, ctx: SegmentContext, rates: Rates,
                 geo: SegmentGeometry):
        self.net, self.ctx, self.rates, self.geo = network, ctx, rates, geo
        self.layers = geo.layers
        self.inside = geo.inside
        self.memo: dict[tuple[object, ...], object] = {}
        self.groups: dict[tuple[object, ...], tuple[float, int, np.ndarray]] = {}
        self.subs = {lay.name: seg.sub_tile(lay.name) for lay in self.layers}
        self.weights = {lay.name: seg.weight(lay.name) for lay in self.layers if lay.has_weights}
        self.states = {lay.name: seg.state(lay.name) for lay in self.layers if lay.stateful}
        self.inner = {lay.name: any(c in self.inside for c in network.consumers(lay.name))
                      for lay in self.layers}
        self.acts = {name: seg.activation(name) for name, inner in self.inner.items() if inner}
        self.ins = dict(seg.inputs)
        self.halos = dict(seg.halos)
        self.seg = seg
        extra = sum(network.tensor_size_bits(t) for t in ctx.whole - self.inside)
        self.extra_bits = extra
        self.kept: dict[str, int] = {}
        self.latency: dict[str, LayerLatency] = {}
        self.limits: dict[str, int] | None = None  # sub-tile limits per layer

    def placement(self, src: str) -> Placement:
        return self.acts.get(src, Placement.DRAM) if src in self.inside else \
            self.ins.get(src, Placement.DRAM)

    def key(self, i: int) -> tuple[object, ...]:
        lay = self.layers[i]
        name = lay.name
        act = self.acts.get(name) if self.inner[name] else None
        written = name in self.ctx.written or act is Placement.DRAM
        reads = tuple((src, self.halos.get(src, Halo.REREAD)) for src in dict.fromkeys(lay.inputs)
                      if self.placement(src) is not Placement.ON_CHIP)
        return (i, self.subs[name], self.weights.get(name, STREAMED),
                self.states.get(name, StateMode.SPILLED), act, written, reads)

    def group(self, key: tuple[object, ...]) -> tuple[float, int, np.ndarray]:
        """``(value, persistent bits, occupancy)`` of one layer under ``key``: the
        occupancy (per tile and position) is its persistent bits plus its local bits."""
        got = self.groups.get(key)
        if got is None:
            i, m, weight, state, act, written, reads = key
            lay = self.layers[i]
            terms = layer_terms(self.net, self.geo, lay, m, weight, state, act,
                                lay.name in self.ctx.whole, written, reads,
                                memo=self.memo)  # type: ignore[arg-type]
            value = sum(t.read_bits for t in terms) * self.rates.read + \
                sum(t.write_bits for t in terms) * self.rates.write
            chunks = 1 if weight.resident or not lay.has_weights else weight.chunks
            value += self.rates.operand_fj(self.geo, lay, m, chunks)
            if self.rates.latency:
                lat = self.latency.get(lay.name)
                if lat is None and self.rates.hardware is not None:
                    lat = self.latency[lay.name] = LayerLatency(
                        self.geo, lay, self.rates.hardware, nest_hardware(self.rates.hardware),
                        self.rates.fewest_cycles)
                value += self.rates.latency_units(lat, self.geo, lay, m, weight, state,
                                                  written, reads)
            persistent = sum(t.persistent_bits for t in terms)
            # The layer's whole share of the occupancy: its persistent bits everywhere
            # plus its local bits (one array, so a trial adds and takes it at once).
            local = np.full((self.geo.n, len(self.layers)), persistent, dtype=np.int64)
            for t in terms:
                if t.local is not None:
                    local += t.local
            got = self.groups[key] = (value, persistent, local)
        return got

    def kept_bits(self) -> int:
        """Bits of the rows kept across tile boundaries, one reservation per tensor read
        from DRAM under ``keep`` (:func:`stems_opt.cost.traffic.kept_halo_term`)."""
        if self.geo.n == 1:
            return 0
        total = 0
        for src in {s for lay in self.layers for s in lay.inputs}:
            if self.placement(src) is Placement.ON_CHIP or \
                    self.halos.get(src, Halo.REREAD) is not Halo.KEEP:
                continue
            bits = self.kept.get(src)
            if bits is None:
                bits = self.kept[src] = kept_halo_term(self.geo, src).persistent_bits
            total += bits
        return total

    def kept_of(self, src: str) -> int:
        """The part of :meth:`kept_bits` that ``src`` reserves (0 unless it is read from
        DRAM under ``keep`` across several tiles)."""
        if self.geo.n == 1 or self.placement(src) is Placement.ON_CHIP or \
                self.halos.get(src, Halo.REREAD) is not Halo.KEEP:
            return 0
        bits = self.kept.get(src)
        if bits is None:
            bits = self.kept[src] = kept_halo_term(self.geo, src).persistent_bits
        return bits

    def totals(self, keys: list[tuple[object, ...]]) -> tuple[float, np.ndarray]:
        """Value and occupancy (per tile and position) of the layers under ``keys``."""
        value = 0.0
        occ = np.full((self.geo.n, len(self.layers)), self.extra_bits + self.kept_bits(),
                      dtype=np.int64)
        for k in keys:
            v, _, share = self.group(k)
            value += v
            occ += share
        return value, occ

    def segment(self) -> Segment:
        """The segment of the current decisions."""
        return self.seg.replace(sub_tiles=dict(self.subs), weights=dict(self.weights),
                                states=dict(self.states), activations=dict(self.acts),
                                inputs=dict(self.ins), halos=dict(self.halos))

    # --- moves: (undo, description) pairs applied in place -----------------------------
    def moves(self, k_unroll: int, tighter: bool) -> Iterator[tuple[str, str, object]]:
        """Every single decision change: ``tighter`` the ones that hold less in the
        buffer (and cost more), else the ones that cost less."""
        if self.limits is None:  # (the frame's, the same at every step)
            self.limits = sub_tile_limits(self.net, self.seg)
        limits = self.limits
        for lay in self.layers:
            name = lay.name
            w = self.weights.get(name)
            if w is not None:
                chunked = WeightChoice(chunks=max_chunks(lay.k, k_unroll))
                alts = [RESIDENT, STREAMED] + ([chunked] if chunked.chunks > 1 else [])
                for alt in alts:
                    if alt != w:
                        yield "weights", name, alt
            s = self.states.get(name)
            if s is not None:
                alt_state = StateMode.SPILLED if s is not StateMode.SPILLED else (
                    StateMode.TILE_RESIDENT if self.seg.order.value == "space_outer"
                    else StateMode.RESIDENT)
                yield "states", name, alt_state
            m = self.subs[name]
            if tighter and m < limits[name]:
                yield "subs", name, min(limits[name], max(m + 1, 2 * m))
                yield "subs", name, limits[name]
            if not tighter and m > 1:
                yield "subs", name, max(1, m // 2)
                yield "subs", name, 1
            if name in self.acts and name not in self.ctx.whole:
                alt_place = Placement.DRAM if self.acts[name] is Placement.ON_CHIP \
                    else Placement.ON_CHIP
                yield "acts", name, alt_place
        for src in {s for lay in self.layers for s in lay.inputs}:
            if self.placement(src) is Placement.ON_CHIP:
                continue
            h = self.halos.get(src, Halo.REREAD)
            yield "halos", src, Halo.REREAD if h is Halo.KEEP else Halo.KEEP

    def joint_moves(self, k_unroll: int) -> Iterator[tuple[tuple[str, str, object], ...]]:
        """A layer's weights changed together with fewer sub-tiles: chunked weights
        leave room for larger sub-tiles that neither change alone fits (a 1x1 conv
        whose streamed weights fit only beside 14 sub-tiles runs 2 beside 32 chunks)."""
        if self.limits is None:
            self.limits = sub_tile_limits(self.net, self.seg)
        for lay in self.layers:
            w = self.weights.get(lay.name)
            if w is None or self.subs[lay.name] == 1:
                continue
            chunked = WeightChoice(chunks=max_chunks(lay.k, k_unroll))
            fewer = _fewer_sub_tiles(self.subs[lay.name], self.limits[lay.name])
            for alt in (RESIDENT, STREAMED) + ((chunked,) if chunked.chunks > 1 else ()):
                if alt != w:
                    for m in fewer:
                        yield ("weights", lay.name, alt), ("subs", lay.name, m)

    def apply(self, field: str, name: str, value: object) -> object:
        """Set one decision; returns the old value."""
        table = getattr(self, field)
        old = table.get(name)
        table[name] = value
        return old

    def undo(self, field: str, name: str, old: object) -> None:
        table = getattr(self, field)
        if old is None:
            table.pop(name, None)
        else:
            table[name] = old


def _fewer_sub_tiles(m: int, limit: int) -> list[int]:
    """The sub-tile counts below ``m`` that a joint move tries: for each sub-tile
    height of a tile split up to ``limit`` ways (the rows it has), the fewest
    sub-tiles of that height (more of the same height only add steps)."""
    return sorted({-(-limit // h) for h in range(1, limit + 1)} & set(range(1, m)),
                  reverse=True)


def repair(network: Network, seg: Segment, ctx: SegmentContext, capacity_bits: int,
           rates: Rates, k_unroll: int, geo: SegmentGeometry | None = None,
           stopped: Callable[[], bool] | None = None) -> tuple[Segment, float] | None:
    """A segment of ``seg``'s frame that fits ``capacity_bits`` in ``ctx``, found
    greedily from ``seg``'s decisions, and its value; ``None`` when the greedy
    finds none.

    Inputs kept whole on chip stay on chip, and placements of tensors read
    from outside the segment are not changed (they are the segment's
    boundary, fixed by ``ctx``). ``stopped`` is asked between steps: when it
    says so, the repair gives up (``None``).
    """
    geo = geo or SegmentGeometry(network, seg)
    st = _State(network, seg, ctx, rates, geo)
    pos = {lay.name: i for i, lay in enumerate(st.layers)}
    readers: dict[str, list[int]] = {}
    for i, lay in enumerate(st.layers):
        for src in dict.fromkeys(lay.inputs):
            readers.setdefault(src, []).append(i)
    keys = [st.key(i) for i in range(len(st.layers))]
    value, occ = st.totals(keys)

    def touched(field: str, name: str) -> list[int]:
        if field == "halos":
            return readers.get(name, [])
        if field == "acts":
            return [pos[name], *readers.get(name, [])]
        return [pos[name]]

    # A move's change of value and occupancy depends only on the keys of the layers it
    # touches (and, for an activation, on its halo choice), so it is computed once per
    # such state: most moves are tried again, unchanged, at every step. One entry per
    # move (the latest state), so the memory stays that of one step's trials.
    deltas: dict[tuple[object, ...], tuple[tuple, tuple[float, np.ndarray | None, list]]] = {}

    def trial(field: str, name: str, alt: object) -> tuple[float, np.ndarray, list]:
        """Value, occupancy and keys with one decision changed (state unchanged)."""
        idx = touched(field, name)
        move = (field, name, alt)
        state = (st.halos.get(name) if field == "acts" else None, *[keys[i] for i in idx])
        entry = deltas.get(move)
        hit = entry[1] if entry is not None and entry[0] == state else None
        if hit is None:
            kept = field in ("halos", "acts")
            before = st.kept_of(name) if kept else 0
            old = st.apply(field, name, alt)
            new = [(i, st.key(i)) for i in idx]
            after = st.kept_of(name) if kept else 0
            st.undo(field, name, old)
            dv, do = 0.0, None
            if after != before:
                do = np.full(occ.shape, after - before, dtype=np.int64)
            for i, k in new:
                if k == keys[i]:
                    continue
                gv, _, go = st.group(keys[i])
                nv, _, no = st.group(k)
                dv += nv - gv
                do = no - go if do is None else do + (no - go)
            hit = (dv, do, new)
            deltas[move] = (state, hit)
        dv, do, new = hit
        return value + dv, occ if do is None else occ + do, new

    def joint_trial(pair: tuple[tuple[str, str, object], ...]
                    ) -> tuple[float, np.ndarray, list] | None:
        """Value, occupancy and keys with a layer's weights and sub-tiles changed
        together (:meth:`_State.joint_moves`: one layer's key, no halo); ``None`` when
        the key stays."""
        i = pos[pair[0][1]]
        olds = [st.apply(*move) for move in pair]
        key = st.key(i)
        for (field, name, _), old in zip(reversed(pair), reversed(olds), strict=True):
            st.undo(field, name, old)
        if key == keys[i]:
            return None
        gv, _, go = st.group(keys[i])
        nv, _, no = st.group(key)
        return value + nv - gv, occ + (no - go), [(i, key)]

    def overflow(o: np.ndarray) -> int:
        above = o[o > capacity_bits]
        return int(above.sum()) - capacity_bits * above.size

    over = overflow(occ)
    steps = 0
    while over > 0 and steps < MAX_STEPS:
        steps += 1
        if stopped is not None and stopped():
            return None
        best = None
        for field, name, alt in st.moves(k_unroll, tighter=True):
            v, o, new = trial(field, name, alt)
            freed = over - overflow(o)
            if freed <= 0:
                continue
            ratio = max(0.0, v - value) / freed
            if best is None or ratio < best[0]:
                best = (ratio, field, name, alt, v, o, new)
        if best is None:
            return None
        _, field, name, alt, value, occ, new = best
        st.apply(field, name, alt)
        for i, k in new:
            keys[i] = k
        over = overflow(occ)
    if over > 0:
        return None
    # Changes that save and still fit, the largest saving first.
    for _ in range(MAX_STEPS):
        if stopped is not None and stopped():
            break  # (what fits so far is a valid segment)
        best = None
        for field, name, alt in st.moves(k_unroll, tighter=False):
            v, o, new = trial(field, name, alt)
            if v < value and (best is None or v < best[0]) and int(o.max()) <= capacity_bits:
                best = (v, ((field, name, alt),), o, new)
        for pair in st.joint_moves(k_unroll):
            got = joint_trial(pair)
            if got is not None and got[0] < value and (best is None or got[0] < best[0]) \
                    and int(got[1].max()) <= capacity_bits:
                best = (got[0], pair, got[1], got[2])
        if best is None:
            break
        value, applied, occ, new = best
        for field, name, alt in applied:
            st.apply(field, name, alt)
        for i, k in new:
            keys[i] = k
    out = st.segment()
    # An in-segment activation through DRAM is written there (as mapping_contexts says).
    dram = {name for name, p in st.acts.items() if p is Placement.DRAM}
    exact, peak = segment_value(network, out, SegmentContext(ctx.whole, ctx.written | dram),
                                rates, geo)
    assert peak <= capacity_bits and exact == value, "repair disagrees with the cost model"
    return out, exact
