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
the cost model's occupancy terms (transient buffers count as 0) and excesses
lower bounds of its traffic terms, so the result is a valid bound.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import lru_cache

import numpy as np

from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.loops import layer_floor_fj
from stems_opt.cost.traffic import min_read_bits
from stems_opt.hardware import Hardware
from stems_opt.mapping import Order
from stems_opt.network import Axis, LayerKind, Network, most_chunks


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


def knapsack_excess(excess: np.ndarray, hold: np.ndarray, budget: int | np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the fractional knapsack of the module, and the row's slack.

    ``excess`` and ``hold`` have shape ``(items, rows)`` (an item's excess may
    differ between rows of different frames); ``budget`` is a number or one
    per row. Returns, per row, the least
    excess (float, before rounding) and the budget less what the row holds
    with every cheap side that saves something.
    """
    hold = hold.astype(np.float64)
    e = excess.astype(np.float64)
    # Items whose expensive side costs nothing need not hold their cheap side.
    slack = budget - np.where(e > 0, hold, 0.0).sum(axis=0)
    forced = hold > budget
    base = (e * forced).sum(axis=0)
    h = np.where(forced, 0.0, hold)
    need = h.sum(axis=0) - budget  # capacity still to free per row
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
    extra = np.where(need > 0, prev_e + frac * ek, 0.0)
    return base + extra, slack


def _overlaps(layer, axis: Axis, b: np.ndarray) -> np.ndarray:
    """Per tile boundary, the input rows a reader's tile shares with the tiles before
    it (one sub-tile per tile): what ``reread`` reads again and ``keep`` holds."""
    lo, hi = b[:-1], b[1:]
    nonempty = hi > lo
    a = _window_lo(layer, axis, lo)
    e = _window_hi(layer, axis, hi)
    # End of the window of the nearest non-empty tile before (0 if none).
    ends = np.where(nonempty, e, 0)
    prev_end = np.concatenate([[0], np.maximum.accumulate(ends)[:-1]])
    first = np.concatenate([[True], ~np.maximum.accumulate(nonempty)[:-1]])
    return np.where(nonempty & ~first, np.maximum(0, np.minimum(prev_end, e) - a), 0)


@lru_cache(maxsize=4096)
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
        ))
    return tuple(plan)


def _gapped(layer, axis: Axis) -> bool:
    """Whether the layer's one-row windows leave input rows out (kernel < stride)."""
    if layer.kind not in (LayerKind.CONV, LayerKind.POOL):
        return False
    f, st = (layer.fy, layer.stride_y) if axis is Axis.OY else (layer.fx, layer.stride_x)
    return f < st


@lru_cache(maxsize=65536)
def _frame_geometry(network: Network, first: int, last: int, axis: Axis, n: int) -> tuple:
    """Per layer of a frame with ``n`` tiles: its rows per tile, its non-empty
    tiles, the rows its output carries across tile boundaries, and per input
    from outside the rows of all its tile windows and the largest overlap."""
    plan = _interval_plan(network, first, last, axis)
    bounds = tile_bounds_array(network, first, last, axis, n)
    big = np.iinfo(np.int64).max
    out = []
    for i, (lay, ins, inner, _, _) in enumerate(plan):
        b = bounds[i]
        rows = b[1:] - b[:-1]
        if _gapped(lay, axis):
            # Windows with gaps (a kernel narrower than its stride): finer sub-tiles
            # read fewer rows, down to the union of the one-row windows.
            src = lay.inputs[0]
            windows = read_bits(network, src, lay.name, axis) // (
                network.tensor_row_bits(src, axis) * network.timesteps)
        else:
            windows = int(np.where(rows > 0, _window_hi(lay, axis, b[1:])
                                   - _window_lo(lay, axis, b[:-1]), 0).sum())
        halos = [(0, 0)] * len(ins)
        if ins and n > 1:
            halos = [(windows, int(_overlaps(lay, axis, b).max()))] * len(ins)
        carried = 0
        if inner and n > 1:
            need = np.full(n - 1, big, dtype=np.int64)
            for cp, cl in inner:
                cb = bounds[cp][1:n]
                need = np.where(cb < cl.extent(axis),
                                np.minimum(need, _window_lo(cl, axis, cb)), need)
            gap = np.where(need < big, b[1:n] - need, 0)
            carried = max(0, int(gap.max()))
        out.append((rows, int(np.count_nonzero(rows)), carried, halos, windows))
    return tuple(out)


def frame_operand_floor_fj(network: Network, first: int, last: int, axis: Axis, n: int,
                           hw: Hardware) -> int:
    """The least operand energy below DRAM (fJ) of a frame's layers, for any
    sub-tile counts, time batch and weight chunks.

    Conv and linear layers on hardware with ``loop_nests``:
    :func:`stems_opt.cost.loops.layer_floor_fj` (every operand once through
    its levels, the weights once per active tile). Otherwise the accesses of
    :func:`stems_opt.cost.energy.layer_gb_access_bits` with one sub-tile per
    tile (more sub-tiles read the weights and the window overlaps again), or
    for windows with gaps the union of the one-row windows.
    """
    geo = _frame_geometry(network, first, last, axis, n)
    nh = nest_hardware(hw)
    T = network.timesteps
    fj = 0
    for lay, (_, active, _, _, windows) in zip(network.layers[first:last + 1], geo,
                                                strict=True):
        if lay.kind is LayerKind.FLATTEN:
            continue
        if lay.has_weights and hw.loop_nests:
            fj += layer_floor_fj(lay, active, T, nh)
            continue
        reads = lay.weight_size_bits * T * active + lay.state_size_bits * T
        reads += sum(windows * network.tensor_row_bits(src, axis) * T
                     for src in dict.fromkeys(lay.inputs))
        writes = lay.output_size_bits(T) + lay.state_size_bits * T
        fj += reads * nh.gb_read_fj_per_bit + writes * nh.gb_write_fj_per_bit
    return fj


def interval_excess_bounds(network: Network, first: int, last: int, tb: int, axis: Axis,
                           order: Order, tiles: Sequence[int], budget: int,
                           written: Collection[str], whole: Collection[str],
                           maybe_whole: Collection[str] = (), read_rate: int = 1,
                           write_rate: int = 1, k_unroll: int = 1
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Least cost the buffer forces over the cheapest choices, for the
    frames ``(first, last, tb, axis, n, order)`` of every ``n`` in ``tiles``,
    and each frame's slack (budget less the most a row holds with every cheap
    side).

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

    Returns the bound per frame (``inf`` where the layer at some position
    cannot fit its own transient buffers) and the slack per frame.

    Only one row per layer position is bounded, in the tile where the line
    buffers hold the most (a subset of rows: still a valid bound). The
    cheapest choices themselves (weights read once, ``2 |V|`` state traffic
    under ``streaming``, inputs read once) are not included: see
    :func:`stems_opt.formulation.data.cheapest_bits`.
    """
    plan = _interval_plan(network, first, last, axis)
    L = len(plan)
    T = network.timesteps
    S = T // tb
    mult = T if order is Order.SPACE_OUTER else tb
    big = np.iinfo(np.int64).max
    blocks: list[tuple[np.ndarray, np.ndarray]] = []
    floors: list[np.ndarray] = []
    width = 0
    at = np.arange(L)
    # Per layer, what no tile count changes (properties are slow to ask in the loop).
    fixed = [(lay.has_weights, lay.stateful, lay.weight_size_bits, lay.state_size_bits,
              lay.state_row_bits(axis), lay.output_row_bits(axis),
              lay.weight_size_bits // max_chunks(lay.k, k_unroll) if lay.has_weights else 0,
              lay.name in whole, lay.name in written)
             for lay, *_ in plan]
    for n in tiles:
        geo = _frame_geometry(network, first, last, axis, n)
        items: list[tuple[float, float, int, int]] = []  # excess, hold, position, kind
        lines: list[tuple[float, float, np.ndarray, float, int]] = []
        kept: dict[str, list[float]] = {}  # tensor -> [excess, hold, first reader]
        for i, (lay, ins, inner, reads, lastp) in enumerate(plan):
            rows, active, carried, halos, _ = geo[i]
            has_w, stateful, w, v, v_row, out_row, _, is_whole, is_written = fixed[i]
            if has_w:
                items.append(((S * active - 1) * w * read_rate, w, i, 0))
            if stateful and S > 1:
                keep = min(v, int(rows.max()) * v_row) if order is Order.SPACE_OUTER else v
                # Spilled adds 2 (S - 1) |V| under both persistences.
                items.append(((S - 1) * v * (read_rate + write_rate), keep, i, 1))
            for (src, rowbits, fewest), (window_rows, overlap) in zip(ins, halos, strict=True):
                if n == 1 or src in whole or src in maybe_whole:
                    continue
                # From DRAM: keep holds the halo, reread reads each tile's whole window.
                # One rule per tensor: its readers share the rows kept, at least the
                # most any one of them keeps across a tile boundary.
                item = kept.setdefault(src, [0.0, 0.0, i])
                item[0] += max(0, window_rows * rowbits * T - fewest) * read_rate
                item[1] = max(item[1], overlap * rowbits * mult)
            if not inner or is_whole:
                continue
            e = reads * read_rate + (0 if is_written
                                     else network.tensor_size_bits(lay.name) * write_rate)
            live = np.zeros((n, L), dtype=np.int64)
            live[:, i:lastp + 1] = (rows * (out_row * tb))[:, None]
            cap = network.tensor_size_bits(lay.name) if lay.name in maybe_whole else big
            lines.append((e, carried * out_row * mult, live, cap, i))
        items.extend((e, h, int(i), 2) for e, h, i in kept.values())
        # One row per position: the tile where the line buffers hold the most.
        if lines:
            held = np.stack([np.minimum(c + live, cap) for _, c, live, cap, _ in lines])
            pick = np.argmax(held.sum(axis=0), axis=0)
        else:
            held, pick = None, np.zeros(L, dtype=np.int64)
        # What the layer at each position needs whatever it chose: a weight chunk, a
        # state sub-tile, an output sub-tile; each cheap side holds at least as much.
        own = np.zeros((4, L))  # weights, state, (halos: none), outputs
        for i, (_, _, inner, _, _) in enumerate(plan):
            rows = geo[i][0]
            r = int(rows[pick[i]])
            if r == 0:
                continue
            sub = -(-r // int(rows[rows > 0].min()))
            has_w, stateful, _, _, v_row, out_row, chunk, is_whole, is_written = fixed[i]
            if has_w:
                own[0, i] = chunk
            if stateful:
                own[1, i] = sub * v_row
            if not is_whole and (inner or is_written):
                own[3, i] = sub * out_row * tb
        floor = own.sum(axis=0)
        k, m = len(items), len(lines)
        e_col = np.empty(k + m)
        h = np.empty((k + m, L))
        if k:
            arr = np.array(items, dtype=np.float64)
            pos, kind = arr[:, 2].astype(np.int64), arr[:, 3].astype(np.int64)
            e_col[:k] = arr[:, 0]
            h[:k] = arr[:, 1:2]
            h[np.arange(k), pos] = np.maximum(0.0, arr[:, 1] - own[kind, pos])
        if m:
            assert held is not None
            lpos = np.array([ln[4] for ln in lines], dtype=np.int64)
            e_col[k:] = [ln[0] for ln in lines]
            h[k:] = held[:, pick, at]
            h[k + np.arange(m), lpos] = np.maximum(0.0, h[k + np.arange(m), lpos] - own[3, lpos])
        blocks.append((e_col, h))
        floors.append(floor)
        width = max(width, k + m)
    # Frames with fewer items get zero items (dropping them is free and frees nothing).
    E = np.zeros((max(width, 1), L * len(tiles)))
    H = np.zeros((max(width, 1), L * len(tiles)))
    for j, (e_col, h) in enumerate(blocks):
        E[:len(e_col), j * L:(j + 1) * L] = e_col[:, None]
        H[:len(e_col), j * L:(j + 1) * L] = h
    row_budget = budget - np.concatenate(floors)
    per_row, slack = knapsack_excess(E, H, row_budget)
    # A row whose own transients overflow the budget: the frame cannot fit.
    per_row = np.where(row_budget < 0, np.inf, per_row)
    starts = np.arange(0, L * len(tiles), L)
    best = np.maximum.reduceat(per_row, starts)
    # Relative slack against float rounding keeps the bound valid; excess is integral.
    finite = np.isfinite(best)
    bound = np.where(finite, np.maximum(0, np.ceil(np.where(finite, best, 0) * (1 - 1e-9)
                                                    - 1e-6)), np.inf)
    return bound, np.minimum.reduceat(slack, starts).astype(np.int64)


@lru_cache(maxsize=4096)
def max_chunks(k: int, k_unroll: int) -> int:
    """Most K chunks a streamed weight may take (each at least the array's K unrolling)."""
    return most_chunks(k, k_unroll)
