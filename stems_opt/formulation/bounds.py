r"""Capacity-aware lower bounds of frames, without building their options.

A frame's cheapest-choice bound (:func:`stems_opt.formulation.data.spec_lower_bound`)
takes every decision at its cheapest choice that fits the buffer alone. On a
deep network almost everything fits alone, so the bound stays at the
compulsory traffic while the decisions cannot all hold together. This module
adds what the buffer forces.

Per frame, every decision with a cheap and an expensive side becomes an
*item* :math:`i` with an excess :math:`e_i` (traffic its expensive side adds
over the cheap one) and a hold :math:`h_i(r)` (bits its cheap side keeps in
the buffer at capacity row :math:`r`, a (tile, layer position) pair):

* weights of a layer that runs in :math:`R > 1` steps: resident holds
  :math:`|W|` everywhere; streamed reads at least :math:`R |W|`, so
  :math:`e = (R - 1) |W|`;
* state with :math:`S > 1`: kept holds :math:`|V|` (or, under
  ``space_outer``, the largest tile's state); spilled moves
  :math:`2 (S - 1) |V|` more;
* a tensor from outside read from DRAM by the frame's layers, with more
  than one tile: ``keep`` holds the rows its readers share across a tile
  boundary (at least the most one reader keeps); ``reread`` reads each
  reader's tile windows whole;
* an activation with in-frame readers: on chip holds its carried rows
  everywhere and its current tile from its producer to its last in-frame
  reader; through DRAM it is written (unless written anyway) and each
  in-frame reader reads at least the union of its windows.

Any mapping keeps, at every row :math:`r`, the cheap sides it chose within
the budget :math:`B` (capacity less the tensors kept whole), so its excess is
at least

.. math:: \max_r \; \min \Big\{ \sum_i e_i x_i \;:\; \sum_i h_i(r) (1 - x_i) \le B,\;
          0 \le x_i \le 1,\; x_i = 1 \text{ if } h_i(r) > B \Big\},

a fractional knapsack per row, solved by sorting. Holds are lower bounds of
the cost model's occupancy terms and excesses lower bounds of its traffic
terms, so the result is a valid bound. These refinements keep it valid:

* :math:`B` at row :math:`r` is first reduced by what the layer there holds
  whatever it chooses: a weight chunk, its finest state and output
  sub-tiles, and for each DRAM input the rows of the tile's window no
  earlier tile read, shared by its finest sub-tiles (each sub-tile reads
  its new rows; none of these can have been kept from an earlier tile);
* an item with :math:`h_i(r) > B` on some row of the frame has
  :math:`x_i = 1` on every row (one decision per frame);
* weights that cannot be held whole (resident or streamed whole) beside
  the layer's finest sub-tiles must be chunked, and chunked weights are
  read once per sub-tile: their excess is :math:`(R m - 1) |W|` with
  :math:`m` the fewest sub-tiles whose buffers fit beside a chunk;
* at the layer's own row its weights are a separate item: whole (resident or
  streamed whole, both hold :math:`|W|` there) or chunked, read
  :math:`R m` times with :math:`m` as above even where whole weights fit;
* beside the chunk, a sub-tile holds its state and output rows and the
  whole window of every input it reads through one, from DRAM or made in
  the interval (:func:`_sub_window_rows`);
* the spilled state and the halo rule of a tensor one layer of the frame
  reads from DRAM are single decisions: on the largest row each is paid
  whole however few bits it frees
  (:func:`~stems_opt.formulation.row_sum_floor.largest_row_excess`).
* energy without loop nests: a gapped layer (kernel narrower than its
  stride) trades its weights' GB reads against its input rows over its
  sub-tile count, and reads its input's gap rows from DRAM when the input
  comes from there; the frame pays the least of both over at least the
  fewest sub-tiles that fit beside a chunk
  (:func:`~stems_opt.formulation.subtile_floor.gapped_costs`).
* with the item cover, the own-row weight item is one choice among whole and
  chunked in each sub-tile count, whose largest sub-tile holds more
  (:mod:`~stems_opt.formulation.subtile_cover`).

"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from stems_opt.cost.geometry import _row_window_arrays
from stems_opt.cost.traffic import min_read_bits
from stems_opt.formulation.item_cover import raise_least
from stems_opt.formulation.row_sum_floor import largest_row_excess, row_floor_excess
from stems_opt.formulation.subtile_cover import (
    SUBTILE_COVER,
    SubTileChoices,
    raise_least_subtiles,
    subtile_choices,
)
from stems_opt.formulation.subtile_floor import (
    gapped_costs,
    gapped_dram_reads,
    gapped_nest_tables,
    subtile_item,
    subtile_weight_excess,
)
from stems_opt.mapping import Order
from stems_opt.network import Axis, LayerKind, Network, most_chunks

#: ``(position, tb) -> [n - 1, f]``: a layer's operand floor rise with at least ``f``
#: sub-tiles (:func:`~stems_opt.formulation.nest_floor.nest_forced_excess`).
NestExcess = Callable[..., np.ndarray]


@lru_cache(maxsize=65536)
def tile_bounds_array(network: Network, first: int, last: int, axis: Axis,
                      tiles: int) -> tuple[np.ndarray, ...]:
    """Row boundaries of every layer of ``first..last`` (an ``(n + 1,)`` array each),
    equal to :func:`stems_opt.cost.geometry.tile_bounds`, computed with arrays."""
    layers = network.layers[first:last + 1]
    pos = {lay.name: i for i, lay in enumerate(layers)}
    outputs = set(network.output_names)
    t = np.arange(tiles + 1, dtype=np.int64)
    out: list[np.ndarray | None] = [None] * len(layers)
    for i in range(len(layers) - 1, -1, -1):
        lay = layers[i]
        extent = lay.extent(axis)
        consumers = network.consumers(lay.name)
        inner = [c for c in consumers if c in pos]
        is_out = lay.name in outputs or not consumers or len(inner) < len(consumers)
        b = (t * extent) // tiles if is_out else np.zeros(tiles + 1, dtype=np.int64)
        for c in inner:
            cb = out[pos[c]]
            assert cb is not None
            b = np.maximum(b, _window_hi(network.layer(c), axis, cb))
        b = np.minimum(b, extent)
        b[0], b[tiles] = 0, extent
        out[i] = b
    return tuple(out)  # type: ignore[arg-type]


def _window_hi(layer, axis: Axis, hi: np.ndarray) -> np.ndarray:
    """End of the input window of output rows ``[0, hi)`` (0 for empty ranges)."""
    if layer.kind in (LayerKind.FLATTEN, LayerKind.LINEAR):
        full = np.full_like(hi, layer.input_extent(axis))
    elif layer.kind is LayerKind.ADD:
        full = hi.copy()
    else:
        if axis is Axis.OY:
            s, p, f, e = layer.stride_y, layer.pad_y, layer.fy, layer.iy
        else:
            s, p, f, e = layer.stride_x, layer.pad_x, layer.fx, layer.ix
        full = np.minimum(e, (hi - 1) * s - p + f)
    return np.where(hi > 0, full, 0)


def _window_lo(layer, axis: Axis, row: np.ndarray) -> np.ndarray:
    """First input row needed from output row ``row`` on."""
    if layer.kind in (LayerKind.FLATTEN, LayerKind.LINEAR):
        return np.zeros_like(row)
    if layer.kind is LayerKind.ADD:
        return row.copy()
    s, p = (layer.stride_y, layer.pad_y) if axis is Axis.OY else (layer.stride_x, layer.pad_x)
    return np.maximum(0, row * s - p)


@lru_cache(maxsize=65536)
def read_bits(network: Network, tensor: str, consumer: str, axis: Axis) -> int:
    """:func:`stems_opt.cost.traffic.min_read_bits`, cached (it walks every row)."""
    return min_read_bits(network, tensor, consumer, axis)


def knapsack_excess(excess: np.ndarray, hold: np.ndarray, budget: int | np.ndarray,
                    frame_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the fractional knapsack of the module, and the row's slack.

    ``excess`` and ``hold`` have shape ``(items, rows)`` (an item's excess may
    differ between rows); ``budget`` is a number or one per row. With
    ``frame_rows``, the rows come in blocks of that many per frame, and an
    item whose cheap side overflows one row of its frame takes its expensive
    side on every row of that frame (it is one decision). Returns, per row,
    the least excess (float, before rounding) and the budget less what the
    row holds with every cheap side that saves something.
    """
    parts = _Knapsack.of(excess, hold, budget, frame_rows)
    return parts.base + parts.extra, parts.slack


@dataclass(frozen=True)
class _Knapsack:
    """The per-row knapsacks of :func:`knapsack_excess`, in parts."""

    e: np.ndarray  # (items, rows) excess
    h: np.ndarray  # (items, rows) holds of the items not forced (0 where forced)
    forced: np.ndarray  # (items, rows) the item takes its expensive side
    base: np.ndarray  # (rows,) excess of the forced items
    extra: np.ndarray  # (rows,) the fractional knapsack over the others
    slack: np.ndarray  # (rows,)

    @staticmethod
    def of(excess: np.ndarray, hold: np.ndarray, budget: int | np.ndarray,
           frame_rows: int | None) -> _Knapsack:
        hold = np.asarray(hold, dtype=np.float64)
        e = np.asarray(excess, dtype=np.float64)
        # Items whose expensive side costs nothing need not hold their cheap side.
        slack = budget - np.where(e > 0, hold, 0.0).sum(axis=0)
        forced = hold > budget
        if frame_rows is not None and forced.size:
            k, rows = forced.shape
            forced = np.repeat(forced.reshape(k, rows // frame_rows, frame_rows).any(axis=2),
                               frame_rows, axis=1)
        base = (e * forced).sum(axis=0)
        h = np.where(forced, 0.0, hold)
        need = h.sum(axis=0) - budget  # capacity still to free per row
        extra = np.zeros(need.shape)
        over = np.flatnonzero(need > 0)  # only rows that overflow need the knapsack
        if over.size:
            extra[over] = _knapsack_rows(e[:, over], h[:, over], need[over])
        return _Knapsack(e, h, forced, base, extra, slack)


#: Elements (items x rows) of one knapsack pass: its sort and sums make about six
#: temporaries of this size, so a long interval's frames go in slices of rows
#: (a 100-layer chain peaked at 830 MB in one pass).
KNAPSACK_CHUNK = 1 << 21


def _knapsack_rows(e: np.ndarray, h: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Per row, the least excess that frees ``need > 0`` bits of the holds ``h``
    (items by rows), items taken whole cheapest per bit first, the last one
    fractionally. Rows are independent: taken in slices of at most
    :data:`KNAPSACK_CHUNK` elements."""
    step = max(1, KNAPSACK_CHUNK // max(1, e.shape[0]))
    if e.shape[1] <= step:
        return _knapsack_slice(e, h, need)
    return np.concatenate([_knapsack_slice(e[:, i:i + step], h[:, i:i + step], need[i:i + step])
                           for i in range(0, e.shape[1], step)])


def _knapsack_slice(e: np.ndarray, h: np.ndarray, need: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(h > 0, e / h, np.inf)
    order = np.argsort(ratio, axis=0, kind="stable")
    hs = np.take_along_axis(h, order, axis=0)
    es = np.take_along_axis(e, order, axis=0)
    cum_h = np.cumsum(hs, axis=0)
    cum_e = np.cumsum(es, axis=0)
    # Items are dropped cheapest per bit first; the last one fractionally.
    k = np.minimum((cum_h < need[None, :]).sum(axis=0), hs.shape[0] - 1)
    cols = np.arange(hs.shape[1])
    prev = np.maximum(k - 1, 0)
    prev_h = np.where(k > 0, cum_h[prev, cols], 0.0)
    prev_e = np.where(k > 0, cum_e[prev, cols], 0.0)
    hk, ek = hs[k, cols], es[k, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(hk > 0, np.clip((need - prev_h) / hk, 0, 1), 0.0)
    return prev_e + frac * ek


def _overlaps(layer, axis: Axis, b: np.ndarray) -> np.ndarray:
    """Per tile (last axis of ``b``'s boundaries, one frame per leading row), the
    input rows a reader's tile shares with the tiles before it (one sub-tile
    per tile): what ``reread`` reads again and ``keep`` holds."""
    lo, hi = b[..., :-1], b[..., 1:]
    nonempty = hi > lo
    a = _window_lo(layer, axis, lo)
    e = _window_hi(layer, axis, hi)
    # End of the window of the nearest non-empty tile before (0 if none).
    ends = np.where(nonempty, e, 0)
    zero = np.zeros((*b.shape[:-1], 1), dtype=ends.dtype)
    prev_end = np.concatenate([zero, np.maximum.accumulate(ends, axis=-1)[..., :-1]], axis=-1)
    first = np.concatenate([zero == 0, ~np.maximum.accumulate(nonempty, axis=-1)[..., :-1]],
                           axis=-1)
    return np.where(nonempty & ~first, np.maximum(0, np.minimum(prev_end, e) - a), 0)


@lru_cache(maxsize=8192)
def _interval_plan(network: Network, first: int, last: int, axis: Axis) -> tuple:
    """Per layer of ``first..last``, what the bound needs and no frame changes."""
    layers = network.layers[first:last + 1]
    pos = {lay.name: i for i, lay in enumerate(layers)}
    plan = []
    for lay in layers:
        inner = tuple(c for c in network.consumers(lay.name) if c in pos)
        plan.append((
            lay,
            tuple((src, network.tensor_row_bits(src, axis), read_bits(network, src, lay.name, axis))
                  for src in dict.fromkeys(lay.inputs) if src not in pos),
            tuple((pos[c], network.layer(c)) for c in inner),
            sum(read_bits(network, lay.name, c, axis) for c in inner),
            max((pos[c] for c in inner), default=-1),
            # Inputs made in the interval: on chip or through DRAM, a sub-tile holds
            # its window of them too (see _sub_window_rows).
            tuple((src, network.tensor_row_bits(src, axis))
                  for src in dict.fromkeys(lay.inputs) if src in pos),
        ))
    return tuple(plan)


def _gapped(layer, axis: Axis) -> bool:
    """Whether the layer's one-row windows leave input rows out (kernel < stride)."""
    if layer.kind not in (LayerKind.CONV, LayerKind.POOL):
        return False
    f, st = (layer.fy, layer.stride_y) if axis is Axis.OY else (layer.fx, layer.stride_x)
    return f < st


def all_tile_bounds(network: Network, first: int, last: int, axis: Axis) -> np.ndarray:
    """Row boundaries of every layer of ``first..last`` for every tile count ``n``
    up to the least extent: ``out[i, n - 1, :n + 1]`` is
    :func:`tile_bounds_array`'s ``[i]``, and ``out[i, n - 1, t]`` for ``t > n``
    the layer's extent (empty tiles)."""
    layers = network.layers[first:last + 1]
    N = min(lay.extent(axis) for lay in layers)
    pos = {lay.name: i for i, lay in enumerate(layers)}
    outputs = set(network.output_names)
    n = np.arange(1, N + 1)[:, None]
    t = np.minimum(np.arange(N + 1)[None, :], n)  # (N, N + 1): t past n is n
    out = np.zeros((len(layers), N, N + 1), dtype=np.int64)
    for i in range(len(layers) - 1, -1, -1):
        lay = layers[i]
        extent = lay.extent(axis)
        consumers = network.consumers(lay.name)
        inner = [c for c in consumers if c in pos]
        is_out = lay.name in outputs or not consumers or len(inner) < len(consumers)
        b = (t * extent) // n if is_out else np.zeros_like(t)
        for c in inner:
            b = np.maximum(b, _window_hi(network.layer(c), axis, out[pos[c]]))
        b = np.minimum(b, extent)
        b[:, 0] = 0
        b[t == n] = extent
        out[i] = b
    return out


def interval_excess_bounds(network: Network, first: int, last: int, tb: int, axis: Axis,
                           order: Order, tiles: Sequence[int], budget: int,
                           written: Collection[str], whole: Collection[str],
                           maybe_whole: Collection[str] = (), read_rate: int = 1,
                           write_rate: int = 1, k_unroll: int = 1, weight_use_rate: int = 0
                           ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`frames_excess_bounds` of the frames ``(first, last, tb, axis, n,
    order)`` of every ``n`` in ``tiles``."""
    return frames_excess_bounds(network, first, last, axis, [(tb, order, n) for n in tiles],
                                budget, written, whole, maybe_whole, read_rate, write_rate,
                                k_unroll, weight_use_rate)


def frames_excess_bounds(network: Network, first: int, last: int, axis: Axis,
                         frames: Sequence[tuple[int, Order, int]], budget: int,
                         written: Collection[str], whole: Collection[str],
                         maybe_whole: Collection[str] = (), read_rate: int = 1,
                         write_rate: int = 1, k_unroll: int = 1, weight_use_rate: int = 0,
                         item_cover: bool = False, nest_excess: NestExcess | None = None,
                         subtile_cover: bool = False, frame_base: np.ndarray | None = None,
                         excess_floor: float = 0.0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Least cost the buffer forces over the cheapest choices, for the frames
    ``(first, last, tb, axis, n, order)`` of every ``(tb, order, n)`` in
    ``frames``, and each frame's slack (budget less the most a row holds with
    every cheap side). All frames are bounded at once, with arrays: it is
    :func:`signatures_excess_bounds` of the one signature ``(budget, written,
    whole)``.

    Parameters
    ----------
    budget
        Buffer bits left for the frame (capacity less tensors kept whole
        across segments, including the frame's own outputs kept whole).
    written
        Tensors made in the frame that go to DRAM anyway (network outputs,
        tensors a later segment reads from DRAM): placing them in DRAM inside
        the frame adds no write.
    whole
        Tensors kept whole during the frame (made before it or in it): read on
        chip, their bits already out of ``budget``.
    maybe_whole
        Tensors that may or may not be kept whole (for a bound over every
        signature): their cheap side holds the less of the whole tensor and
        the line buffer, and they are never charged a halo.
    read_rate, write_rate
        Cost of a DRAM bit read and written: 1 for traffic (bits), integer fJ
        for energy.
    k_unroll
        The array's K unrolling (it limits how finely weights are chunked).
    weight_use_rate
        Cost of a weight bit read from the GB by the array, for the energy
        of hardware without loop nests (0 otherwise): the weights go to the
        array once per sub-tile and timestep, and a layer runs at least the
        fewest sub-tiles that fit beside a weight chunk
        (:func:`~stems_opt.formulation.subtile_floor.subtile_weight_excess`).
    item_cover
        Raise the least frames of each signature to the bound of one decision
        per item across all rows (:mod:`~stems_opt.formulation.item_cover`).
    nest_excess
        With loop nests, ``nest_excess(position, tb)``: what the operand floor of the
        conv or linear layer at ``position`` rises by with at least ``f`` sub-tiles,
        ``[n - 1, f]`` (:func:`~stems_opt.formulation.nest_floor.nest_forced_excess`);
        each frame adds it at the fewest sub-tiles that fit beside a weight chunk.
    subtile_cover
        With ``item_cover``, the own-row weight items as one choice among whole and
        chunked in each sub-tile count (:mod:`~stems_opt.formulation.subtile_cover`;
        for energy each count pays its GB weight reads, or with ``nest_excess`` its
        nest energy, ``nest_excess(position, tb, True)``).
    frame_base, excess_floor
        With ``item_cover``, the order the frames are raised in: least by ``frame_base
        + max(excess, excess_floor)`` (``frame_base`` per frame of ``frames``: the cost
        beside the excess that the caller's frame bound adds, ``excess_floor`` the
        least excess it takes), the caller's frame bound
        (:func:`~stems_opt.formulation.item_cover.raise_frames`); by the excess alone
        when ``None``.

    Returns the bound per frame (``inf`` where the layer at some position
    cannot fit its own transient buffers) and the slack per frame.

    Only one row per layer position is bounded (see :func:`_interval_table`;
    a subset of rows: still a valid bound). The cheapest choices themselves
    (weights read once, ``2 |V|`` state traffic under ``streaming``, inputs
    read once) are not included: see
    :func:`stems_opt.formulation.data.cheapest_bits`.
    """
    bound, slack = signatures_excess_bounds(
        network, first, last, axis, frames, [(budget, frozenset(written), frozenset(whole))],
        maybe_whole, read_rate, write_rate, k_unroll, weight_use_rate, item_cover, nest_excess,
        subtile_cover, frame_base=frame_base, excess_floor=excess_floor)
    return bound[0], slack[0]


#: Elements (frames x rows x items) of one pass of :func:`signatures_excess_bounds`:
#: signatures beyond it go in further passes (the knapsack's arrays are about ten
#: times one array of this size, in float64).
SIGNATURE_CHUNK = 1 << 21


def signatures_excess_bounds(network: Network, first: int, last: int, axis: Axis,
                             frames: Sequence[tuple[int, Order, int]],
                             signatures: Sequence[tuple[int, Collection[str], Collection[str]]],
                             maybe_whole: Collection[str] = (), read_rate: int = 1,
                             write_rate: int = 1, k_unroll: int = 1, weight_use_rate: int = 0,
                             item_cover: bool = False, nest_excess: NestExcess | None = None,
                             subtile_cover: bool = False, relaxed_first: bool = True,
                             frame_base: np.ndarray | None = None, excess_floor: float = 0.0
                             ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`frames_excess_bounds` of every signature ``(budget, written, whole)`` of
    ``signatures`` at once: bound and slack of shape ``(signatures, frames)``.

    The signatures of an interval differ only in the budget and in which
    tensors are written anyway or kept whole; every frame and signature pair
    is one row of the same arrays, and an item a signature does not have
    (a tensor it keeps whole) is an item with no excess and no hold there,
    which changes no knapsack. The same values as one call per signature
    (tested against that computation), in a fraction of the time: most of a
    call's cost is per array operation, not per element. ``relaxed_first``: covered
    frames go through their program's LP relaxation first
    (:func:`~stems_opt.formulation.subtile_cover.raise_least_subtiles`); ``frame_base``
    and ``excess_floor``: the order covered frames are raised in, as
    :func:`frames_excess_bounds` takes it.
    """
    plan = _interval_plan(network, first, last, axis)
    K, F, L = len(signatures), len(frames), len(plan)
    if not F or not K:
        return np.zeros((K, F)), np.zeros((K, F), dtype=np.int64)
    per_key = max(1, SIGNATURE_CHUNK // (F * L * (4 * L + 2)))
    if len(signatures) > per_key:
        parts = [signatures_excess_bounds(network, first, last, axis, frames,
                                          signatures[s:s + per_key], maybe_whole, read_rate,
                                          write_rate, k_unroll, weight_use_rate, item_cover,
                                          nest_excess, subtile_cover, relaxed_first,
                                          frame_base, excess_floor)
                 for s in range(0, K, per_key)]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    budgets = np.array([s[0] for s in signatures], dtype=np.int64)
    writtens = [frozenset(s[1]) for s in signatures]
    wholes = [frozenset(s[2]) for s in signatures]
    bound, slack = _signature_rows(network, axis, plan, _interval_table(network, first, last, axis),
                                   frames, budgets, writtens, wholes, frozenset(maybe_whole),
                                   read_rate, write_rate, k_unroll, weight_use_rate,
                                   item_cover, nest_excess, subtile_cover, relaxed_first,
                                   frame_base, excess_floor)
    return bound.reshape(K, F), slack.reshape(K, F)


def _signature_rows(network: Network, axis: Axis, plan: tuple, tab: _Table,
                    frames: Sequence[tuple[int, Order, int]], budgets: np.ndarray,
                    writtens: list[frozenset[str]], wholes: list[frozenset[str]],
                    maybe_whole: frozenset[str], read_rate: int, write_rate: int,
                    k_unroll: int, weight_use_rate: int, item_cover: bool = False,
                    nest_excess: NestExcess | None = None, subtile_cover: bool = False,
                    relaxed_first: bool = True, frame_base: np.ndarray | None = None,
                    excess_floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The bounds of :func:`signatures_excess_bounds`, one row per signature and frame
    (signature-major)."""
    T = network.timesteps
    K, F0, L = len(budgets), len(frames), len(plan)
    F = K * F0
    key = np.repeat(np.arange(K), F0)  # the signature of each row
    budget = budgets[key]
    tb = np.tile(np.array([f[0] for f in frames], dtype=np.int64), K)
    outer = np.tile(np.array([f[1] is Order.SPACE_OUTER for f in frames]), K)
    idx = np.tile(np.array([f[2] for f in frames], dtype=np.int64) - 1, K)

    def per_row(flags: list[bool]) -> np.ndarray:
        """A flag per signature, per row."""
        return np.array(flags, dtype=bool)[key]

    S = T // tb
    mult = np.where(outer, T, tb)  # timesteps the carried rows and halos are held for
    active, finest, rmax = tab.active[idx], tab.finest[idx], tab.rmax[idx]
    rpick, fpick = tab.rpick[idx], tab.fpick[idx]
    several = idx > 0  # halos exist only with more than one tile
    shown = rpick > 0  # the layer has rows in the tile bounded at its position
    sub = np.where(shown, -(-rpick // np.maximum(finest, 1)), 0)
    # What the layer at each position needs whatever it chose: a weight chunk, a
    # state sub-tile, an output sub-tile, its DRAM inputs' new rows for a sub-tile;
    # each cheap side holds at least as much.
    own = np.zeros((5, F, L))  # weights, state, (halos: none), outputs, DRAM inputs
    excess: list[np.ndarray] = []  # per item, (F,)
    holds: list[np.ndarray] = []  # per item, (F, L)
    kept: dict[str, list[np.ndarray]] = {}  # tensor -> [excess, hold]
    dead = np.zeros(F, dtype=bool)  # frames where some layer fits in no choice
    slack_fix = np.zeros((F, L))
    weight_items: list[tuple[int, int, np.ndarray]] = []  # (item, position, excess)
    operand_extra = np.zeros(F)  # GB operand reads the buffer forces (energy)
    whole_items: list[int] = []  # items paid in full to free any part (row_sum_floor)
    sub_choices: list[SubTileChoices] = []  # own-row weight items' sub-tile choices
    act_index: dict[str, int] = {}  # tensor made in the interval -> its item
    pending = None  # (own-row item, runs, fewest, sub-tile item) of the layer's weights
    for i, (lay, ins, inner, reads, lastp, made_in) in enumerate(plan):
        sub_item = None  # (energy: the one-more-sub-tile item and its GB reads)
        name = lay.name
        is_whole = per_row([name in wh for wh in wholes])
        is_written = per_row([name in wr for wr in writtens])
        w, v = lay.weight_size_bits, lay.state_size_bits
        v_row, out_row = lay.state_row_bits(axis), lay.output_row_bits(axis)
        in_row = np.array([sum(rowbits for src, rowbits, _ in ins
                               if src not in wh and src not in maybe_whole)
                           for wh in wholes], dtype=np.int64)[key]
        own[4, :, i] = np.where(shown[:, i], -(-fpick[:, i] // finest[:, i]), 0) * in_row * tb
        out_row_own = np.where(~is_whole & (bool(inner) | is_written), out_row, 0)
        own[3, :, i] = sub[:, i] * out_row_own * tb
        if lay.stateful:
            own[1, :, i] = sub[:, i] * v_row
        if lay.has_weights:
            chunk = w // max_chunks(lay.k, k_unroll)
            own[0, :, i] = np.where(shown[:, i], chunk, 0)
            # Every input a sub-tile reads through a window, from DRAM or on chip.
            win_row = in_row + np.array([sum(rowbits for src, rowbits in made_in
                                             if src not in wh and src not in maybe_whole)
                                         for wh in wholes], dtype=np.int64)[key]
            steps, fewest, which = _weight_steps_rows(
                tab, i, chunk, w, v_row if lay.stateful else 0,
                np.stack([tb, budget, out_row_own, win_row], axis=1))
            steps, fewest = steps[which, idx], fewest[which, idx]
            dead |= steps == 0
            gaps = None  # (loop nests: a gapped layer's gap rows read from DRAM, per m)
            if nest_excess is not None and GAPPED_NESTS and _gapped(lay, axis) and ins:
                gaps = (_gapped_dram(network, plan, tab, i, axis, ins[0], read_rate),
                        per_row([ins[0][0] not in wh and ins[0][0] not in maybe_whole
                                 for wh in wholes]))
            if nest_excess is not None:  # (loop nests: the sub-tiles the buffer forces)
                at = np.maximum(fewest, 1)
                more = np.zeros(F)  # the rise of one sub-tile more than the fewest
                for t in np.unique(tb).tolist():
                    sel = tb == t
                    table = _forced_rows(nest_excess, i, t, idx[sel], gaps, sel)
                    cols = np.arange(len(table))
                    here = table[cols, np.minimum(at[sel], table.shape[1] - 1)]
                    operand_extra[sel] += here
                    # (at least 0: where no m > f has a nest the table holds 0 past f)
                    more[sel] = np.maximum(0.0, table[cols, np.minimum(
                        at[sel] + 1, table.shape[1] - 1)] - here)
                if NEST_ITEM and not (item_cover and subtile_cover and SUBTILE_COVER):
                    # One more sub-tile than the fewest, an item at the layer's own row
                    # (the sub-tile choices hold and price the same: not beside them).
                    _, h_sub = subtile_item(fewest, finest[:, i], rpick[:, i], fpick[:, i],
                                            np.where(S == 1, v_row if lay.stateful else 0, 0)
                                            + (0 if inner else out_row_own) * tb,
                                            in_row * tb, active[:, i], T, w, 0)
                    if ((more > 0) & (h_sub > 0)).any():  # (else it frees or costs nothing)
                        e, hold = np.zeros((F, L)), np.zeros((F, L))
                        e[:, i], hold[:, i] = more, h_sub
                        whole_items.append(len(excess))  # (any part freed costs all of it)
                        excess.append(e)
                        holds.append(hold)
            if weight_use_rate and _gapped(lay, axis) and (ins or made_in):
                # Its sub-tiles trade weight reads against input rows (and the gap rows
                # read from DRAM, where its input comes from there): the least cost of
                # at least the fewest sub-tiles (subtile_floor.gapped_costs).
                src, rowbits, union = ins[0] if ins else (*made_in[0], 0)
                on_gb, from_dram = _gapped_tables(network, plan, tab, i, axis, rowbits,
                                                  union // (rowbits * T), read_rate,
                                                  weight_use_rate)
                at = np.maximum(fewest, 1)
                dram_in = per_row([bool(ins) and src not in wh and src not in maybe_whole
                                   for wh in wholes])
                operand_extra += np.where(dram_in, from_dram[idx, at], on_gb[idx, at])
            if weight_use_rate and not _gapped(lay, axis):
                # (A gapped layer's sub-tiles also read fewer input rows: its weights
                # and inputs have one joint floor, operand_floors.gapped_weight_input_fj.)
                operand_extra += subtile_weight_excess(fewest, active[:, i], T, w,
                                                       weight_use_rate)
                # Buffers no other item holds at this row: the state when it is not
                # kept across time batches, the output when no in-frame reader keeps it.
                e_sub, h_sub = subtile_item(fewest, finest[:, i], rpick[:, i], fpick[:, i],
                                            np.where(S == 1, v_row if lay.stateful else 0, 0)
                                            + (0 if inner else out_row_own) * tb,
                                            in_row * tb, active[:, i], T, w, weight_use_rate)
                e, hold = np.zeros((F, L)), np.zeros((F, L))
                e[:, i], hold[:, i] = e_sub, h_sub
                sub_item = (len(excess), e_sub)
                whole_items.append(len(excess))  # (any part of it freed costs all of it)
                excess.append(e)
                holds.append(hold)
            runs = S * active[:, i]
            # Two items, one per kind of row. On the other rows: resident (holds
            # ``w``) or not (read at least ``runs * steps`` times).
            e_res = ((runs * np.maximum(steps, 1) - 1) * w * read_rate).astype(np.float64)
            e = np.repeat(e_res[:, None], L, axis=1)
            e[:, i] = 0.0
            hold = np.full((F, L), float(w))
            hold[:, i] = 0.0
            weight_items.append((len(excess), i, e_res))
            excess.append(e)
            holds.append(hold)
            # At its own row: whole (resident or streamed whole, both hold ``w``) or
            # chunked, read once per sub-tile, at least ``fewest`` sub-tiles per tile.
            e_own = ((runs * np.maximum(fewest, 1) - 1) * w * read_rate).astype(np.float64)
            e = np.zeros((F, L))
            e[:, i] = e_own
            hold = np.zeros((F, L))
            hold[:, i] = np.maximum(0, w - own[0, :, i])
            if item_cover and subtile_cover and SUBTILE_COVER:  # (chunked in m sub-tiles)
                if nest_excess is not None:  # (loop nests: each m pays its nest energy)
                    sub_item = (None, _nest_prices(nest_excess, i, tb, idx, fewest,
                                                   finest[:, i], gaps))
                pending = (len(excess), runs, fewest, sub_item)
            excess.append(e)
            holds.append(hold)
            # (The frame's slack counts the weights at their own row as before.)
            slack_fix[:, i] += np.where(e_own > 0, hold[:, i], 0) - np.where(
                e_res > 0, hold[:, i], 0)
        if lay.stateful and (S > 1).any():
            keep = np.where(outer, np.minimum(v, rmax[:, i] * v_row), v)
            keep = np.where(S > 1, keep, 0)
            hold = np.repeat(keep[:, None].astype(np.float64), L, axis=1)
            hold[:, i] = np.maximum(0, keep - own[1, :, i])
            # Spilled adds 2 (S - 1) |V| under both persistences; one decision, paid
            # whole however little of the kept state's bits it frees.
            whole_items.append(len(excess))
            excess.append(((S - 1) * v * (read_rate + write_rate)).astype(np.float64))
            holds.append(hold)
        for src, rowbits, fewest in ins:
            if src in maybe_whole:
                continue
            # From DRAM: keep holds the halo, reread reads each tile's whole window.
            # One rule per tensor: its readers share the rows kept, at least the
            # most any one of them keeps across a tile boundary. (No item where the
            # signature keeps the tensor whole.)
            dram = ~per_row([src in wh for wh in wholes])
            item = kept.setdefault(src, [np.zeros(F), np.zeros(F), 0])
            item[2] += 1
            item[0] += np.where(several & dram, np.maximum(
                0, tab.windows[idx, i] * rowbits * T - fewest), 0) * read_rate
            item[1] = np.maximum(item[1], np.where(dram, tab.overlap[idx, i] * rowbits * mult, 0))
        if pending is not None:
            # The DRAM inputs' window of the largest sub-tile, beyond the new rows the
            # budget counts and the rows a kept halo may hold.
            window = (in_row * tb, own[4, :, i] + np.where(
                several, tab.overlap[idx, i] * in_row * mult, 0))
            sub_choices.append(_subtile_choices(
                pending, i, lay, axis, tab, finest[:, i], rpick[:, i], S, tb, v_row, out_row,
                out_row_own, is_whole, inner, made_in, act_index, wholes, key, maybe_whole,
                len(excess), w, read_rate, window, (fpick[:, i], in_row * tb)))
            pending = None
        if not inner or is_whole.all():
            continue
        act_index[name] = len(excess)
        size = network.tensor_size_bits(name)
        e = np.where(is_whole, 0.0, reads * read_rate + np.where(is_written, 0, size * write_rate))
        live = np.zeros((F, L))
        live[:, i:lastp + 1] = tab.live[idx, i, i:lastp + 1] * (out_row * tb)[:, None]
        cap = size if name in maybe_whole else np.inf
        hold = np.minimum((tab.carried[idx, i] * out_row * mult)[:, None] + live, cap)
        hold[:, i] = np.maximum(0, hold[:, i] - own[3, :, i])
        excess.append(e.astype(np.float64))
        holds.append(np.where(is_whole[:, None], 0.0, hold))
    for e, h, readers in kept.values():
        if readers == 1:  # (one reader: keep or reread is one decision, paid whole)
            whole_items.append(len(excess))
        excess.append(e)
        holds.append(np.repeat(h[:, None], L, axis=1))
    if not excess:  # nothing to free: a zero item
        excess, holds = [np.zeros(F)], [np.zeros((F, L))]
    # (items, F * L), frame-major rows; an item's excess is per frame or per row.
    row_budget = (budget[:, None] - own.sum(axis=0)).reshape(F * L)
    fixed = np.zeros((F, L))
    for k, i, e_res in weight_items:
        # Weights that cannot be whole at their own row are chunked, so not resident:
        # the resident item takes its expensive side on every other row.
        chunked = holds[k + 1][:, i] > row_budget.reshape(F, L)[:, i]
        if chunked.any():
            fixed[chunked] += excess[k][chunked]
            slack_fix[chunked] -= np.where(e_res[chunked, None] > 0, holds[k][chunked], 0.0)
            excess[k] = np.where(chunked[:, None], 0.0, excess[k])
            holds[k] = np.where(chunked[:, None], 0.0, holds[k])
    E = np.stack([np.repeat(np.asarray(e, dtype=np.float64)[:, None], L, axis=1)
                  if np.ndim(e) == 1 else e for e in excess]).reshape(len(excess), F * L)
    H = np.stack(holds).reshape(len(holds), F * L)
    parts = _Knapsack.of(E, H, row_budget, L)
    per_row_excess = parts.base + parts.extra + fixed.reshape(F * L)
    slack = parts.slack + slack_fix.reshape(F * L)
    # A row whose own transients overflow the budget: the frame cannot fit.
    per_row_excess = np.where(row_budget < 0, np.inf, per_row_excess).reshape(F, L)
    best = per_row_excess.max(axis=1) + operand_extra  # (a cost term no row item counts)
    if weight_use_rate:  # (energy without nests: sub-tiles paid whole and added up)
        best = np.maximum(best, operand_extra + row_floor_excess(
            parts.e, parts.h, parts.base + fixed.reshape(F * L),
            parts.h.sum(axis=0) - row_budget, L, _knapsack_rows, whole_items,
            [k + 1 for k, _, _ in weight_items], parts.extra))
    elif whole_items:  # (the largest row, with the decisions paid whole)
        best = np.maximum(best, operand_extra + largest_row_excess(
            parts.e, parts.h, parts.base + fixed.reshape(F * L),
            parts.h.sum(axis=0) - row_budget, L, _knapsack_rows, whole_items, parts.extra))
    best = np.where(dead, np.inf, best)
    if item_cover:  # (one decision per item across the rows: item_cover.py)
        pairs = tuple((k, k + 1) for k, _, _ in weight_items)
        best = raise_least_subtiles(best, parts.e, parts.h, parts.forced, row_budget, L, F0,
                                    pairs, operand_extra, sub_choices,
                                    relaxed_first=relaxed_first, base=frame_base,
                                    floor=excess_floor) if sub_choices else \
            raise_least(best, parts.e, parts.h, parts.forced, row_budget, L, F0, pairs,
                        operand_extra, base=frame_base, floor=excess_floor)
    # Relative slack against float rounding keeps the bound valid; excess is integral.
    finite = np.isfinite(best)
    bound = np.where(finite, np.maximum(0, np.ceil(np.where(finite, best, 0) * (1 - 1e-9)
                                                    - 1e-6)), np.inf)
    return bound, slack.reshape(F, L).min(axis=1).astype(np.int64)


def _subtile_choices(pending: tuple, i: int, lay, axis: Axis, tab: _Table,
                     finest: np.ndarray, rows: np.ndarray, S: np.ndarray, tb: np.ndarray,
                     v_row: int, out_row: int, out_row_own: np.ndarray, is_whole: np.ndarray,
                     inner: tuple, made_in: tuple, act_index: dict[str, int],
                     wholes: list[frozenset[str]], key: np.ndarray,
                     maybe_whole: frozenset[str], own_item: int, w: int, read_rate: int,
                     window: tuple[np.ndarray, np.ndarray],
                     fresh: tuple[np.ndarray, np.ndarray]) -> SubTileChoices:
    """The sub-tile choices of the weights of the layer at position ``i``
    (:mod:`~stems_opt.formulation.subtile_cover`): beside the chunk its largest
    sub-tile holds its state rows when not kept across time batches and its output
    rows when no layer of the frame reads it; its output rows when its item goes
    through DRAM (else the tile on chip holds them), and its window of each input
    made in the interval whose item goes through DRAM (else on chip); ``window``: the
    bits per input row of its DRAM inputs from outside and what the budget and a kept
    halo hold of their window already; ``fresh``: the tile's new rows of those inputs
    and their bits per row. For energy without loop nests (``pending`` holds the
    one-more-sub-tile item and its GB reads) every sub-tile count also pays its GB
    weight reads, with the weights whole or chunked, and replaces that item; with loop
    nests (``pending`` holds no item and each count's nest price, :func:`_nest_prices`)
    every count pays its price, whole or chunked."""
    item, runs, fewest, sub_item = pending
    drop, sub_read = (None, None) if sub_item is None else sub_item
    plain = np.where(S == 1, v_row if lay.stateful else 0, 0) + (0 if inner else out_row_own) * tb
    links = []
    if inner and not is_whole.all():
        links.append((own_item, np.where(is_whole, 0, out_row * tb), False))
    # (A window of a gapped layer, a kernel narrower than its stride, spans its gaps in
    # the buffer too: ``least`` is the span of a run's windows.)
    for src, rowbits in made_in:
        if src in act_index and src not in maybe_whole:
            bits = np.array([0 if src in wh else rowbits for wh in wholes])[key] * tb
            links.append((act_index[src], bits, True))
    return subtile_choices(item, i, runs, fewest, finest, rows, plain, w, read_rate, links,
                           tab.sub_windows[i][0], window, sub_read, drop,
                           None if sub_item is None else fresh)


#: With loop nests (and no sub-tile choices), one sub-tile more than the fewest is a
#: knapsack item at the layer's row, its excess the nest floor's rise; off only to compare.
NEST_ITEM = True


#: With loop nests, a gapped layer reading its input from DRAM pays its gap rows beside
#: its nest energy at each sub-tile count (nest_floor.gapped_nest_tables); off only to
#: compare.
GAPPED_NESTS = True


def _gapped_dram(network: Network, plan: tuple, tab: _Table, i: int, axis: Axis,
                 src: tuple, read_rate: int) -> np.ndarray:
    """:func:`~stems_opt.formulation.subtile_floor.gapped_dram_reads` of the gapped
    layer at position ``i`` reading ``src`` ``(tensor, bits per row, union bits)`` from
    DRAM, for every tile count, memoised on the table."""
    _, row_bits, union = src
    union_rows = union // (row_bits * network.timesteps)
    key = ("gapped_dram", i, row_bits, union_rows, read_rate)
    got = tab.memo.get(key)
    if got is None:
        first = network.index(plan[0][0].name)
        bounds = all_tile_bounds(network, first, first + len(plan) - 1, axis)[i]
        got = tab.memo[key] = gapped_dram_reads(network, plan[i][0], axis, bounds, row_bits,
                                                union_rows, read_rate)
    return got


def _nest_tables(nest_excess: NestExcess, i: int, t: int,
                 gaps: tuple[np.ndarray, np.ndarray] | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The layer at ``i``'s nest tables at time batch ``t`` (``nest_excess(i, t)`` and
    ``nest_excess(i, t, True)``), and with ``gaps`` those with its gap rows from DRAM
    (:func:`~stems_opt.formulation.subtile_floor.gapped_nest_tables`; ``None`` without)."""
    forced, by_m = nest_excess(i, t), nest_excess(i, t, True)
    if gaps is None:
        return forced, by_m, None, None
    return forced, by_m, *gapped_nest_tables(forced, by_m, gaps[0])


def _forced_rows(nest_excess: NestExcess, i: int, t: int, idx: np.ndarray,
                 gaps: tuple[np.ndarray, np.ndarray] | None, sel: np.ndarray) -> np.ndarray:
    """``nest_excess(i, t)``'s rows ``idx`` (the frames ``sel`` at time batch ``t``), the
    gap rows counted where the frame's row reads the gapped layer's input from DRAM."""
    if gaps is None:
        return nest_excess(i, t)[idx]
    forced, _, joint, _ = _nest_tables(nest_excess, i, t, gaps)
    return np.where(gaps[1][sel][:, None], joint[idx], forced[idx])


def _nest_prices(nest_excess: NestExcess, i: int, tb: np.ndarray, idx: np.ndarray,
                 fewest: np.ndarray, finest: np.ndarray,
                 gaps: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """With loop nests, per frame ``(F,)`` and sub-tile count ``m = 1 .. max finest``,
    what the layer at position ``i`` pays at ``m`` beyond the nest energy the frame's
    bound counts beside the item cover (its least over ``m >= fewest``,
    ``nest_excess(i, tb)``): ``(F, M)``, 0 where ``m`` has no nest price (no step fits
    at ``m``: no choice is ruled out on that account). ``gaps``: a gapped layer's gap
    rows read from DRAM per ``m`` and the frames whose row reads its input there, which
    pay them beside the nests (:func:`_nest_tables`)."""
    top = int(max(1, finest.max(initial=1)))
    out = np.zeros((len(tb), top))
    at = np.maximum(fewest, 1)
    for t in np.unique(tb).tolist():
        sel = np.flatnonzero(tb == t)
        forced, rise, joint, joint_m = _nest_tables(nest_excess, i, t, gaps)
        m = np.minimum(np.arange(1, top + 1), rise.shape[1] - 1)
        got = rise[idx[sel]][:, m] - forced[idx[sel], np.minimum(at[sel], forced.shape[1] - 1)
                                              ][:, None]
        if gaps is not None:
            assert joint is not None and joint_m is not None
            with_gaps = joint_m[idx[sel]][:, m] - joint[
                idx[sel], np.minimum(at[sel], joint.shape[1] - 1)][:, None]
            got = np.where(gaps[1][sel][:, None], with_gaps, got)
        out[sel] = np.where(np.isfinite(got), np.maximum(got, 0.0), 0.0)
    return out


def _gapped_tables(network: Network, plan: tuple, tab: _Table, i: int, axis: Axis,
                   row_bits: int, union_rows: int, read_rate: int, use_rate: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~stems_opt.formulation.subtile_floor.gapped_costs` of the layer at
    position ``i`` for every tile count, memoised on the table."""
    key = ("gapped", i, row_bits, union_rows, read_rate, use_rate)
    got = tab.memo.get(key)
    if got is None:
        first = network.index(plan[0][0].name)
        bounds = all_tile_bounds(network, first, first + len(plan) - 1, axis)[i]
        got = tab.memo[key] = gapped_costs(network, plan[i][0], axis, bounds, row_bits,
                                           union_rows, read_rate, use_rate)
    return got


@dataclass(frozen=True)
class _Table:
    """Per tile count ``n`` (index ``n - 1``) and layer position of an interval,
    what :func:`interval_excess_bounds` needs from the tile geometry; no time
    batch, order or signature changes it."""

    active: np.ndarray  # (N, L) non-empty tiles
    finest: np.ndarray  # (N, L) rows of the smallest non-empty tile (most sub-tiles)
    rmax: np.ndarray  # (N, L) rows of the largest tile
    carried: np.ndarray  # (N, L) rows the output carries across tile boundaries
    windows: np.ndarray  # (N, L) rows of all the tile windows of its inputs
    overlap: np.ndarray  # (N, L) largest overlap of a tile window with earlier ones
    rpick: np.ndarray  # (N, L) rows in the tile bounded at the position
    fpick: np.ndarray  # (N, L) fresh input rows in that tile
    live: np.ndarray  # (N, L, L) [n, j, p]: rows of layer j in the tile bounded at p
    steps_at: np.ndarray  # (N, L, 6) rows, input window rows and whether it starts past
    # the first row, of a largest tile and of the tile with the widest input window
    # (0 windows: no windowed input, or a gapped one)
    sub_windows: tuple  # per layer, :func:`_sub_window_floor`'s (least, off_top, overlap)
    memo: dict = field(default_factory=dict, compare=False, hash=False)  # _weight_steps


@lru_cache(maxsize=8192)
def _interval_table(network: Network, first: int, last: int, axis: Axis) -> _Table:
    """The :class:`_Table` of ``first..last`` for every tile count.

    At each position the bounded tile is the one where the line buffers of the
    layers whose output is read in the interval hold the most rows (times
    their row size); the tile with the most rows of the layer itself where
    there are none. Any tile gives a valid bound.
    """
    plan = _interval_plan(network, first, last, axis)
    bounds = all_tile_bounds(network, first, last, axis)  # (L, N, N + 1)
    L, N = bounds.shape[:2]
    big = np.iinfo(np.int64).max
    rows = bounds[..., 1:] - bounds[..., :-1]  # (L, N, N): empty past n
    active = np.count_nonzero(rows, axis=2)
    finest = np.where(rows > 0, rows, big).min(axis=2)
    finest[finest == big] = 1
    carried = np.zeros((L, N), dtype=np.int64)
    windows = np.zeros((L, N), dtype=np.int64)
    overlap = np.zeros((L, N), dtype=np.int64)
    fresh = np.zeros((L, N, N), dtype=np.int64)
    spans = np.zeros((L, N, N), dtype=np.int64)  # input window rows of each tile
    n = np.arange(1, N + 1)[:, None]
    for i, (lay, ins, inner, _, _, made_in) in enumerate(plan):
        b = bounds[i]
        win = np.where(rows[i] > 0, _window_hi(lay, axis, b[:, 1:])
                       - _window_lo(lay, axis, b[:, :-1]), 0)
        over = _overlaps(lay, axis, b)
        if _gapped(lay, axis):
            # Windows with gaps (a kernel narrower than its stride): finer sub-tiles
            # read fewer rows, down to the union of the one-row windows.
            src = lay.inputs[0]
            windows[i] = read_bits(network, src, lay.name, axis) // (
                network.tensor_row_bits(src, axis) * network.timesteps)
        else:
            windows[i] = win.sum(axis=1)
            if ins:
                # Per tile, the input rows no earlier tile's window holds: its
                # sub-tiles read them all from DRAM (none can be kept from before).
                fresh[i] = win - over
            if ins or made_in:
                spans[i] = win
        if ins:
            overlap[i] = over.max(axis=1)
        if inner:
            # Boundaries 1 .. n - 1; those past n are the extent and need nothing.
            need = np.full((N, N - 1), big, dtype=np.int64)
            for cp, cl in inner:
                cb = bounds[cp][:, 1:N]
                need = np.where(cb < cl.extent(axis),
                                np.minimum(need, _window_lo(cl, axis, cb)), need)
            inside = np.arange(1, N)[None, :] < n
            gap = np.where((need < big) & inside, b[:, 1:N] - need, 0)
            carried[i] = np.maximum(0, gap.max(axis=1, initial=0))
    score = np.zeros((N, N, L))  # (n, tile, position)
    for i, (lay, _, inner, _, lastp, _) in enumerate(plan):
        if inner:
            score[:, :, i:lastp + 1] += (rows[i] * lay.output_row_bits(axis))[:, :, None]
    pick = np.where(score.max(axis=1) > 0, np.argmax(score, axis=1),
                    np.argmax(rows, axis=2).T)  # (N, L)
    at_n = np.arange(N)[:, None]
    at_l = np.arange(L)[None, :]
    rpick = rows[at_l, at_n, pick]
    fpick = fresh[at_l, at_n, pick]
    live = rows[:, at_n, pick].transpose(1, 0, 2).astype(np.int32)  # (N, L_j, L_p)
    # The last of the largest tiles (the first may start at the map's first row, whose
    # window the padding clips) and the first of the widest windows.
    big_r = (N - 1 - np.argmax(rows[..., ::-1], axis=2)).T
    big_w = np.argmax(spans, axis=2).T
    starts = bounds[..., :-1]  # (L, N, N)
    steps_at = np.stack([rows[at_l, at_n, big_r], spans[at_l, at_n, big_r],
                         starts[at_l, at_n, big_r] > 0, rows[at_l, at_n, big_w],
                         spans[at_l, at_n, big_w], starts[at_l, at_n, big_w] > 0], axis=2)
    return _Table(active.T, finest.T, rows.max(axis=2).T, carried.T, windows.T, overlap.T,
                  rpick, fpick, live, steps_at,
                  tuple(_sub_window_floor(lay, axis) for lay, *_ in plan))


@lru_cache(maxsize=4096)
def _sub_window_floor(layer, axis: Axis) -> tuple[np.ndarray, np.ndarray, int]:
    """What the input window of one sub-tile holds at least, from the layer's windows.

    Returns ``least[r]``, the fewest input rows the window of any ``r``
    consecutive output rows spans; ``off_top[r]``, the same over the runs that
    do not start at the first output row (``r = 0 .. extent``; past the
    extent, the extent's); and the fewest rows the windows of two adjacent
    output rows share (``window(b - 1, b)`` and ``window(b, b + 1)`` for
    ``0 < b < extent``). Windows only grow with their rows, so ``least`` and
    ``off_top`` grow with ``r``, and ``off_top[r] <= least[r + 1]`` (the last
    ``r`` rows of a run of ``r + 1`` do not start at the first row).
    """
    first, last = _row_window_arrays(layer, axis)
    ext = layer.extent(axis)
    least = np.zeros(ext + 1, dtype=np.int64)
    off_top = np.zeros(ext + 1, dtype=np.int64)
    for r in range(1, ext + 1):
        span = last[r:ext + 1] - first[:ext + 1 - r]  # runs starting at 0 .. ext - r
        least[r] = span.min()
        off_top[r] = span[1:].min() if span.size > 1 else span[0]
    b = np.arange(1, ext)
    shared = int(max(0, (last[b] - first[b]).min())) if ext > 1 else 0
    return least, off_top, shared


def _weight_steps(tab: _Table, i: int, chunk: int, w: int, budget: int, state_row: int,
                  out_row: int, in_row: int, batches: tuple[int, ...]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per time batch of ``batches`` and tile count (index ``n - 1``), the
    fewest sub-tiles per tile the weights of the layer at position ``i`` are
    read in, and the fewest sub-tiles per tile if they are chunked; 0 when
    the layer fits in no choice. Memoised on the table.

    Resident or streamed whole, the weights hold ``w`` bits next to the
    layer's own sub-tile buffers: per row of its output tile its state
    (``state_row``) and output sub-tile (``out_row`` per timestep of the
    batch), and per row of its inputs' sub-tile windows ``in_row`` per
    timestep (inputs from DRAM, or made in the interval and not kept whole);
    at least ``ceil(r / m)`` rows of a tile with ``r`` rows for ``m``
    sub-tiles (at most the finest, one row each), and the input rows of
    :func:`_sub_window_rows`. When that overflows ``budget`` even at the
    finest split, the weights must be streamed in chunks (at least ``chunk``
    bits), and chunked weights are read once per sub-tile: ``m`` is at least
    the fewest sub-tiles that fit beside a chunk (the second array, whether
    or not the weights could be held whole).
    """
    key = (i, chunk, w, budget, state_row, out_row, in_row, batches)
    got = tab.memo.get(key)
    if got is not None:
        return got
    combos = np.array([(b, budget, out_row, in_row) for b in batches], dtype=np.int64)
    tab.memo[key] = got = _weight_steps_of(tab, i, chunk, w, state_row, combos)
    return got


def _weight_steps_rows(tab: _Table, i: int, chunk: int, w: int, state_row: int,
                       rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_weight_steps_of` of the distinct rows ``(tb, budget, out_row, in_row)`` of
    ``rows`` ``(F, 4)``, and which distinct row each row is: ``(steps, fewest, which)``,
    the first two of shape ``(U, tile counts)``. Each distinct row is computed once per
    table (the signatures of an interval's calls share most of them)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    # (Rows as single byte strings: a 1-D unique, much cheaper than np.unique(axis=0).)
    flat = rows.view(np.dtype((np.void, rows.itemsize * rows.shape[1]))).reshape(-1)
    uniq, first, which = np.unique(flat, return_index=True, return_inverse=True)
    memo = tab.memo.setdefault(("weight_steps", i, chunk, w, state_row), {})
    keys = [u.tobytes() for u in uniq]
    missing = [k for k, key in enumerate(keys) if key not in memo]
    if missing:
        steps, fewest = _weight_steps_of(tab, i, chunk, w, state_row, rows[first[missing]])
        for j, k in enumerate(missing):
            memo[keys[k]] = (steps[j], fewest[j])
    got = [memo[key] for key in keys]
    return (np.stack([g[0] for g in got]), np.stack([g[1] for g in got]),
            which.reshape(-1))


def _weight_steps_of(tab: _Table, i: int, chunk: int, w: int, state_row: int,
                     combos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_weight_steps` of every row ``(tb, budget, out_row, in_row)`` of
    ``combos`` (shape ``(U, 4)``): two arrays of shape ``(U, tile counts)``."""
    tbs, budget = combos[:, 0:1], combos[:, 1:2]
    row_bits, input_bits = state_row + combos[:, 2:3] * tbs, combos[:, 3:4] * tbs
    finest = np.broadcast_to(tab.finest[:, i], (len(combos), tab.finest.shape[0]))
    r0, w0, r1, w1 = _sub_tile_rows(tab, i)
    at_n = np.arange(tab.finest.shape[0])[None, :]

    def need(m: np.ndarray) -> np.ndarray:
        """Bits of the sub-tile buffers with ``m`` sub-tiles, per row and tile count."""
        return np.maximum(r0[at_n, m] * row_bits + w0[at_n, m] * input_bits,
                          r1[at_n, m] * row_bits + w1[at_n, m] * input_bits)

    fine = need(finest)
    tight = w + fine > budget
    # The buffers shrink as m grows: bisect for the fewest m that fits beside a chunk.
    lo, hi = np.ones_like(finest), finest.copy()
    while (lo < hi).any():
        mid = (lo + hi) // 2
        ok = chunk + need(mid) <= budget
        hi = np.where(ok & (lo < hi), mid, hi)
        lo = np.where(~ok & (lo < hi), mid + 1, lo)
    chunked = np.where(chunk + fine <= budget, lo, 0)
    steps = np.where(tight, chunked, 1)
    return steps, chunked


def _sub_tile_rows(tab: _Table, i: int) -> tuple[np.ndarray, ...]:
    """Per tile count and sub-tile count ``m`` (``[n - 1, m]``, up to the finest
    split of any tile count), the output rows of the largest sub-tile and the
    input rows of the widest window (:func:`_sub_window_rows`), in the two tiles
    ``steps_at`` names for the layer at position ``i``. Memoised on the table."""
    key = ("sub_tile_rows", i)
    got = tab.memo.get(key)
    if got is None:
        at = tab.steps_at[:, i][:, None, :]  # (N, 1, 6)
        m = np.maximum(np.arange(int(tab.finest[:, i].max()) + 1), 1)[None, :]
        least, off_top, shared = tab.sub_windows[i]
        got = tab.memo[key] = tuple(
            part for k in (0, 3) for part in (
                -(-at[..., k] // m),
                _sub_window_rows(at[..., k], at[..., k + 1], at[..., k + 2], m, least,
                                 off_top, shared)))
    return got


def _sub_window_rows(rows: np.ndarray, span: np.ndarray, inner: np.ndarray, m: np.ndarray,
                     least: np.ndarray, off_top: np.ndarray, shared: int) -> np.ndarray:
    """Fewest input rows the widest sub-tile window of a tile holds: a tile of
    ``rows`` output rows whose window spans ``span`` input rows, in ``m``
    sub-tiles (``m <= rows``; 0 where ``span`` is 0); ``inner``: the tile does
    not start at the map's first row.

    Every sub-tile holds its whole window while it runs (read whole under
    ``reread``; under ``keep`` its new rows beside the rows it shares with
    the window before it, which the sub-tile halo or the tensor's kept halo
    holds). Two bounds on the widest of the ``k = min(m, rows)`` windows:

    * their average: sorted windows add up to their union (the tile's
      window) plus the rows each shares with the next, at least ``shared``
      each, so the widest holds at least ``ceil((span + (k - 1) shared) / k)``;
    * the largest sub-tile: ``ceil(rows / m)`` rows, and its window at least
      ``least`` of that. The split (``floor(j rows / m)``, as
      :func:`stems_opt.cost.geometry.SegmentGeometry.max_sub_rows`) makes the
      first sub-tile one of the smallest, so with two sub-tiles or more a
      largest one starts past the tile's first row, and in an ``inner`` tile
      every one starts past the map's first row: then at least ``off_top``.

    Both shrink as ``m`` grows (``off_top[r] <= least[r + 1] <= least[rows]``
    for ``r < rows``), so the bisection over ``m`` in
    :func:`_weight_steps_of` stays exact.
    """
    k = np.maximum(np.minimum(m, rows), 1)
    avg = -(-(span + (k - 1) * shared) // k)
    size = np.minimum(-(-rows // m), len(least) - 1)  # largest sub-tile
    big = np.where((k >= 2) | (inner > 0), off_top[size], least[size])
    return np.where(span > 0, np.maximum(avg, big), 0)


@lru_cache(maxsize=4096)
def max_chunks(k: int, k_unroll: int) -> int:
    """Most K chunks a streamed weight may take (each at least the array's K unrolling)."""
    return most_chunks(k, k_unroll)
