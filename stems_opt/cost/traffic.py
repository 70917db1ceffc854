"""Off-chip traffic and global-buffer occupancy, as a sum of terms.

A segment's cost is a sum of :class:`Term` objects, one per decision
(a weight tensor, a state tensor, an activation tensor at its producer, a
DRAM-read tensor at its consumer). Each term carries its DRAM reads and
writes, its *persistent* global-buffer bits (held for the whole segment) and
its *local* bits per (tile, layer position) (live or transient). The peak
occupancy of a segment is::

    peak = sum(persistent) + max over (tile t, position p) of sum(local[t, p])

The optimiser's coefficients come from the same term functions as
:func:`stems_opt.cost.evaluation.evaluate`, so the two agree by construction. No solver
is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from stems_opt.cost.geometry import SegmentGeometry
from stems_opt.mapping import Halo, Mapping, Placement, Segment, StateMode, WeightChoice
from stems_opt.network import Axis, Layer, Network, StatePersistence

TENSOR_CLASSES = ("weights", "state", "activations")


@dataclass(frozen=True)
class Term:
    """One decision's share of a segment's traffic and occupancy.

    ``local`` is ``None`` or an ``(n, L)`` array of bits per (tile, layer
    position in the segment).
    """

    tensor_class: str
    tensor: str
    layer: str
    read_bits: int = 0
    write_bits: int = 0
    persistent_bits: int = 0
    local: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SegmentContext:
    """How a segment meets the rest of the mapping.

    Parameters
    ----------
    whole
        Tensors kept whole in the GB during this segment (on-chip across
        segments): each adds its full size to the persistent bits.
    written
        Tensors produced in this segment that are written to DRAM
        (network outputs, and tensors some consumer reads from DRAM).
    """

    whole: frozenset[str] = frozenset()
    written: frozenset[str] = frozenset()


def _local(geo: SegmentGeometry, pos_lo: int, pos_hi: int, per_tile: Sequence[int]) -> np.ndarray:
    arr = np.zeros((geo.n, len(geo.layers)), dtype=np.int64)
    arr[:, pos_lo:pos_hi + 1] = np.asarray(per_tile, dtype=np.int64)[:, None]
    return arr


def weight_term(geo: SegmentGeometry, layer: Layer, choice: WeightChoice, m: int) -> Term:
    """Traffic and occupancy of ``layer``'s weights under ``choice``."""
    w = layer.weight_size_bits
    if choice.resident:
        return Term("weights", layer.name, layer.name, read_bits=w, persistent_bits=w)
    runs = geo.S * geo.active_tiles(layer.name)
    reads = runs * w if choice.chunks == 1 else runs * m * w
    chunk = w // choice.chunks
    per_tile = [chunk if r else 0 for r in geo.tile_rows(layer.name)]
    p = geo.pos[layer.name]
    return Term("weights", layer.name, layer.name, read_bits=reads,
                local=_local(geo, p, p, per_tile))


def state_term(geo: SegmentGeometry, layer: Layer, mode: StateMode, m: int,
               persistence: StatePersistence) -> Term:
    """Traffic and occupancy of ``layer``'s neuron state under ``mode``."""
    v = layer.state_size_bits
    row = layer.state_row_bits(geo.seg.axis)
    passes = 1 if mode is not StateMode.SPILLED else geo.S
    traffic = passes * v if persistence is StatePersistence.STREAMING else (passes - 1) * v
    if mode is StateMode.RESIDENT:
        return Term("state", layer.name, layer.name, traffic, traffic, persistent_bits=v)
    if mode is StateMode.TILE_RESIDENT:
        return Term("state", layer.name, layer.name, traffic, traffic,
                    persistent_bits=max(geo.tile_rows(layer.name)) * row)
    per_tile = [r * row for r in geo.max_sub_rows(layer.name, m)]
    p = geo.pos[layer.name]
    return Term("state", layer.name, layer.name, traffic, traffic,
                local=_local(geo, p, p, per_tile))


def output_term(geo: SegmentGeometry, layer: Layer, in_segment: Placement | None,
                whole: bool, written: bool, m: int) -> Term:
    """The output tensor of ``layer`` at its producer.

    ``in_segment`` is its placement for in-segment consumers (``None`` when it
    has none); ``whole`` says it is kept whole in the GB during this segment;
    ``written`` that it goes to DRAM.
    """
    net = geo.network
    name = layer.name
    rowbits = layer.output_row_bits(geo.seg.axis)
    write = net.tensor_size_bits(name) if written else 0
    if whole:
        return Term("activations", name, name, write_bits=write,
                    persistent_bits=net.tensor_size_bits(name))
    p = geo.pos[name]
    if in_segment is Placement.ON_CHIP:
        last = max(geo.pos[c] for c in net.consumers(name) if c in geo.inside)
        live = [r * rowbits * geo.tb for r in geo.tile_rows(name)]
        carried = geo.carried_rows(name)
        return Term("activations", name, name, write_bits=write,
                    persistent_bits=carried * rowbits * geo.tile_keep_mult,
                    local=_local(geo, p, last, live))
    if written:
        per_tile = [r * rowbits * geo.tb for r in geo.max_sub_rows(name, m)]
        return Term("activations", name, name, write_bits=write, local=_local(geo, p, p, per_tile))
    return Term("activations", name, name)


def dram_read_term(geo: SegmentGeometry, tensor: str, consumer: Layer, halo: Halo,
                   m: int) -> Term:
    """``consumer`` reading ``tensor`` from DRAM, window by window."""
    rowbits = geo.network.tensor_row_bits(tensor, geo.seg.axis)
    keep = halo is Halo.KEEP
    total, max_new, sub_halo = geo.window_reads(consumer.name, m, keep)
    p = geo.pos[consumer.name]
    # The rows kept between this consumer's sub-tiles live only while it runs, in the
    # room the tensor's reservation across tiles (kept_halo_term) leaves free then;
    # only what exceeds it is added.
    room = geo.halo_room(tensor, consumer.name) if keep else [0] * geo.n
    return Term("activations", tensor, consumer.name,
                read_bits=total * rowbits * geo.T,
                local=_local(geo, p, p, [(r * geo.tb + max(0, h - f)) * rowbits
                                         for r, h, f in zip(max_new, sub_halo, room,
                                                            strict=True)]))


def kept_halo_term(geo: SegmentGeometry, tensor: str) -> Term:
    """The rows of ``tensor``, read from DRAM under ``keep``, held across tile
    boundaries for its in-segment consumers (:meth:`SegmentGeometry.kept_halo_rows`)."""
    rowbits = geo.network.tensor_row_bits(tensor, geo.seg.axis)
    return Term("activations", tensor, "", persistent_bits=geo.kept_halo_rows(tensor) * rowbits)


def layer_terms(network: Network, geo: SegmentGeometry, lay: Layer, m: int,
                weight: WeightChoice, state: StateMode, activation: Placement | None,
                whole: bool, written: bool, reads: Sequence[tuple[str, Halo]],
                memo: dict[tuple[object, ...], Term] | None = None) -> list[Term]:
    """The terms of one layer of a segment, from that layer's decisions alone.

    Parameters
    ----------
    m, weight, state
        The layer's sub-tiles, weight choice and state mode (the last two are
        ignored for layers without weights or state).
    activation
        Placement of its output for in-segment consumers, ``None`` when it has none.
    whole, written
        Whether its output is kept whole in the GB / written to DRAM (the
        segment's :class:`SegmentContext`).
    reads
        ``(tensor, halo)`` of every input it reads from DRAM, in input order.
    memo
        Optional cache of terms for callers that build many variants of one
        frame: keyed on each term's own arguments, it must belong to ``geo``.

    A segment's terms are those of its layers in order (:func:`segment_terms`),
    so a caller may also cache them per layer on exactly these arguments.
    """
    name = lay.name
    terms: list[Term] = []
    if lay.has_weights:
        key: tuple[object, ...] = ("weights", name, weight, m)
        term = memo.get(key) if memo is not None else None
        if term is None:
            term = weight_term(geo, lay, weight, m)
            if memo is not None:
                memo[key] = term
        terms.append(term)
    if lay.stateful:
        key = ("state", name, state, m)
        term = memo.get(key) if memo is not None else None
        if term is None:
            term = state_term(geo, lay, state, m, network.state_persistence)
            if memo is not None:
                memo[key] = term
        terms.append(term)
    key = ("output", name, activation, whole, written, m)
    term = memo.get(key) if memo is not None else None
    if term is None:
        term = output_term(geo, lay, activation, whole, written, m)
        if memo is not None:
            memo[key] = term
    terms.append(term)
    for src, halo in reads:
        key = ("read", name, src, halo, m)
        term = memo.get(key) if memo is not None else None
        if term is None:
            term = dram_read_term(geo, src, lay, halo, m)
            if memo is not None:
                memo[key] = term
        terms.append(term)
    return terms


def segment_terms(network: Network, seg: Segment, ctx: SegmentContext,
                  geo: SegmentGeometry | None = None,
                  memo: dict[tuple[object, ...], Term] | None = None) -> list[Term]:
    """Every term of ``seg`` given how it meets the rest of the mapping; ``geo`` and
    ``memo`` as :func:`layer_terms` takes them (one frame's, shared by its variants)."""
    geo = geo or SegmentGeometry(network, seg)
    terms: list[Term] = []
    kept: dict[str, None] = {}
    for lay in geo.layers:
        has_inner = any(c in geo.inside for c in network.consumers(lay.name))
        reads = []
        for src in dict.fromkeys(lay.inputs):
            # Placements are taken literally: a reader set to `dram` reads from DRAM even
            # when the tensor is also kept whole on chip for another segment.
            inner = src in geo.inside
            placement = seg.activation(src) if inner else seg.input(src)
            if placement is not Placement.ON_CHIP:
                reads.append((src, seg.halo(src)))
                if seg.halo(src) is Halo.KEEP and geo.n > 1:
                    kept[src] = None
        terms.extend(layer_terms(
            network, geo, lay, seg.sub_tile(lay.name), seg.weight(lay.name),
            seg.state(lay.name), seg.activation(lay.name) if has_inner else None,
            lay.name in ctx.whole, lay.name in ctx.written, reads, memo))
    terms.extend(kept_halo_term(geo, src) for src in kept)
    # Tensors from earlier segments kept whole but not read here still occupy the GB.
    produced_or_read = {lay.name for lay in geo.layers}
    for name in sorted(ctx.whole - produced_or_read):
        terms.append(Term("activations", name, "", persistent_bits=network.tensor_size_bits(name)))
    return terms


def mapping_contexts(network: Network, mapping: Mapping) -> list[SegmentContext]:
    """The :class:`SegmentContext` of every segment of ``mapping``."""
    segments = mapping.segments
    whole: list[set[str]] = [set() for _ in segments]
    written: list[set[str]] = [set() for _ in segments]
    for tensor, p, cons_segs, to_dram in _context_plan(network,
                                                       tuple(s.layers for s in segments)):
        last_on_chip = None
        for s in cons_segs:
            if s == p:
                to_dram |= segments[s].activation(tensor) is Placement.DRAM
            elif segments[s].input(tensor) is Placement.ON_CHIP:
                last_on_chip = s
            else:
                to_dram = True
        if last_on_chip is not None:
            for s in range(max(p, 0), last_on_chip + 1):
                whole[s].add(tensor)
        if to_dram and p >= 0:
            written[p].add(tensor)
    return [SegmentContext(frozenset(w), frozenset(x))
            for w, x in zip(whole, written, strict=True)]


@lru_cache(maxsize=256)
def _context_plan(network: Network, segment_layers: tuple[tuple[str, ...], ...]
                  ) -> tuple[tuple[str, int, tuple[int, ...], bool], ...]:
    """Per tensor (network input first, then layers in order): its producing segment
    (``-1`` for the input), the segments of its consumers in order, and whether it
    is a network output. It depends on the segmentation only, so the greedy, which
    re-derives the contexts of one segmentation many times, computes it once."""
    where = {name: i for i, layers in enumerate(segment_layers) for name in layers}
    where[network.input.name] = -1
    outputs = set(network.output_names)
    tensors = [network.input.name] + [lay.name for lay in network.layers]
    return tuple((tensor, where[tensor],
                  tuple(sorted({where[c] for c in network.consumers(tensor)})), tensor in outputs)
                 for tensor in tensors)


@dataclass(frozen=True)
class TrafficBreakdown:
    """DRAM reads and writes (bits) by tensor class."""

    read_bits: dict[str, int]
    write_bits: dict[str, int]

    @property
    def total_bits(self) -> int:
        """All off-chip traffic."""
        return sum(self.read_bits.values()) + sum(self.write_bits.values())

    def by_class(self) -> dict[str, int]:
        """Reads + writes per tensor class."""
        return {c: self.read_bits[c] + self.write_bits[c] for c in TENSOR_CLASSES}


def traffic_breakdown(terms: Sequence[Term]) -> TrafficBreakdown:
    """DRAM reads and writes of ``terms`` summed per tensor class."""
    r = dict.fromkeys(TENSOR_CLASSES, 0)
    w = dict.fromkeys(TENSOR_CLASSES, 0)
    for t in terms:
        r[t.tensor_class] += t.read_bits
        w[t.tensor_class] += t.write_bits
    return TrafficBreakdown(r, w)


def peak_of(terms: Sequence[Term], geo: SegmentGeometry) -> tuple[int, int, int, int]:
    """``(peak, persistent, tile, position)`` of a list of terms."""
    persistent = sum(t.persistent_bits for t in terms)
    local = np.zeros((geo.n, len(geo.layers)), dtype=np.int64)
    for t in terms:
        if t.local is not None:
            local += t.local
    flat = int(np.argmax(local))
    tile, pos = divmod(flat, len(geo.layers))
    return persistent + int(local[tile, pos]), persistent, tile, pos


def min_read_bits(network: Network, tensor: str, consumer: str, axis: Axis) -> int:
    """The fewest bits ``consumer`` can read of ``tensor`` from DRAM along ``axis``:
    the rows of the union of its one-row windows (fine sub-tiles, halos kept), over T."""
    lay = network.layer(consumer)
    rows: set[int] = set()
    for r in range(lay.extent(axis)):
        a, b = lay.window(axis, r, r + 1)
        rows.update(range(a, b))
    return len(rows) * network.tensor_row_bits(tensor, axis) * network.timesteps


def compulsory_traffic_bits(network: Network) -> int:
    """Traffic no mapping avoids: input, outputs, every weight once, unavoidable state.

    The input counts as each of its readers' fewest reads (the whole input for
    'same'-padded readers; fewer for a strided 1x1 conv, which skips rows).
    State: ``2 |V|`` per stateful layer under ``streaming``, none under ``reset``.
    """
    name = network.input.name
    total = sum(min(min_read_bits(network, name, c, a) for a in (Axis.OY, Axis.OX))
                for c in network.consumers(name))
    total += sum(network.tensor_size_bits(o) for o in network.output_names)
    total += network.weight_size_bits
    if network.state_persistence is StatePersistence.STREAMING:
        total += 2 * network.state_size_bits
    return total
