"""The least-cycles loop nest of a step (``--objective latency``).

A nest's cycles are ``max(N, ceil(bits through each level / its port
width))`` (:func:`stems_opt.cost.loops.nest_cost`); :func:`fewest_cycles_nest`
finds, exactly, the nest with the fewest cycles and, among those, the least
energy.

Why the energy search's lattice serves here too (``docs/model.md`` 6.2).
Every access term of a nest is the least value, over the points of its chain
in some set, of a function of the point alone; a nest is fixed, term by
term, by one register point ``P`` (of one family) and one point per
buffered operand, all on a common chain; any such points are realised by a
nest whose every term is at most the points' values, and every nest's own
points give its terms. The bits through a level are sums of terms with
non-negative coefficients (the GB: ``P``'s outputs, partial sums, state and
unbuffered register fills, plus every buffer's fills; a buffer: its register
fills, a term of ``P``, plus its own fills), so cycles and energy both grow
with every term, and so does the pair (cycles, energy) in lexicographic
order. Hence, for a fixed ``P`` and a fixed order of the buffer points, the
best point of the last buffer is the one with the fewest fills among those
its predecessor allows (a running minimum over the grid, as in the energy
search), and only the first buffer's point needs enumerating - and not
even that when the buffers sit on opposite sides of ``P`` or there is one:
each then takes its fewest fills on its side. The search scores, as NumPy
arrays, every ``P`` of every family with every order and side of ``P`` of
the buffer points, and where both buffers sit on one side every pair of
``P`` and first buffer point - for the ``P`` whose floor (each buffer at
its fewest fills on that side, which no pair beats) is below the best found
so far. Nothing is pruned but what monotonicity proves no better. Tests
compare it with brute force over every nest (``tests/test_cycles.py``).

Shortcut (lossless): ``N`` and, per level with a port, the least bits
through it over every nest (the energy search with 1 fJ per bit of that
level, nothing elsewhere) over its width bound every nest's cycles
(:func:`cycles_floor`); when the least-energy nest reaches that floor
(always, on hardware without on-chip port widths) it is the answer.

The per-point arrays come from the energy search's own term arrays
(:class:`stems_opt.cost.loops._ChainSearch`), read through hardware views
whose per-bit energies are 0 or 1 so that each view's "energy" counts the
bits through one level.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from stems_opt.cost.loops import (
    BUFFERED,
    INF,
    Nest,
    NestCost,
    NestHardware,
    NoNestError,
    StepShape,
    _above_min,
    _below_min,
    _ChainSearch,
    _Geometry,
    nest_cost,
    optimal_nest,
)

_TABLE: dict[tuple[StepShape, NestHardware], tuple[Nest, NestCost]] = {}
"""The least-cycles nest of every step shape solved in this process."""


def has_ports(hw: NestHardware) -> bool:
    """Whether some on-chip level has a port width (else every nest takes ``N`` cycles)."""
    return bool(hw.gb_bandwidth_bits_per_cycle) or any(
        b is not None and b.bandwidth_bits_per_cycle for b in (hw.weight_buffer, hw.input_buffer))


def fewest_cycles_nest(shape: StepShape, hw: NestHardware) -> tuple[Nest, NestCost]:
    """The nest of ``shape`` with the fewest cycles (stalls included) and, among
    those, the least energy; with its cost. Exact (module docstring); kept per
    (step shape, hardware) for the process.

    Raises
    ------
    NoNestError
        When no nest fits the inner buffers.
    """
    key = (shape, hw)
    got = _TABLE.get(key)
    if got is None:
        nest, _ = optimal_nest(shape, hw)
        cost = nest_cost(nest, shape, hw)
        if cost.cycles > cycles_floor(shape, hw):
            nest = _Search(shape, hw).solve()
            cost = nest_cost(nest, shape, hw)
        got = _TABLE[key] = (nest, cost)
    return got


def cycles_floor(shape: StepShape, hw: NestHardware) -> int:
    """A lower bound on every nest's cycles: ``N``, and per level with a port
    the least bits through it over every nest (the energy search on a view
    charging 1 fJ per bit of that level alone) over its width."""
    floor = _Geometry(shape, hw).total
    levels = (("GB", hw.gb_bandwidth_bits_per_cycle, (1, 0, 0)),
              ("W", hw.weight_buffer and hw.weight_buffer.bandwidth_bits_per_cycle, (0, 1, 0)),
              ("I", hw.input_buffer and hw.input_buffer.bandwidth_bits_per_cycle, (0, 0, 1)))
    for _, bw, rates in levels:
        if bw:
            floor = max(floor, math.ceil(optimal_nest(shape, _view(hw, *rates))[1] / bw))
    return floor


def clear_cycles_table() -> None:
    """Forget every solved least-cycles nest (for benchmarks)."""
    _TABLE.clear()


def _view(hw: NestHardware, gb: int, w: int, i: int) -> NestHardware:
    """``hw`` with every per-bit energy 0 or 1: GB reads and writes ``gb``, the
    weight buffer's ``w``, the input buffer's ``i`` (capacities kept)."""
    def buf(b, r):
        return None if b is None else dataclasses.replace(b, read_fj_per_bit=r,
                                                          write_fj_per_bit=r)
    return dataclasses.replace(hw, gb_read_fj_per_bit=gb, gb_write_fj_per_bit=gb,
                               weight_buffer=buf(hw.weight_buffer, w),
                               input_buffer=buf(hw.input_buffer, i))


class _Search:
    """The exact least-(cycles, energy) nest of one step (module docstring).

    Every candidate is scored as whole arrays: a register point ``P`` with
    its buffer points at their fewest fills (one array over ``P``'s family
    sub-grid per placement), and where two buffer points sit on one side of
    ``P`` (the first one's point free, the second's its fewest fills given the
    first), every pair of ``P`` and first point at once. Those pairs are
    scored only for the ``P`` whose floor - the same score with each buffer's
    fewest fills anywhere on its side of ``P``, which no pair beats, as the
    score grows with every fill - is below the best candidate found: lossless.
    """

    def __init__(self, shape: StepShape, hw: NestHardware):
        self.shape, self.hw = shape, hw
        self.n = _Geometry(shape, hw).total
        self.views = {"E": _ChainSearch([shape], hw),
                      "GB": _ChainSearch([shape], _view(hw, 1, 0, 0)),
                      "W": _ChainSearch([shape], _view(hw, 0, 1, 0)),
                      "I": _ChainSearch([shape], _view(hw, 0, 0, 1))}
        self.ops = [op for op in BUFFERED if hw.buffer(op) is not None
                    and op in self.views["E"].ops]
        self.rate = {op: hw.gb_read_fj_per_bit + hw.buffer(op).write_fj_per_bit  # type: ignore
                     for op in self.ops}
        self.bw = {"GB": hw.gb_bandwidth_bits_per_cycle,
                   **{op: hw.buffer(op).bandwidth_bits_per_cycle for op in self.ops}}  # type: ignore
        self.full = tuple(a for _, _, a in self.views["E"].axes)
        self.best: tuple[int, int] | None = None
        self.best_points: list[tuple[str, tuple[int, ...]]] = []

    def _score(self, g: dict[str, np.ndarray], f_by_op: dict[str, np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray]:
        """Cycles (INF: invalid) and energy of candidates with register terms
        ``g`` (``"E"``: energy, else bits through each level) and buffer fills
        ``f_by_op`` (bits), all broadcast together."""
        zero = np.int64(0)
        bits = {"GB": g["GB"] + sum(f_by_op.values(), zero),
                **{op: g[op] + f_by_op[op] for op in self.ops}}
        shape = np.broadcast_shapes(g["E"].shape, *(b.shape for b in bits.values()))
        cyc = np.full(shape, self.n, dtype=np.int64)
        bad = np.broadcast_to(g["E"] >= INF, shape).copy()
        for level, b in bits.items():
            bad |= b >= INF
            bw = self.bw.get(level)
            if bw:
                cyc = np.maximum(cyc, np.ceil(np.where(b >= INF, 0, b) / bw).astype(np.int64))
        energy = g["E"] + sum((self.rate[op] * np.where(f >= INF, 0, f)
                               for op, f in f_by_op.items()), zero)
        return np.where(bad, INF, cyc), np.where(bad, INF, energy)

    def _least(self, cyc: np.ndarray, energy: np.ndarray) -> tuple[int, int, int] | None:
        """The lexicographically least (cycles, energy) and its flat index."""
        c = int(cyc.min()) if cyc.size else INF
        if c >= INF:
            return None
        masked = np.where(cyc == c, energy, 4 * INF).ravel()
        i = int(np.argmin(masked))
        return c, int(masked[i]), i

    def _offer(self, got: tuple[int, int, int] | None, points_at) -> None:
        """Keep ``got`` if it beats the best; ``points_at(its index)`` gives its chain points."""
        if got is not None and (self.best is None or got[:2] < self.best):
            self.best = got[:2]
            self.best_points = points_at(got[2])

    def solve(self) -> Nest:
        """The nest through the best points found."""
        for t in self.views["E"]._prefixes():
            terms = {k: v._terms(t) for k, v in self.views.items()}
            fills = {op: terms["GB"][1][op][0] for op in self.ops}  # bits per fill point
            for f, (sel, _other, g_e) in enumerate(terms["E"][0]):
                g = {"E": g_e[0], **{k: terms[k][0][f][2][0] for k in ("GB", "W", "I")}}
                self._family(sel[1:], g, fills)
        if self.best is None:
            raise NoNestError(f"no loop nest of {self.shape} fits the inner buffers")
        return self.views["E"]._nest(self.best_points)

    def _lift(self, sub: tuple[slice, ...], idx: tuple[int, ...]) -> tuple[int, ...]:
        """A family sub-grid index as a grid index."""
        return tuple(x if s.stop is None else a for x, s, a in zip(idx, sub, self.full,
                                                                    strict=True))

    def _family(self, sub: tuple[slice, ...], g: dict[str, np.ndarray],
                fills: dict[str, np.ndarray]) -> None:
        """Every placement of the buffer points around every register point of
        one family (sub-grid ``sub`` of the grid)."""
        shp = g["E"].shape
        at = lambda i: tuple(int(x) for x in np.unravel_index(i, shp))  # noqa: E731
        below = {op: _below_min(fills[op][sub][None])[0] for op in self.ops}  # inside sub
        above = {op: _above_min(fills[op][None])[0] for op in self.ops}  # anywhere
        above_sub = {op: above[op][sub] for op in self.ops}
        if not self.ops:
            self._offer(self._least(*self._score(g, {})),
                        lambda i: [("P", self._lift(sub, at(i)))])
            return
        for order in itertools.permutations(self.ops):
            for k in range(len(order) + 1):
                side = {op: below[op] if j < k else above_sub[op] for j, op in enumerate(order)}
                if len(order) == 2 and k != 1:
                    self._pairs(order, k, sub, g, fills, below, above, side)
                else:
                    got = self._least(*self._score(g, side))
                    self._offer(got, lambda i, order=order, k=k: self._single_points(
                        order, k, sub, at(i), fills))

    def _single_points(self, order: tuple[str, ...], k: int, sub: tuple[slice, ...],
                       p: tuple[int, ...], fills: dict[str, np.ndarray]
                       ) -> list[tuple[str, tuple[int, ...]]]:
        """Chain points of register point ``p`` (sub-grid index) with each
        buffer point (at most one per side) at its fewest fills on its side."""
        points = [("P", self._lift(sub, p))]
        for j, op in enumerate(order):
            if j < k:  # below P, inside its sub-grid
                box = fills[op][sub][tuple(slice(x, None) for x in p)]
                off = np.unravel_index(int(np.argmin(box)), box.shape)
                points.insert(0, (op, self._lift(sub, tuple(x + int(o) for x, o
                                                              in zip(p, off, strict=True)))))
            else:  # above P, anywhere
                box = fills[op][tuple(slice(0, x + 1) for x in self._lift(sub, p))]
                points.append((op, tuple(int(x) for x in np.unravel_index(
                    int(np.argmin(box)), box.shape))))
        return points

    def _pairs(self, order: tuple[str, str], k: int, sub: tuple[slice, ...],
               g: dict[str, np.ndarray], fills: dict[str, np.ndarray],
               below: dict[str, np.ndarray], above: dict[str, np.ndarray],
               side: dict[str, np.ndarray]) -> None:
        """Both buffer points on one side of ``P`` (``x`` inside ``y``): every
        register point whose floor (``side``: each buffer's fewest fills on
        that side) beats the best, with every point of the buffer nearer ``P``
        (``k = 0``: ``x`` above ``P`` anywhere, ``y`` at its fewest fills above
        ``x``; ``k = 2``: ``y`` below ``P`` in its sub-grid, ``x`` at its
        fewest fills below ``y``)."""
        x, y = order
        floor_c, floor_e = self._score(g, side)
        c0, e0 = self.best if self.best is not None else (INF, INF)
        keep = (floor_c < c0) | ((floor_c == c0) & (floor_e < e0))
        keep &= floor_c < INF
        if not keep.any():
            return
        p_idx = np.argwhere(keep)
        if k == 0:
            near, far = fills[x], above[y]       # over the grid, by first point z
            p_at = np.array([self._lift(sub, tuple(p)) for p in p_idx], dtype=np.int64)
        else:
            near, far = fills[y][sub], below[x]  # over the sub-grid
            p_at = p_idx
        ok = (near < INF) & (far < INF)
        z_idx = np.argwhere(ok)
        if not len(z_idx):
            return
        f_near, f_far = near[ok], far[ok]
        gp = {key: v[keep] for key, v in g.items()}
        step = max(1, 1_000_000 // (len(z_idx) * len(self.full) + 1))
        for s in range(0, len(p_idx), step):
            pa = p_at[s:s + step]
            fit = np.all(z_idx[None] <= pa[:, None], axis=2) if k == 0 else \
                np.all(z_idx[None] >= pa[:, None], axis=2)
            gs = {key: v[s:s + step, None] for key, v in gp.items()}
            fx, fy = (f_near, f_far) if k == 0 else (f_far, f_near)
            cyc, en = self._score(gs, {x: fx[None], y: fy[None]})
            got = self._least(np.where(fit, cyc, INF), en)
            if got is not None:
                pi, zi = divmod(got[2], len(z_idx))
                p = tuple(int(v) for v in p_idx[s + pi])
                z = tuple(int(v) for v in z_idx[zi])
                self._offer(got, lambda _i, p=p, z=z: self._pair_points(order, k, sub, p, z,
                                                                        fills))

    def _pair_points(self, order: tuple[str, str], k: int, sub: tuple[slice, ...],
                     p: tuple[int, ...], z: tuple[int, ...], fills: dict[str, np.ndarray]
                     ) -> list[tuple[str, tuple[int, ...]]]:
        """Chain points of a pair: register point ``p`` and the nearer buffer's point ``z``."""
        x, y = order
        if k == 0:  # P <= x (at z) <= y
            box = fills[y][tuple(slice(0, v + 1) for v in z)]
            j = tuple(int(v) for v in np.unravel_index(int(np.argmin(box)), box.shape))
            return [("P", self._lift(sub, p)), (x, z), (y, j)]
        box = fills[x][sub][tuple(slice(v, None) for v in z)]  # x <= y (at z) <= P
        off = np.unravel_index(int(np.argmin(box)), box.shape)
        xi = tuple(v + int(w) for v, w in zip(z, off, strict=True))
        return [(x, self._lift(sub, xi)), (y, self._lift(sub, z)), ("P", self._lift(sub, p))]


def step_cycles_floor(shape: StepShape, hw: NestHardware) -> int:
    """``N``: the temporal iterations, a lower bound on every nest's cycles."""
    return _Geometry(shape, hw).total


__all__ = ["clear_cycles_table", "fewest_cycles_nest", "has_ports", "step_cycles_floor"]
