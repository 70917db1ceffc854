"""Chunked weights and their sub-tiles as one choice in the item cover
(``stems_opt/formulation/subtile_cover.py``).

The program claims that a mapping chunking a layer's weights in ``m`` sub-tiles
pays ``(runs m - 1) |W|`` and holds, beside the chunk, its largest sub-tile's
state and output rows and its input windows, of the buffers whose tensors go
through DRAM. Checked by hand on small item sets, against the exact local MIPs
of every frame of every column of random tiny networks (every frame raised) and
the brute-force optimum, and on a SEW-ResNet-152 frame whose bound it makes exact.

Mutations that make these tests fail:

* the program's bound inflated by 1 bit (``forced_cost + 1 + _program(...)`` at
  the end of ``frame_bound``): every test (the random one with a frame at 37 over
  its optimum 36);
* the links dropped (``links = ()`` at the start of ``subtile_choices``):
  ``test_sew_resnet152_frame_is_exact`` (19,353,600 -> 18,550,784);
* the chunked choice paying its resident partner's cost again when the partner is
  forced (``cover.cost[res]``, 0 for a forced item, for ``e[res].max()`` in
  ``frame_bound``): ``test_chunked_reads_counted_once_beside_a_forced_resident_item``
  (1,008) and the random frames;
* a linked buffer held whatever its item chooses (``if True:`` for
  ``if is_forced[other]:`` in ``frame_bound``, the output's rows counted even on
  chip): ``test_output_through_dram_holds_the_sub_tile`` (0 -> 7);
* energy's one-more-sub-tile item kept beside the choices (``drop = None`` in
  ``frame_bound``): ``test_energy_choices_price_the_sub_tiles_whole_or_chunked``
  (6 -> 9) and ``test_energy_frames_below_their_optimum`` (a frame at 2,420,340 fJ
  over its optimum 2,419,300);
* that item's cost counted again when it is forced (no ``forced_cost -=`` for it):
  ``test_forced_sub_tile_item_rules_out_the_fewest`` (40 -> 43);
* one GB weight read more per sub-tile count (``m + 1 - fewest`` in
  ``subtile_choices``): ``test_energy_frames_below_their_optimum`` (2,420,340 fJ
  over 2,419,300);
* one new row more in the DRAM inputs' floor (``1 + ceil(new / m)`` in
  ``subtile_choices``): ``test_energy_frames_below_their_optimum`` (a frame bounded
  ``inf``, its optimum 6,815,600 fJ).
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stems_opt.formulation.bounds as bounds_mod
from stems_opt.formulation import subtile_cover
from stems_opt.formulation.item_cover import cover_bound, frame_cover, raise_frames, raise_least
from stems_opt.formulation.subtile_cover import frame_bound, raise_least_subtiles
from stems_opt.io import network_from_dict
from stems_opt.problem import Objective

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bounds import check_bounds, solver_for
from test_item_cover import check_covered_master, sew152_block_column
from test_optimizer import RANDOM_SETTINGS, make_problem, tiny_networks

# One layer's weights: item 0 resident on row 0 (8 bits, not resident costs 0: one
# run), item 1 whole at its own row 1 (6 bits), item 2 its output on chip (5 bits at
# row 1; through DRAM costs 7). Chunked in m = 1, 2, 3 sub-tiles the weights cost
# (m - 1) * 10 and the largest sub-tile holds 4, 1, 0 more state bits than the finest
# split, and 3, 1, 0 more output bits when the output goes through DRAM.
E = np.array([[0.0, 0.0], [0.0, 0.0], [7.0, 7.0]])
H = np.array([[8.0, 0.0], [0.0, 6.0], [0.0, 5.0]])
CHOICES = [(1, 1, np.array([0.0, 10.0, 20.0]), np.array([4.0, 1.0, 0.0]),
            [(2, np.array([3.0, 1.0, 0.0]))])]


def test_output_through_dram_holds_the_sub_tile() -> None:
    # Row 1 has 4 bits of room and holds 6 + 5: 7 to free. The item cover: the weights
    # chunked (free, frees 6) and the output through DRAM (7, frees 5): 7. With the
    # sub-tiles: m = 1 frees 6 - 4 = 2 and, with the output through DRAM, holds 3 more
    # output bits: 5 + 2 - 3 = 4 < 7; m = 2 frees 5, with the output 5 + 5 - 1 = 9 >= 7
    # at 10 + 7 = 17; m = 3 alone frees 6 < 7, with the output 11 at 27. So 17.
    none = np.zeros((3, 2), dtype=bool)
    budget = np.array([100.0, 4.0])
    assert cover_bound(frame_cover(E, H, none, budget, ((0, 1),))) == 7
    assert frame_bound(E, H, none, budget, ((0, 1),), CHOICES) == 17
    # With 9 bits of room only 2 are to free: m = 1 frees them at no cost.
    assert frame_bound(E, H, none, np.array([100.0, 9.0]), ((0, 1),), CHOICES) == 0


def test_weights_that_cannot_be_whole_pick_a_sub_tile_count() -> None:
    # Row 1 has 5 bits of room: the 6 whole-weight bits overflow it alone, so the
    # weights are chunked (forced, their hold dropped) and row 1 holds the output's 5:
    # nothing to free beyond one choice of m. m = 1 holds 4 more bits (-4, with the
    # output through DRAM 5 - 4 - 3 = -2): does not fit; m = 2 holds 1 more (-1; with
    # the output through DRAM 5 - 1 - 1 = 3 >= 0) at 10 + 7 = 17; m = 3 holds none at
    # 20. So 17, where the item cover charges the fewest sub-tiles' reads alone: 0.
    forced = np.array([[False, False], [True, True], [False, False]])
    h = np.where(forced, 0.0, H)
    budget = np.array([100.0, 5.0])
    assert cover_bound(frame_cover(E, h, forced, budget, ((0, 1),))) == 0
    assert frame_bound(E, h, forced, budget, ((0, 1),), CHOICES) == 17
    # No sub-tile count at all: no mapping of the frame.
    no_m = [(1, 1, np.full(3, np.inf), np.zeros(3), [])]
    assert frame_bound(E, h, forced, budget, ((0, 1),), no_m) == np.inf


def test_chunked_reads_counted_once_beside_a_forced_resident_item() -> None:
    # A layer whose weights (72 bits) cannot be resident at row 0 (36 bits of room):
    # not resident is forced there and costs its reads, (2 * 4 - 1) * 72 = 504. At its
    # own row 1 (no room) it must free its 36 whole-weight bits: chunked in one
    # sub-tile, the same 504 reads, which the chunked choice pays over the resident
    # item's cost (0 more): 504 in all, as the item cover says (a random network's
    # frame, optimum 1,192 bits over a 556-bit cheap bound, went to 1,444 when the
    # forced partner's cost was not subtracted).
    e = np.array([[504.0, 0.0], [0.0, 504.0]])
    forced = np.array([[True, True], [False, False]])
    h = np.array([[0.0, 0.0], [0.0, 36.0]])
    budget = np.array([36.0, 0.0])
    assert cover_bound(frame_cover(e, h, forced, budget, ((0, 1),))) == 504
    choices = [(1, 1, np.array([504.0]), np.array([0.0]), [])]
    assert frame_bound(e, h, forced, budget, ((0, 1),), choices) == 504


# Energy: the same layer with its weights read in two runs (chunked in m sub-tiles:
# (2 m - 1) * 10 DRAM bits, 10 for the resident item's single extra run), each sub-tile
# past the fewest one more GB weight read of 3, and its one-more-sub-tile item (item 3:
# one sub-tile holds 4 state bits more than the finest split, a sub-tile more costs 3).
E_ENERGY = np.array([[10.0, 0.0], [0.0, 10.0], [7.0, 7.0], [0.0, 3.0]])
H_ENERGY = np.array([[8.0, 0.0], [0.0, 6.0], [0.0, 5.0], [0.0, 4.0]])
CHOICES_ENERGY = [(1, 1, np.array([10.0, 33.0, 56.0]), np.array([4.0, 1.0, 0.0]),
                   [(2, np.array([3.0, 1.0, 0.0]))], np.array([0.0, 3.0, 6.0]), 3)]


def test_energy_choices_price_the_sub_tiles_whole_or_chunked() -> None:
    # Row 1, 11 bits of room, holds 6 + 5 (the sub-tile item's 4 left to the choices):
    # nothing to free, but the weights held whole in m sub-tiles hold 4, 1, 0 more bits:
    # m = 3 at 2 more GB reads, 6; m = 2 with the output through DRAM (-1 + 5 - 1 = 3)
    # at 3 + 7; chunked in one sub-tile (frees 6 - 4) at the resident item's 10. So 6,
    # where the item cover frees the sub-tile item's 4 bits at 3 (one more read).
    none = np.zeros((4, 2), dtype=bool)
    pairs = ((0, 1),)
    assert cover_bound(frame_cover(E_ENERGY, H_ENERGY, none, np.array([100.0, 11.0]),
                                   pairs)) == 3
    assert frame_bound(E_ENERGY, H_ENERGY, none, np.array([100.0, 11.0]), pairs,
                       CHOICES_ENERGY) == 6
    # 9 bits of room, 2 to free: chunked in one sub-tile frees 6 - 4 = 2 at 10 (the
    # mapping: the chunk, the output on chip and one sub-tile's 4 more state bits fill
    # the 9); whole in 2 sub-tiles needs the output through DRAM, 3 + 7. So 10. Kept
    # beside the choices, the sub-tile item would hold those 4 bits a second time and
    # charge 13 (and 9 at 11 bits: mutation ``drop = None`` in ``frame_bound``).
    assert frame_bound(E_ENERGY, H_ENERGY, none, np.array([100.0, 9.0]), pairs,
                       CHOICES_ENERGY) == 10


def test_forced_sub_tile_item_rules_out_the_fewest() -> None:
    # 3 bits of room at row 1: the sub-tile item's 4 bits overflow it alone (forced,
    # its 3 in the forced cost), so m >= 2, and 6 + 5 - 3 = 8 bits to free. Whole in 2
    # or 3 sub-tiles frees at most 5 with the output through DRAM; chunked in 2 frees
    # 5 + 5 - 1 = 9 with it: 23 over the resident item's 10, and 7: 40, the 33 DRAM and
    # GB bits of m = 2 and the output's 7 (mutation: the forced item's 3 counted again
    # beside the choices, 43).
    forced = np.array([[False, False], [False, False], [False, False], [True, True]])
    h = np.where(forced, 0.0, H_ENERGY)
    assert frame_bound(E_ENERGY, h, forced, np.array([100.0, 3.0]), ((0, 1),),
                       CHOICES_ENERGY) == 40


def every_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """Raise every frame, not only each signature's least ones."""
    monkeypatch.setattr(bounds_mod, "raise_least_subtiles",
                        partial(raise_least_subtiles, every=True))


@settings(**{**RANDOM_SETTINGS, "max_examples": 12})
@given(st.data())
def test_random_frames_below_their_optimum(data: st.DataObject) -> None:
    """Every frame bound of every column, each raised by the program, is at most the
    frame's exact local optimum; and the master's bound with every column covered is
    at most the brute-force optimum."""
    with pytest.MonkeyPatch.context() as mp:
        every_frame(mp)
        network = network_from_dict(data.draw(tiny_networks(), label="network"))
        size = data.draw(st.integers(40, 1200), label="GB bits")
        p = make_problem(network, size, data.draw(st.sampled_from([1, 4])), Objective.TRAFFIC)
        check_bounds(p)
        check_covered_master(p)


def test_sew_resnet152_frame_is_exact() -> None:
    """SEW-ResNet-152 at 256 KB, layers 52..57 (``s3_b0_add`` .. ``s3_b2_conv1``), every
    tensor through DRAM at the boundaries, the one-tile frame at Tb 4: the item cover
    alone bounds it at 18,395,136 bits (``tests/test_item_cover.py``), where its local
    optimum is 19,353,600. With the sub-tile choices the bound is that optimum."""
    cs, col = sew152_block_column()
    assert cs.tighten(col, cover=True)
    extra = cs._extra(52, 57, col.sig)
    spec = min(col.frame_bounds, key=col.frame_bounds.get)
    assert spec[2] == 4 and spec[4] == 1  # (Tb 4, one tile)
    value, proven, _ = cs._local(*cs._restrict(cs._frame(spec), col.sig), 120.0)
    assert value == proven == 19_353_600
    assert col.frame_bounds[spec] + extra == value


# A network on which the sub-tile choices, used with the energy objective, bound frames
# above their optimum at a 236-bit buffer: ``l0..l1`` at Tb 2 along OY, 3,162,820 fJ
# against an exact 3,154,500; ``l1`` alone at Tb 1 with ``l0`` whole, 2,620,800 against
# 2,602,080 (energy's own one-more-sub-tile item already counts GB weight reads there).
ENERGY_COUNTER_EXAMPLE = {
    "name": "random", "timesteps": 2, "state_persistence": "streaming",
    "input": {"channels": 1, "height": 4, "width": 5, "bits": 1},
    "layers": [
        {"name": "l0", "type": "conv", "inputs": ["input"],
         "loop_dims": {"K": 1, "FY": 1, "FX": 1}, "neuron": "none"},
        {"name": "l1", "type": "conv", "inputs": ["l0"],
         "loop_dims": {"K": 2, "FY": 3, "FX": 3}, "neuron": "stateless"},
        {"name": "l2", "type": "conv", "inputs": ["l1"],
         "loop_dims": {"K": 1, "FY": 1, "FX": 1}, "neuron": "lif"}]}


def test_energy_frames_below_their_optimum(monkeypatch) -> None:
    """With energy (no loop nests) every covered frame of :data:`ENERGY_COUNTER_EXAMPLE`
    at a 236-bit buffer stays at or below its local optimum, the sub-tile choices
    paying their GB weight reads and replacing the one-more-sub-tile item. Mutation:
    that item kept beside the choices (``drop = None`` in ``frame_bound``): both hold
    the larger sub-tile's buffers (and pay its reads), and ``l0`` alone (Tb 2 along
    OY, one tile) is bounded at 2,420,340 > 2,419,300 fJ, its optimum. (The choices
    without GB reads beside that item, as first tried, bounded ``l0..l1`` at 3,162,820
    against 3,154,500.)"""
    every_frame(monkeypatch)
    monkeypatch.setattr(bounds_mod, "raise_least", partial(raise_least, every=True))
    p = make_problem(network_from_dict(ENERGY_COUNTER_EXAMPLE), 236, 1, Objective.ENERGY)
    assert check_bounds(p) > 0


def test_energy_choices_raise_the_counter_example() -> None:
    """The choices raise that network's frames where the item cover left them low:
    ``l0..l2`` along OX, Tb 2, one tile, from 10,275,780 fJ (the item cover alone) to
    11,094,780, its optimum 11,111,420 (measured; checked against the local MIP)."""
    from stems_opt.formulation import column_bounds

    p = make_problem(network_from_dict(ENERGY_COUNTER_EXAMPLE), 236, 1, Objective.ENERGY)
    got = {}
    for on in (False, True):
        with pytest.MonkeyPatch.context() as mp:
            every_frame(mp)
            mp.setattr(bounds_mod, "raise_least", partial(raise_least, every=True))
            mp.setattr(column_bounds, "SUBTILE_ENERGY", on)
            cs = solver_for(p)
            col = next(c for c in cs.columns if (c.first, c.last) == (0, 2))
            cs.tighten(col, cover=True)
            spec = next(s for s in col.frame_bounds if s[2] == 2 and s[3].value == "OX"
                        and s[4] == 1)
            got[on] = col.frame_bounds[spec] + cs._extra(0, 2, col.sig)
    value, proven, _ = cs._local(*cs._restrict(cs._frame(spec), col.sig), 60.0)
    assert (got[False], got[True], value, proven) == (10_275_780, 11_094_780, 11_111_420,
                                                      11_111_420)


def test_relaxation_of_one_item_is_half_of_it() -> None:
    # One item holding 4 bits where 2 are to be freed, its expensive side 10: the
    # program takes it whole (10), its LP relaxation half of it (5), lowered by the
    # margin against HiGHS's tolerances: 5 (1 - 1e-6) - 1.
    e, h = np.array([[10.0]]), np.array([[4.0]])
    none = np.zeros((1, 1), dtype=bool)
    assert frame_bound(e, h, none, np.array([2.0]), (), []) == 10
    lp = frame_bound(e, h, none, np.array([2.0]), (), [], relaxed=True)
    assert lp == pytest.approx(5 * (1 - subtile_cover.LP_MARGIN) - 1, abs=1e-9)


@st.composite
def cover_programs(draw: st.DrawFn) -> tuple:
    """A random frame of :func:`frame_bound`: items 0 and 1 a layer's weights (resident
    on row 0, whole at its own row), 2..n-1 other items on random rows, the own-row item
    replaced by ``M`` sub-tile choices with random costs (some ruled out), freed bits,
    links to the other items and, half the time, whole-weight choices."""
    n, rows, M = draw(st.integers(3, 6)), draw(st.integers(2, 3)), draw(st.integers(1, 4))
    ints = partial(st.integers, 0, 12)
    e = np.array([[draw(ints()) for _ in range(rows)] for _ in range(n)], dtype=float)
    h = np.array([[draw(ints()) for _ in range(rows)] for _ in range(n)], dtype=float)
    h[0, 1:], h[1, :] = 0.0, 0.0
    h[1, 1] = draw(st.integers(1, 12))
    e[0, 1], e[1, 0] = 0.0, 0.0
    forced = np.zeros((n, rows), dtype=bool)
    budget = np.array([draw(st.integers(0, 30)) for _ in range(rows)], dtype=float)
    cost = np.array([draw(st.one_of(st.just(np.inf), st.integers(0, 30))) for _ in range(M)],
                    dtype=float)
    delta = np.array([draw(st.integers(-3, 6)) for _ in range(M)], dtype=float)
    links = [(o, np.array([draw(st.integers(0, 5)) for _ in range(M)], dtype=float))
             for o in range(2, n) if draw(st.booleans())]
    whole = np.array([draw(st.one_of(st.just(np.inf), st.integers(0, 20))) for _ in range(M)],
                     dtype=float) if draw(st.booleans()) else None
    return e, h, forced, budget, ((0, 1),), [(1, 1, cost, delta, links, whole)]


@settings(max_examples=300, deadline=None)
@given(cover_programs())
def test_relaxation_below_the_program(program: tuple) -> None:
    """The LP relaxation (``relaxed=True``) never exceeds the program's optimum, which
    CP-SAT proves on these small programs. Mutations: the LP's margin added instead of
    subtracted (``+ 1.0`` in ``_relaxation``), and a linked buffer held whenever its
    choice is taken (``z >= y`` for ``z >= y + x - 1``): both bound random programs
    above their optimum."""
    exact = frame_bound(*program, limit_s=60.0)
    assert frame_bound(*program, relaxed=True) <= exact


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 30), st.integers(0, 30)),
                min_size=1, max_size=8), st.integers(1, 4))
def test_relaxed_first_keeps_each_signatures_least(frames: list, per: int) -> None:
    """Raising frames to a cheaper bound first (``relaxed_of``, at most ``bound_of``)
    gives each signature the same least bound as raising them to ``bound_of`` alone,
    solving no more programs. Mutation: stopping at a relaxed least frame
    (``level[f] >= 1`` for ``level[f] == 2``) leaves the least at its relaxation."""
    per = min(per, len(frames))
    frames = frames[:len(frames) // per * per]
    best = np.array([b for b, _, _ in frames], dtype=float)
    full = {k: b + r + x for k, (b, r, x) in enumerate(frames)}  # program >= relaxation
    calls: dict[str, int] = {"plain": 0, "relaxed": 0}

    def bound_of(name: str) -> callable:
        def of(k: int) -> float:
            calls[name] += 1
            return full[k]
        return of

    plain = raise_frames(best, per, bound_of("plain"))
    relaxed = raise_frames(best, per, bound_of("relaxed"),
                           relaxed_of=lambda k: frames[k][0] + frames[k][1])
    for start in range(0, len(best), per):
        assert plain[start:start + per].min() == relaxed[start:start + per].min()
    assert calls["relaxed"] <= calls["plain"]


@settings(**{**RANDOM_SETTINGS, "max_examples": 6})
@given(st.data())
def test_relaxed_first_gives_the_same_column_bounds(data: st.DataObject) -> None:
    """Every covered column of random networks gets the same bound with the frames
    raised to their LP relaxation first and without (traffic and energy), and once
    settled for pricing (``ColumnSolver.settle``) every frame bound at least the one
    raised without the relaxations (on these small programs the relaxations are mostly
    tight: the mutation of ``settle`` is caught by
    :func:`test_settle_raises_the_relaxed_frames`)."""
    from stems_opt.formulation import column_bounds

    network = network_from_dict(data.draw(tiny_networks(), label="network"))
    size = data.draw(st.integers(40, 1200), label="GB bits")
    objective = data.draw(st.sampled_from([Objective.TRAFFIC, Objective.ENERGY]))
    p = make_problem(network, size, data.draw(st.sampled_from([1, 4])), objective)
    got, frames = {}, {}
    for on in (False, True):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(subtile_cover, "RELAXED_FIRST", on)
            mp.setattr(column_bounds, "SUBTILE_ENERGY", True)
            cs = solver_for(p)
            for col in cs.columns:
                cs.tighten(col, cover=True)
            got[on] = [c.bound for c in cs.columns]
            for col in cs.columns:
                assert cs.settle(col) is False or on  # (the plain bounds need no settling)
            frames[on] = [dict(c.frame_bounds) for c in cs.columns]
            got[on, "settled"] = [c.bound for c in cs.columns]
    assert got[False] == got[True] == got[True, "settled"]
    for plain, settled in zip(frames[False], frames[True], strict=True):
        assert all(settled[s] >= b for s, b in plain.items())


def test_settle_raises_the_relaxed_frames(monkeypatch) -> None:
    """SEW-ResNet-152 at 256 KB (traffic), layers 20..28 with ``s2_b0_add`` read from
    DRAM and ``s2_b2_add``, ``s2_b3_conv1`` written: covered through the relaxations,
    the frame at Tb 4 along OY, one tile (time outer), is left at its LP relaxation,
    40,184,911 bits (another frame is the least); settled for pricing it is at its
    program's 41,828,352, what covering without the relaxations gives it (measured).
    Mutation: settling through the relaxations (``relaxed_first=True`` in ``settle``)
    leaves it at 40,184,911."""
    from stems_opt.network import Axis

    def column(cs):
        assert cs.open_interval(20, 28)
        return next(c for c in cs.columns if (c.first, c.last) == (20, 28)
                    and c.sig.whole_in == (("s2_b0_add", False),)
                    and c.sig.outputs == (("s2_b2_add", False, True),
                                          ("s2_b3_conv1", False, True)))

    cs, _ = sew152_block_column()
    col = column(cs)
    cs.tighten(col, cover=True)
    spec = next(s for s in col.frame_bounds if s[2] == 4 and s[3] is Axis.OY and s[4] == 1
                and s[5].value == "time_outer")
    least = min(col.frame_bounds.values())
    assert col.frame_bounds[spec] == 40_184_911 > least
    assert cs.settle(col) is False  # (the least frame was raised by its program already)
    assert col.frame_bounds[spec] == 41_828_352
    monkeypatch.setattr(subtile_cover, "RELAXED_FIRST", False)
    cs, _ = sew152_block_column()
    plain = column(cs)
    cs.tighten(plain, cover=True)
    assert plain.frame_bounds[spec] == 41_828_352 and plain.bound == col.bound
