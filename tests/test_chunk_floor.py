"""The per-layer floor of weight re-reads (``stems_opt/formulation/chunk_floor.py``).

The floor claims that *every* segment that fits the buffer and contains a
layer reads its weights at least ``|W| + floor`` times. Checked here against
every segment of the brute-force space (``tests/brute_force.py``) of a
hand-computed case and of random tiny networks, each under the context its
mappings give it.

Mutation that makes these tests fail: inflating the floor by 1 bit
(``int(best) + 1`` in ``_axis_floor``) fails ``test_hand_case_is_tight`` and
``test_interval_sums_in_model_units``: the hand case's best segment reads its
weights exactly ``|W| + floor``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stems_opt.cost.geometry import SegmentGeometry
from stems_opt.cost.traffic import peak_of, segment_terms
from stems_opt.formulation.chunk_floor import ChunkFloors, layer_chunk_floors
from stems_opt.formulation.data import frame_axes
from stems_opt.formulation.step_floor import step_bits
from stems_opt.mapping import Segment
from stems_opt.network import Axis
from stems_opt.problem import Problem

sys.path.insert(0, str(Path(__file__).resolve().parent))
import brute_force as bf
from test_optimizer import RANDOM_SETTINGS, make_problem, tiny_networks

# One 1x1 conv, C 4 -> K 8, 4 x 4, LIF (12-bit state), T = 2, 4-bit weights:
# |W| = 8 * 4 * 4 = 128 bits. Per row along OY and timestep: output 8 * 4 = 32
# bits, input 4 * 4 = 16 bits; a state row 8 * 4 * 12 = 384 bits. K unrolling 4:
# the only legal chunk count is 2 (8 / 2 = 4), a chunk of 64 bits.
ONE = {"name": "one", "timesteps": 2, "input": {"channels": 4, "height": 4, "width": 4},
       "layers": [{"name": "a", "type": "conv", "inputs": ["input"], "loop_dims": {"K": 8},
                   "neuron": "lif"}]}
# A step of r rows at time batch Tb holds r (32 Tb + 384 + 16 Tb) bits besides its
# weights. Whole weights beside the finest step (r = 1, Tb = 1): 128 + 432 = 560 > 550,
# so they are chunked. Tb = 2 (S = 1): r = 1 (q = 4 steps) holds 64 + 480 = 544 <= 550,
# r = 2 holds 64 + 960 > 550: 4 reads, 3 * 128 = 384 bits more. Tb = 1 (S = 2): r = 1
# fits (64 + 432), 2 * 4 = 8 reads. Floor: 384 bits.
ONE_GB = 550
ONE_FLOOR = 384


def fitting_segments(p: Problem) -> Iterator[tuple[Segment, SegmentGeometry, list]]:
    """Every distinct segment (under its mapping's context) of the brute-force space
    that fits the buffer, with its geometry and cost terms."""
    space = bf.Space(p)
    net, cap = p.network, p.hardware.gb_capacity_bits
    seen: set[tuple] = set()
    for runs, idx in space.valid_walk():
        for run, i, ctx in zip(runs, idx, space.contexts(runs, idx), strict=True):
            if (run, i, ctx) in seen:
                continue
            seen.add((run, i, ctx))
            seg = space.variants(run)[i]
            geo = SegmentGeometry(net, seg)
            terms = segment_terms(net, seg, ctx, geo)
            if peak_of(terms, geo)[0] <= cap:
                yield seg, geo, terms


def min_weight_reads(p: Problem) -> dict[str, int]:
    """Per layer with weights, its fewest weight reads over every segment of every
    mapping of the brute-force space that fits the buffer (under that mapping's context)."""
    least: dict[str, int] = {}
    for _, _, terms in fitting_segments(p):
        for t in terms:
            if t.tensor_class == "weights":
                least[t.layer] = min(least.get(t.layer, t.read_bits), t.read_bits)
    return least


def floors_of(p: Problem) -> dict[str, int]:
    net = p.network
    k_unroll = p.hardware.array.factor("K")
    got = layer_chunk_floors(net, p.hardware.gb_capacity_bits, k_unroll, frame_axes(net))
    return {lay.name: f for lay, f in zip(net.layers, got, strict=True)}


def test_hand_case_is_tight() -> None:
    p = make_problem(ONE, ONE_GB)
    assert floors_of(p) == {"a": ONE_FLOOR}
    # The brute force's best segment reads the weights 4 times (Tb 2, four one-row steps).
    assert min_weight_reads(p) == {"a": 128 + ONE_FLOOR}
    # With room for whole weights beside the finest step nothing is forced.
    assert floors_of(make_problem(ONE, 560)) == {"a": 0}


def test_interval_sums_in_model_units() -> None:
    p = make_problem(ONE, ONE_GB)
    floors = ChunkFloors(p.network, ONE_GB, 4, (Axis.OY,), read_rate=3)
    assert floors.per_layer == (3 * ONE_FLOOR,)
    assert floors.between(0, 0) == 3 * ONE_FLOOR
    assert ChunkFloors(p.network, ONE_GB, 4, (Axis.OY,), read_rate=0).between(0, 0) == 0


@settings(**{**RANDOM_SETTINGS, "max_examples": 8})
@given(st.data())
def test_random_segments_pay_the_floor(data: st.DataObject) -> None:
    """Every segment that fits reads each layer's weights at least ``|W| + floor``;
    buffers are drawn around the size where some layer's weights stop fitting whole."""
    net = make_problem(data.draw(tiny_networks()), 10 ** 6, k_unroll=1).network
    axes = frame_axes(net)
    needs = [lay.weight_size_bits + min(step_bits(net, lay, a, 1, 1) for a in axes)
             for lay in net.layers if lay.has_weights]
    cap = data.draw(st.integers(max(1, max(needs) * 2 // 3), max(needs) + 8))
    p = make_problem(net, cap, k_unroll=1)
    assume(bf.space_size(p) <= 20000)  # (the walk scores every segment of every mapping)
    floors = floors_of(p)
    for name, reads in min_weight_reads(p).items():
        w = net.layer(name).weight_size_bits
        assert reads >= w + floors[name], (name, reads, w, floors[name], cap)


def test_columns_start_at_the_floor() -> None:
    """The column solver's cheap bound includes the floor, stays at most the brute-force
    optimum, and the solve still proves that optimum."""
    from stems_opt.formulation.backend import SolveOptions
    from stems_opt.formulation.columns import ColumnSolver
    from stems_opt.formulation.cpsat import solve_cpsat
    from stems_opt.solvers import solve

    p = make_problem(ONE, ONE_GB)
    cs = ColumnSolver(p, solve_cpsat, SolveOptions(threads=1, seed=0))
    # Input read once 4*4*4 bits * T 2 = 128, output written 8*16 * 2 = 256, weights
    # 128, LIF state (streaming) read and written 2 * 8*16*12 = 3072: 3584, plus 384.
    assert [c.bound for c in cs.columns] == [3584 + ONE_FLOOR]
    best, _, _ = bf.brute_force_optimum(p, fast=True)
    assert best is not None and best >= 3584 + ONE_FLOOR
    r = solve(p, threads=1)
    assert r.status.value == "optimal" and r.objective_value == best
