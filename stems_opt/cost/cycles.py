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
search), and only the first buffer's point needs enumerating. The search
enumerates every ``P`` of every family, every order and side of ``P`` of
the buffer points, and every point of the first buffer: nothing is pruned
but what monotonicity proves no better. Tests compare it with brute force
over every nest (``tests/test_cycles.py``).

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
    """The exact least-(cycles, energy) nest of one step (module docstring)."""

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
        self.best: tuple[int, int] | None = None
        self.best_points: list[tuple[str, tuple[int, ...]]] = []

    def _cycles(self, level_bits: dict[str, np.ndarray]) -> np.ndarray:
        """Cycles of candidates from the bits through each level (INF: invalid)."""
        out = np.full(np.broadcast_shapes(*(b.shape for b in level_bits.values())), self.n,
                      dtype=np.int64)
        bad = np.zeros(out.shape, dtype=bool)
        for level, bits in level_bits.items():
            bits = np.broadcast_to(bits, out.shape)
            bad |= bits >= INF
            bw = self.bw.get(level)
            if bw:
                out = np.maximum(out, np.ceil(np.where(bits >= INF, 0, bits) / bw)
                                 .astype(np.int64))
        return np.where(bad, INF, out)

    def _offer(self, cyc: np.ndarray, energy: np.ndarray, points_at) -> None:
        """Keep the lexicographically least (cycles, energy) candidate of arrays
        ``cyc``, ``energy``; ``points_at(index)`` gives its chain points."""
        c = int(cyc.min())
        if c >= INF:
            return
        e = int(np.where(cyc == c, energy, 4 * INF).min())
        if self.best is None or (c, e) < self.best:
            self.best = (c, e)
            idx = np.unravel_index(int(np.argmin(np.where(cyc == c, energy, 4 * INF))),
                                   cyc.shape)
            self.best_points = points_at(tuple(int(x) for x in idx))

    def solve(self) -> Nest:
        """The nest through the best points found."""
        base = self.views["E"]
        for t in base._prefixes():
            terms = {k: v._terms(t) for k, v in self.views.items()}
            fills = {op: terms["GB"][1][op] for op in self.ops}  # bits per fill point
            for f, (sel, _other, g_e) in enumerate(terms["E"][0]):
                g = {k: terms[k][0][f][2][0] for k in ("GB", "W", "I")}
                for p in zip(*np.nonzero(g_e[0] < INF), strict=True):
                    self._register_point(sel, tuple(int(x) for x in p), int(g_e[0][p]),
                                         {k: int(v[p]) for k, v in g.items()}, fills)
        if self.best is None:
            raise NoNestError(f"no loop nest of {self.shape} fits the inner buffers")
        return self.views["E"]._nest(self.best_points)

    def _register_point(self, sel: tuple[slice, ...], p: tuple[int, ...], e_p: int,
                        g: dict[str, int], fills: dict[str, np.ndarray]) -> None:
        """Every placement of the buffer points around register point ``p`` (an
        index of the family's sub-grid ``sel``)."""
        full = tuple(a for _, _, a in self.views["E"].axes)
        sub = sel[1:]
        p_full = tuple(x if s.stop is None else a for x, s, a in zip(p, sub, full, strict=True))

        def lift(idx: tuple[int, ...]) -> tuple[int, ...]:  # sub-grid index -> grid index
            return tuple(x if s.stop is None else a for x, s, a in zip(idx, sub, full,
                                                                         strict=True))

        below_box = tuple(slice(x, None) for x in p)          # inside the sub-grid, below p
        above_box = tuple(slice(0, x + 1) for x in p_full)     # anywhere above p
        level_g = {"GB": g["GB"], **{op: g[op] for op in self.ops}}

        def score(f_by_op: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            bits = {"GB": level_g["GB"] + sum(f_by_op.values(), np.int64(0))}
            for op in self.ops:
                bits[op] = level_g[op] + f_by_op[op]
            energy = e_p + sum((self.rate[op] * np.where(f_by_op[op] >= INF, 0, f_by_op[op])
                                for op in self.ops), np.int64(0))
            return self._cycles(bits), energy

        if not self.ops:
            cyc, en = score({})
            self._offer(np.asarray(cyc).reshape(1), np.asarray(en).reshape(1),
                        lambda _i: [("P", p_full)])
            return
        for order in itertools.permutations(self.ops):
            for k in range(len(order) + 1):
                self._placement(order, k, fills, sel, below_box, above_box, p_full, lift, score)

    def _placement(self, order, k, fills, sel, below_box, above_box, p_full, lift,
                   score) -> None:
        """Buffer points ``order`` (innermost first), the first ``k`` below ``P``."""
        if len(order) == 1:
            op = order[0]
            if k:
                arr = fills[op][sel][0][below_box]
                at = lambda i: [(op, lift(tuple(a.start + x for a, x in zip(below_box, i,  # noqa: E731
                                                                            strict=True)))),
                                ("P", p_full)]
            else:
                arr = fills[op][0][above_box]
                at = lambda i: [("P", p_full), (op, i)]  # noqa: E731
            cyc, en = score({op: arr})
            self._offer(cyc, en, at)
            return
        x, y = order  # x inside y
        if k == 1:  # x below P, y above: independent, each its fewest fills
            bx = fills[x][sel][0][below_box]
            by = fills[y][0][above_box]
            ix = np.unravel_index(int(np.argmin(bx)), bx.shape)
            iy = np.unravel_index(int(np.argmin(by)), by.shape)
            fx, fy = np.int64(bx[ix]), np.int64(by[iy])
            cyc, en = score({x: np.asarray(fx).reshape(1), y: np.asarray(fy).reshape(1)})
            px = lift(tuple(a.start + int(v) for a, v in zip(below_box, ix, strict=True)))
            self._offer(cyc, en, lambda _i: [(x, px), ("P", p_full),
                                             (y, tuple(int(v) for v in iy))])
        elif k == 0:  # P <= x <= y: per x above P, the fewest fills of y above x
            up_y = _above_min(fills[y])[0]
            bx = fills[x][0][above_box]
            cyc, en = score({x: bx, y: up_y[above_box]})

            def at(i: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
                hy = fills[y][0][tuple(slice(0, v + 1) for v in i)]
                j = tuple(int(v) for v in np.unravel_index(int(np.argmin(hy)), hy.shape))
                return [("P", p_full), (x, i), (y, j)]
            self._offer(cyc, en, at)
        else:  # x <= y <= P, both in P's sub-grid: per y, the fewest fills of x below it
            sub_x = fills[x][sel][0]
            down_x = _below_min(fills[x][sel])[0]
            by = fills[y][sel][0][below_box]
            cyc, en = score({x: down_x[below_box], y: by})

            def at(i: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
                yi = tuple(a.start + v for a, v in zip(below_box, i, strict=True))
                hx = sub_x[tuple(slice(v, None) for v in yi)]
                j = np.unravel_index(int(np.argmin(hx)), hx.shape)
                xi = tuple(v + int(w) for v, w in zip(yi, j, strict=True))
                return [(x, lift(xi)), (y, lift(yi)), ("P", p_full)]
            self._offer(cyc, en, at)


def step_cycles_floor(shape: StepShape, hw: NestHardware) -> int:
    """``N``: the temporal iterations, a lower bound on every nest's cycles."""
    return _Geometry(shape, hw).total


__all__ = ["clear_cycles_table", "fewest_cycles_nest", "has_ports", "step_cycles_floor"]
