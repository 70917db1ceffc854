"""The interval-wide operand floors (``stems_opt.formulation.nest_floor``) equal
the per-frame floor of ``operand_floors.frame_operand_floor_fj`` exactly, frame by frame.

The per-frame floor's own validity (never above a frame's optimum) is checked
in ``tests/test_bounds.py`` (``test_frame_bounds_with_loop_nests_random``),
which runs through the columns method and so through these arrays.
"""

from __future__ import annotations

import itertools
import random
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.loops import (
    NestHardware,
    StepShape,
    _sub_tile_steps,
    all_nests,
    chunk_counts,
    floor_chunk_counts,
    kind_sums,
    kind_sums_by_m,
    layer_nest_floor_fj,
    layer_steps,
    least_kind_sum,
    nest_cost,
    prefill_nest_floors,
    step_shape,
)
from stems_opt.formulation.bounds import all_tile_bounds
from stems_opt.formulation.nest_floor import _Down, frame_operand_floor, interval_operand_floors
from stems_opt.formulation.operand_floors import frame_operand_floor_fj
from stems_opt.io import load_instance, network_from_dict
from stems_opt.network import Axis, Layer, LayerKind, Network, NeuronKind, divisors

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_bounds import nest_problem  # noqa: E402
from test_loops import HW, TIGHT  # noqa: E402
from test_optimizer import RANDOM_SETTINGS, make_problem, tiny_networks  # noqa: E402


def assert_equal_floors(net: Network, hw: object, intervals: list[tuple[int, int]]) -> int:
    """Every frame of ``intervals``: the array's value equals the per-frame floor."""
    checked = 0
    for first, last in intervals:
        for axis in (Axis.OY, Axis.OX):
            for tb in (None, *divisors(net.timesteps)):
                got = interval_operand_floors(net, first, last, axis, hw, tb)
                N = min(lay.extent(axis) for lay in net.layers[first:last + 1])
                assert len(got) == N
                for n in range(1, N + 1):
                    want = frame_operand_floor_fj(net, first, last, axis, n, hw, tb)
                    assert int(got[n - 1]) == want, (first, last, axis, tb, n)
                    assert frame_operand_floor(net, first, last, axis, n, hw, tb) == want
                    checked += 1
    return checked


@settings(**{**RANDOM_SETTINGS, "max_examples": 15})
@given(st.data())
def test_interval_floors_equal_frame_floors_random(data: st.DataObject) -> None:
    """Random tiny networks, with and without loop nests. Sharing a layer's
    nest floor between intervals with different first layers (it depends on
    the layers after it only) would break this if that were false."""
    network = network_from_dict(data.draw(tiny_networks(), label="network"))
    size = data.draw(st.integers(40, 1200), label="GB bits")
    k_u = data.draw(st.sampled_from([1, 4]))
    p = nest_problem(network, size, k_u) if data.draw(st.booleans()) else \
        make_problem(network, size, k_u)
    L = len(p.network.layers)
    assert assert_equal_floors(p.network, p.hardware, [(f, la) for f in range(L)
                                                       for la in range(f, L)]) > 0


@pytest.mark.xdist_group("red_lif_nests")  # (with RED-LIF's energy solves: test_known_optima)
def test_interval_floors_equal_frame_floors_red_lif() -> None:
    """RED-LIF (strided and padded convs, adds) on the reference accelerator
    with loop nests, on intervals ending at a few layers. Dropping the
    ``T // tb`` factor of the nest part in ``nest_floor._floors`` makes this
    fail."""
    p = load_instance(ROOT / "instances" / "red_lif_1mb.yaml", objective="energy")
    hw = p.hardware if p.hardware.loop_nests else \
        type(p.hardware)(**{**p.hardware.__dict__, "loop_nests": True})
    L = len(p.network.layers)
    intervals = [(f, la) for la in (2, L // 2, L - 1) for f in range(max(0, la - 3), la + 1)]
    assert assert_equal_floors(p.network, hw, intervals) > 0


def assert_down_bounds(net: Network) -> int:
    """Every ``(j, last)``, both axes: :class:`_Down` (one per last layer, filled
    from it down, in a shuffled order of asks) equals ``all_tile_bounds``."""
    L = len(net.layers)
    rng = random.Random(L)
    checked = 0
    for last in range(L):
        for axis in (Axis.OY, Axis.OX):
            down = _Down(net, last, axis)
            for j in rng.sample(range(last + 1), last + 1):
                want = all_tile_bounds(net, j, last, axis)[0]
                got = down.at(j)
                assert got.shape == want.shape and (got == want).all(), (j, last, axis)
                checked += 1
    return checked


@settings(**{**RANDOM_SETTINGS, "max_examples": 15})
@given(st.data())
def test_bounds_filled_down_equal_tile_bounds_random(data: st.DataObject) -> None:
    """Random tiny networks (residual adds, strides, padding). Splitting a layer's
    output evenly only when it is a network output (dropping ``len(inner) <
    len(consumers)`` from ``is_out`` in ``_Down._fill``: a layer read after the
    interval too) makes this and the RED-LIF test fail."""
    network = network_from_dict(data.draw(tiny_networks(), label="network"))
    assert assert_down_bounds(network) > 0


def test_bounds_filled_down_equal_tile_bounds_red_lif() -> None:
    """RED-LIF: strided and padded convs, adds and their skips, a linear head."""
    p = load_instance(ROOT / "instances" / "red_lif_1mb.yaml")
    assert assert_down_bounds(p.network) > 0


def test_kind_sums_equal_least_and_per_m_sums() -> None:
    """:func:`kind_sums` gives :func:`least_kind_sum` and :func:`kind_sums_by_m`
    exactly: on RED-LIF's first conv layers with their nest tables, and on
    random kind tables where some steps fit no nest at some or every chunk
    count (-1; ``inf`` for that ``m``, 0 when no ``m`` is left)."""
    p = load_instance(ROOT / "instances" / "red_lif_1mb.yaml")
    nh = nest_hardware(p.hardware)
    rng = random.Random(7)
    cases = 0
    for lay in [lay for lay in p.network.layers if lay.has_weights][:3]:
        E = lay.extent(Axis.OY)
        chunks = floor_chunk_counts(lay.k, nh.unrolling[0])
        for n, tb in itertools.product((1, 2, 3), (1, p.network.timesteps)):
            bounds = tuple(t * E // n for t in range(n + 1))
            (memo,) = prefill_nest_floors([(lay, Axis.OY, bounds, chunks)], tb, nh)
            tables = [memo] + [{kv: tuple(rng.choice([-1, rng.randint(0, 99)])
                                          if rng.random() < q else rng.randint(0, 99)
                                          for _ in range(2)) for kv in memo}
                               for q in (0.05, 0.3, 1.0)]
            for table in tables:
                least, by_m = kind_sums(lay, Axis.OY, bounds, table)
                assert least == least_kind_sum(lay, Axis.OY, bounds, table)
                assert np.array_equal(by_m, kind_sums_by_m(lay, Axis.OY, bounds, table))
                cases += 1
    assert cases == 3 * 6 * 4


def test_floor_chunk_counts_lose_nothing() -> None:
    """The layer nest floor over :func:`floor_chunk_counts` equals the floor over
    every chunk count (``chunk_counts``) for random conv and linear layers
    (``K`` 4, 6, 8 on a ``K: 2`` array, so some chunkings are padded and kept),
    every tile count, time batch, roomy and tight buffers. Dropping chunk
    count 1 from ``floor_chunk_counts`` makes this fail (chunked steps cost
    more on these layers: checked below)."""
    rng = random.Random(5)
    dearer = 0
    for _ in range(10):
        kind = rng.choice([LayerKind.CONV, LayerKind.LINEAR])
        k = rng.choice([4, 6, 8])
        f = rng.choice([1, 3])
        e = rng.randint(2, 4)
        lay = Layer("l", kind, ("x",), k=k, c=rng.randint(1, 3), oy=1 if kind is
                    LayerKind.LINEAR else e, ox=1 if kind is LayerKind.LINEAR else 2,
                    iy=1 if kind is LayerKind.LINEAR else e, ix=1 if kind is
                    LayerKind.LINEAR else 2, fy=1 if kind is LayerKind.LINEAR else f, fx=1,
                    pad_y=0 if kind is LayerKind.LINEAR else (f - 1) // 2,
                    neuron=rng.choice([NeuronKind.LIF, NeuronKind.NONE]))
        full, kept = chunk_counts(k, 2), floor_chunk_counts(k, 2)
        assert set(kept) <= set(full) and 1 in kept
        E = lay.oy
        for hw, n, tb in itertools.product((HW, TIGHT), range(1, E + 1), (1, 2, 4)):
            bounds = tuple(t * E // n for t in range(n + 1))
            want = layer_nest_floor_fj(lay, Axis.OY, bounds, tb, hw, full)
            assert layer_nest_floor_fj(lay, Axis.OY, bounds, tb, hw, kept) == want
            only_chunked = tuple(c for c in full if c > 1)
            if only_chunked:
                dearer += layer_nest_floor_fj(lay, Axis.OY, bounds, tb, hw,
                                              only_chunked) > want
    assert dearer > 0


@pytest.mark.parametrize("hw", [HW, TIGHT], ids=["roomy", "tight"])
def test_chunked_step_costs_at_least_the_unchunked_brute_force(hw: NestHardware) -> None:
    """Brute force over every nest of tiny steps: walking ``c`` weight chunks
    whose size the ``K`` unrolling divides never beats the unchunked step (the
    argument of ``floor_chunk_counts``)."""
    for shape in (StepShape(k=4, c=2, oy=2, ox=1, fy=1, fx=1, tb=2, iy=2, ix=1, state_bits=8),
                  StepShape(k=8, c=1, oy=2, ox=1, fy=3, fx=1, tb=1, iy=4, ix=1),
                  StepShape(k=4, c=3, oy=1, ox=2, fy=1, fx=1, tb=2, iy=1, ix=2)):
        plain = min(nest_cost(n, shape, hw).total_fj for n in all_nests(shape, hw))
        for c in chunk_counts(shape.k, hw.unrolling[0]):
            if c > 1 and (shape.k // c) % hw.unrolling[0] == 0:
                chunked = replace(shape, chunks=c)
                assert min(nest_cost(n, chunked, hw).total_fj
                           for n in all_nests(chunked, hw)) >= plain


def test_sub_tile_kinds_equal_layer_steps() -> None:
    """The vectorised kinds of every sub-tile count (``_sub_tile_steps``) give,
    per ``m``, exactly the step shapes and counts of ``layer_steps``, for
    random strided and padded convs and uneven tile boundaries. Counting one
    sub-tile of each ``m`` twice makes this fail."""
    rng = random.Random(3)
    for _ in range(40):
        f, st_, e = rng.choice([1, 2, 3, 5]), rng.choice([1, 2]), rng.randint(3, 12)
        lay = Layer("l", LayerKind.CONV, ("x",), k=2, c=1, oy=e, ox=1, iy=(e - 1) * st_ + 1,
                    ix=1, fy=f, fx=1, stride_y=st_, pad_y=rng.randint(0, f // 2))
        cuts = sorted(rng.sample(range(1, e), rng.randint(0, min(3, e - 1))))
        bounds = (0, *cuts, e)
        reps, idx, counts, starts = _sub_tile_steps(lay, Axis.OY, bounds)
        ends = [*starts.tolist()[1:], len(idx)]
        for m, (lo, hi) in enumerate(zip(starts.tolist(), ends, strict=True), start=1):
            got: dict[StepShape, int] = {}
            for i, cnt in zip(idx[lo:hi].tolist(), counts[lo:hi].tolist(), strict=True):
                _, a, z = reps[i]
                shape = step_shape(lay, Axis.OY, a, z, 1)
                got[shape] = got.get(shape, 0) + cnt
            assert got == layer_steps(lay, Axis.OY, bounds, m, 1)
        assert len(starts) == min(hi - lo for lo, hi in itertools.pairwise(bounds))
