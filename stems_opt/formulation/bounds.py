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

from collections.abc import Collection
from functools import lru_cache

import numpy as np

from stems_opt.cost_model import min_read_bits
from stems_opt.mapping import Order
from stems_opt.network import Axis, LayerKind, Network


@lru_cache(maxsize=65536)
def tile_bounds_array(network: Network, first: int, last: int, axis: Axis,
                      tiles: int) -> tuple[np.ndarray, ...]:
    """Row boundaries of every layer of ``first..last`` (an ``(n + 1,)`` array each),
    equal to :func:`stems_opt.cost_model.tile_bounds`, computed with arrays."""
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
    """:func:`stems_opt.cost_model.min_read_bits`, cached (it walks every row)."""
    return min_read_bits(network, tensor, consumer, axis)


def knapsack_excess(excess: np.ndarray, hold: np.ndarray, budget: int) -> tuple[int, int]:
    """Least excess over rows: ``max_r`` of the fractional knapsack of the module.

    ``excess`` has shape ``(items,)``; ``hold`` has shape ``(items, rows)``.
    Returns an integer lower bound (rounded up: the true excess is integral)
    and the slack: the budget less the most any row holds with every cheap side.
    """
    if hold.size == 0:
        return 0, budget
    slack = budget - int(hold.sum(axis=0).max())
    if budget < 0:
        return int(np.ceil(excess.sum())), slack
    hold = hold.astype(np.float64)
    e = excess.astype(np.float64)[:, None] * np.ones_like(hold)
    forced = hold > budget
    base = (e * forced).sum(axis=0)
    h = np.where(forced, 0.0, hold)
    need = h.sum(axis=0) - budget  # capacity still to free per row
    ratio = np.where(h > 0, e / np.where(h > 0, h, 1.0), np.inf)
    order = np.argsort(ratio, axis=0, kind="stable")
    hs = np.take_along_axis(h, order, axis=0)
    es = np.take_along_axis(e, order, axis=0)
    cum_h = np.cumsum(hs, axis=0)
    cum_e = np.cumsum(es, axis=0)
    # The last item dropped is taken fractionally.
    k = (cum_h < need[None, :]).sum(axis=0)
    k = np.minimum(k, hs.shape[0] - 1)
    cols = np.arange(hs.shape[1])
    prev_h = np.where(k > 0, cum_h[np.maximum(k - 1, 0), cols], 0.0)
    prev_e = np.where(k > 0, cum_e[np.maximum(k - 1, 0), cols], 0.0)
    hk, ek = hs[k, cols], es[k, cols]
    frac = np.where(hk > 0, np.clip((need - prev_h) / np.where(hk > 0, hk, 1.0), 0, 1), 0.0)
    extra = np.where(need > 0, prev_e + frac * ek, 0.0)
    # Relative slack against float rounding keeps the bound valid.
    best = float((base + extra).max())
    return max(0, int(np.ceil(best * (1 - 1e-9) - 1e-6))), slack


def frame_excess_bound(network: Network, spec: tuple, budget: int,
                       written: Collection[str], whole: Collection[str],
                       maybe_whole: Collection[str] = ()) -> tuple[int, int]:
    """Least traffic (bits) the buffer forces a frame to add over its cheapest choices,
    and the slack of the cheapest choices (see :func:`knapsack_excess`).

    Parameters
    ----------
    spec
        ``(first, last, Tb, axis, n, order)``.
    budget
        Buffer bits left for the frame (capacity less tensors kept whole
        across segments, including this frame's own outputs kept whole).
    written
        Tensors made in the frame that are written to DRAM anyway (network
        outputs, tensors a later segment reads from DRAM): placing them in DRAM
        inside the frame adds no write.
    whole
        Tensors made in the frame and kept whole: read on chip at no hold
        beyond the budget already taken.
    maybe_whole
        Tensors that may or may not be kept whole (a bound over every
        signature): their cheap side holds the less of the whole tensor and
        the line buffer.

    The cheapest choices themselves (weights read once, ``2 |V|`` state
    traffic under ``streaming``) are not included: see
    :func:`stems_opt.formulation.data.spec_lower_bound`.
    """
    first, last, tb, axis, n, order = spec
    layers = network.layers[first:last + 1]
    L = len(layers)
    pos = {lay.name: i for i, lay in enumerate(layers)}
    bounds = tile_bounds_array(network, first, last, axis, n)
    T = network.timesteps
    S = T // tb
    mult = T if order is Order.SPACE_OUTER else tb
    excess: list[float] = []
    holds: list[np.ndarray] = []
    everywhere = np.ones((n, L), dtype=np.int64)
    for i, lay in enumerate(layers):
        rows = np.diff(bounds[i])
        if lay.has_weights:
            runs = S * int((rows > 0).sum())
            if runs > 1:
                w = lay.weight_size_bits
                excess.append((runs - 1) * w)
                holds.append(everywhere * w)
        if lay.stateful and S > 1:
            v = lay.state_size_bits
            keep = v
            if order is Order.SPACE_OUTER:
                keep = min(v, int(rows.max()) * lay.state_row_bits(axis))
            # Spilled adds 2 (S - 1) |V| under both persistences.
            excess.append(2 * (S - 1) * v)
            holds.append(everywhere * keep)
        name = lay.name
        inner = [c for c in network.consumers(name) if c in pos]
        if not inner or name in whole:
            continue
        rowbits = lay.output_row_bits(axis)
        e = 0 if name in written else network.tensor_size_bits(name)
        e += sum(read_bits(network, name, c, axis) for c in inner)
        b = bounds[i]
        carried = 0
        if n > 1:
            need = np.full(n - 1, np.iinfo(np.int64).max, dtype=np.int64)
            for c in inner:
                cl = network.layer(c)
                cb = bounds[pos[c]][1:n]
                lo = _window_lo(cl, axis, cb)
                need = np.where(cb < cl.extent(axis), np.minimum(need, lo), need)
            gap = np.where(need < np.iinfo(np.int64).max, b[1:n] - need, 0)
            carried = max(0, int(gap.max()))
        h = np.full((n, L), carried * rowbits * mult, dtype=np.int64)
        lastp = max(pos[c] for c in inner)
        h[:, i:lastp + 1] += (rows * rowbits * tb)[:, None]
        if name in maybe_whole:
            h = np.minimum(h, network.tensor_size_bits(name))
        excess.append(e)
        holds.append(h)
    if not excess:
        return 0, budget
    return knapsack_excess(np.asarray(excess, dtype=np.float64),
                           np.stack([h.reshape(-1) for h in holds]), budget)
