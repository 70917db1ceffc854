"""The capacity-aware frame bound as it was computed one signature per call, kept as the
oracle of its signature-vectorised form
(:func:`stems_opt.formulation.bounds.signatures_excess_bounds`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from stems_opt.formulation.bounds import (
    _gapped,
    _interval_plan,
    _interval_table,
    _Knapsack,
    _knapsack_rows,
    _weight_steps,
    all_tile_bounds,
    max_chunks,
)
from stems_opt.formulation.row_sum_floor import largest_row_excess, row_floor_excess
from stems_opt.formulation.subtile_floor import (
    gapped_costs,
    subtile_item,
    subtile_weight_excess,
)
from stems_opt.mapping import Order
from stems_opt.network import Axis, Network


def frames_excess_bounds_reference(network: Network, first: int, last: int, axis: Axis,
                         frames: Sequence[tuple[int, Order, int]], budget: int,
                         written: Collection[str], whole: Collection[str],
                         maybe_whole: Collection[str] = (), read_rate: int = 1,
                         write_rate: int = 1, k_unroll: int = 1, weight_use_rate: int = 0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Least cost the buffer forces over the cheapest choices, for the frames
    ``(first, last, tb, axis, n, order)`` of every ``(tb, order, n)`` in
    ``frames``, and each frame's slack (budget less the most a row holds with
    every cheap side). All frames are bounded at once, with arrays.

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

    Returns the bound per frame (``inf`` where the layer at some position
    cannot fit its own transient buffers) and the slack per frame.

    Only one row per layer position is bounded, in the tile where the line
    buffers hold the most (a subset of rows: still a valid bound). The
    cheapest choices themselves (weights read once, ``2 |V|`` state traffic
    under ``streaming``, inputs read once) are not included: see
    :func:`stems_opt.formulation.data.cheapest_bits`.
    Returns the bound per frame (``inf`` where the layer at some position
    cannot fit its own transient buffers) and the slack per frame.

    Only one row per layer position is bounded (see :func:`_interval_table`;
    a subset of rows: still a valid bound). The cheapest choices themselves
    (weights read once, ``2 |V|`` state traffic under ``streaming``, inputs
    read once) are not included: see
    :func:`stems_opt.formulation.data.cheapest_bits`.
    """
    plan = _interval_plan(network, first, last, axis)
    tab = _interval_table(network, first, last, axis)
    T = network.timesteps
    F, L = len(frames), len(plan)
    if not F:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    tb = np.array([f[0] for f in frames], dtype=np.int64)
    outer = np.array([f[1] is Order.SPACE_OUTER for f in frames])
    idx = np.array([f[2] for f in frames], dtype=np.int64) - 1
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
    whole_items: list[int] = []
    operand_extra = np.zeros(F)  # GB operand reads the buffer forces (energy)
    for i, (lay, ins, inner, reads, lastp, made_in) in enumerate(plan):
        name = lay.name
        is_whole, is_written = name in whole, name in written
        w, v = lay.weight_size_bits, lay.state_size_bits
        v_row, out_row = lay.state_row_bits(axis), lay.output_row_bits(axis)
        in_row = sum(rowbits for src, rowbits, _ in ins
                     if src not in whole and src not in maybe_whole)
        own[4, :, i] = np.where(shown[:, i], -(-fpick[:, i] // finest[:, i]), 0) * in_row * tb
        out_row_own = out_row if not is_whole and (inner or is_written) else 0
        own[3, :, i] = sub[:, i] * out_row_own * tb
        if lay.stateful:
            own[1, :, i] = sub[:, i] * v_row
        if lay.has_weights:
            chunk = w // max_chunks(lay.k, k_unroll)
            own[0, :, i] = np.where(shown[:, i], chunk, 0)
            batches, which = np.unique(tb, return_inverse=True)
            steps, fewest = _weight_steps(tab, i, chunk, w, budget,
                                          v_row if lay.stateful else 0, out_row_own,
                                          in_row + sum(rowbits for src, rowbits in made_in
                                                       if src not in whole
                                                       and src not in maybe_whole),
                                          tuple(batches.tolist()))
            steps, fewest = steps[which, idx], fewest[which, idx]
            dead |= steps == 0
            if weight_use_rate and _gapped(lay, axis) and (ins or made_in):
                # (subtile_floor.gapped_costs: the least over at least the fewest sub-tiles)
                src, rowbits, union = ins[0] if ins else (*made_in[0], 0)
                bounds = all_tile_bounds(network, first, last, axis)[i]
                on_gb, from_dram = gapped_costs(network, lay, axis, bounds, rowbits,
                                                union // (rowbits * T), read_rate,
                                                weight_use_rate)
                dram_in = bool(ins) and src not in whole and src not in maybe_whole
                operand_extra += (from_dram if dram_in else on_gb)[idx, np.maximum(fewest, 1)]
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
                whole_items.append(len(excess))
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
            # Spilled adds 2 (S - 1) |V| under both persistences (paid whole).
            whole_items.append(len(excess))
            excess.append(((S - 1) * v * (read_rate + write_rate)).astype(np.float64))
            holds.append(hold)
        for src, rowbits, fewest in ins:
            if src in whole or src in maybe_whole:
                continue
            # From DRAM: keep holds the halo, reread reads each tile's whole window.
            # One rule per tensor: its readers share the rows kept, at least the
            # most any one of them keeps across a tile boundary.
            item = kept.setdefault(src, [np.zeros(F), np.zeros(F), 0])
            item[2] += 1
            item[0] += np.where(several, np.maximum(
                0, tab.windows[idx, i] * rowbits * T - fewest), 0) * read_rate
            item[1] = np.maximum(item[1], tab.overlap[idx, i] * rowbits * mult)
        if not inner or is_whole:
            continue
        e = reads * read_rate + (0 if is_written
                                 else network.tensor_size_bits(name) * write_rate)
        live = np.zeros((F, L))
        live[:, i:lastp + 1] = tab.live[idx, i, i:lastp + 1] * (out_row * tb)[:, None]
        cap = network.tensor_size_bits(name) if name in maybe_whole else np.inf
        hold = np.minimum((tab.carried[idx, i] * out_row * mult)[:, None] + live, cap)
        hold[:, i] = np.maximum(0, hold[:, i] - own[3, :, i])
        excess.append(np.full(F, float(e)))
        holds.append(hold)
    for e, h, readers in kept.values():
        if readers == 1:  # (one reader: one decision, paid whole)
            whole_items.append(len(excess))
        excess.append(e)
        holds.append(np.repeat(h[:, None], L, axis=1))
    if not excess:  # nothing to free: a zero item
        excess, holds = [np.zeros(F)], [np.zeros((F, L))]
    # (items, F * L), frame-major rows; an item's excess is per frame or per row.
    row_budget = budget - own.sum(axis=0).reshape(F * L)
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
    per_row, slack = parts.base + parts.extra + fixed.reshape(F * L), parts.slack
    slack = slack + slack_fix.reshape(F * L)
    # A row whose own transients overflow the budget: the frame cannot fit.
    per_row = np.where(row_budget < 0, np.inf, per_row).reshape(F, L)
    best = per_row.max(axis=1) + operand_extra  # (a cost term no row item counts)
    if weight_use_rate:  # the energy row sums, as the solver adds them
        best = np.maximum(best, operand_extra + row_floor_excess(
            parts.e, parts.h, parts.base + fixed.reshape(F * L),
            parts.h.sum(axis=0) - row_budget, L, _knapsack_rows, whole_items,
            [k + 1 for k, _, _ in weight_items], parts.extra))
    elif whole_items:  # the largest row with the decisions paid whole
        best = np.maximum(best, operand_extra + largest_row_excess(
            parts.e, parts.h, parts.base + fixed.reshape(F * L),
            parts.h.sum(axis=0) - row_budget, L, _knapsack_rows, whole_items, parts.extra))
    best = np.where(dead, np.inf, best)
    # Relative slack against float rounding keeps the bound valid; excess is integral.
    finite = np.isfinite(best)
    bound = np.where(finite, np.maximum(0, np.ceil(np.where(finite, best, 0) * (1 - 1e-9)
                                                    - 1e-6)), np.inf)
    return bound, slack.reshape(F, L).min(axis=1).astype(np.int64)
