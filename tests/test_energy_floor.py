"""The per-layer energy floor of chunked weights (``stems_opt/formulation/energy_floor.py``).

The floor claims that *every* segment that fits the buffer and contains a
layer spends, on its weights, at least ``|W|`` DRAM reads and ``T |W|`` GB
reads (the cheap bound's) plus the floor, in energy without loop nests.
Checked against every segment of the brute-force space of a hand-computed
case and of random tiny networks, and as the cheap bound of columns against
their exact values (the local MIPs), on the hand case and on SEW-ResNet-152's
stage-4 layers at 128 KB.

Mutation that makes these tests fail: counting every forced step's GB reads
(``T * q`` instead of ``T * (q - 1)`` in ``energy_floor._axis_floor``) puts the
hand case's floor 256 bits of GB reads (33,280 fJ) above what its best segment
spends: ``test_hand_case_is_tight``, ``test_cheap_floor_is_the_larger_of_both``,
``test_hand_column_starts_at_its_optimum`` and
``test_stage_four_columns_below_their_exact_values`` (``s4_b0_conv1``'s column
then starts above its exact value) fail.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stems_opt.cost.energy import EnergyRates, layer_gb_access_bits
from stems_opt.formulation.backend import SolveOptions
from stems_opt.formulation.chunk_floor import ChunkFloors
from stems_opt.formulation.columns import ColumnSolver
from stems_opt.formulation.cpsat import solve_cpsat
from stems_opt.formulation.data import frame_axes
from stems_opt.formulation.energy_floor import layer_energy_floors
from stems_opt.formulation.step_floor import step_bits
from stems_opt.network import Axis
from stems_opt.problem import Objective, Problem

sys.path.insert(0, str(Path(__file__).resolve().parent))
import brute_force as bf
from test_chunk_floor import ONE, ONE_FLOOR, ONE_GB, fitting_segments
from test_optimizer import RANDOM_SETTINGS, make_problem, tiny_networks

ROOT = Path(__file__).resolve().parent.parent
# The test accelerator: a DRAM read 10.94 pJ plus the GB write of the fill 0.175 pJ
# (11,115 fJ a bit); the GB sends a weight bit to the array for 0.13 pJ (130 fJ).
READ_FJ, USE_FJ = 11_115, 130


def rates(p: Problem) -> tuple[int, int]:
    r = EnergyRates.of(p.hardware)
    return r.read_fj_per_bit, r.gb_read_fj_per_bit


def floors_of(p: Problem) -> dict[str, float]:
    net = p.network
    got = layer_energy_floors(net, p.hardware.gb_capacity_bits, p.hardware.array.factor("K"),
                              frame_axes(net), *rates(p))
    return {lay.name: f for lay, f in zip(net.layers, got, strict=True)}


def least_weight_energy(p: Problem) -> dict[str, int]:
    """Per layer with weights, the least energy (fJ) of its weights' DRAM reads and GB
    reads over every segment of the brute-force space that fits (under that mapping's
    context)."""
    read_fj, use_fj = rates(p)
    least: dict[str, int] = {}
    for seg, geo, terms in fitting_segments(p):
        for t in terms:
            if t.tensor_class != "weights":
                continue
            lay = p.network.layer(t.layer)
            gb = layer_gb_access_bits(geo, lay, seg.sub_tile(lay.name))["W"][0]
            fj = t.read_bits * read_fj + gb * use_fj
            least[t.layer] = min(least.get(t.layer, fj), fj)
    return least


def test_hand_case_is_tight() -> None:
    """``ONE`` of ``test_chunk_floor`` at 550 bits: |W| = 128 bits, T = 2, a step of
    ``r`` rows at time batch ``Tb`` holds ``r (48 Tb + 384)`` bits beside a 64-bit chunk.

    * Tb = 2 (S = 1): one row per step fits (544 <= 550), two do not: q = 4 steps,
      DRAM (1 * 4 - 1) * 128 = 384 bits more, GB T (q - 1) |W| = 2 * 3 * 128 = 768 more:
      384 * 11,115 + 768 * 130 = 4,268,160 + 99,840 = 4,368,000 fJ;
    * Tb = 1 (S = 2): one row fits (496), two do not (928): q = 4, DRAM (2 * 4 - 1) * 128
      = 896 bits more: 896 * 11,115 + 768 * 130 = 10,058,880 fJ.

    Whole weights (128 bits) beside the finest step need 128 + 432 = 560 > 550 bits.
    The floor is the first; the brute force's best segment spends exactly the cheap
    bound's single reads (128 from DRAM, T |W| = 256 from the GB) plus it.
    """
    p = make_problem(ONE, ONE_GB, objective=Objective.ENERGY)
    assert rates(p) == (READ_FJ, USE_FJ)
    assert floors_of(p) == {"a": 4_368_000}
    assert least_weight_energy(p) == {"a": 128 * READ_FJ + 256 * USE_FJ + 4_368_000}


@pytest.mark.parametrize(("size", "floor_fj"), [(560, 99_840), (992, 33_280), (1855, 33_280),
                                                (1856, 0)])
def test_whole_weights_beside_fewer_steps(size: int, floor_fj: int) -> None:
    """Whole weights (resident: one DRAM read) beside ``q`` steps of ``ceil(4 / q)`` rows
    at Tb = 1, ``r * 432`` bits each: the GB sends them ``T (q - 1) |W|`` times more.

    * 560 bits: one row beside 128 (560), two do not (992): q = 4, 2 * 3 * 128 = 768
      bits at 130 fJ, 99,840 fJ (the chunks cost DRAM re-reads, 3 * 128 * 11,115 more);
    * 992 .. 1855: two rows fit (992), four do not (1856): q = 2, 256 bits, 33,280 fJ;
    * 1856: the whole map in one step, nothing forced.

    The brute force's best segment spends exactly that over the single reads.
    """
    p = make_problem(ONE, size, objective=Objective.ENERGY)
    assert floors_of(p) == {"a": floor_fj}
    assert least_weight_energy(p) == {"a": 128 * READ_FJ + 256 * USE_FJ + floor_fj}


def test_cheap_floor_is_the_larger_of_both() -> None:
    """``ChunkFloors`` keeps the DRAM floor for the frame bounds and, per layer, the
    larger of it and the energy floor for the cheap bounds; without a GB rate (loop
    nests, traffic) both are the DRAM floor."""
    p = make_problem(ONE, ONE_GB, objective=Objective.ENERGY)
    floors = ChunkFloors(p.network, ONE_GB, 4, (Axis.OY,), READ_FJ, layer_energy_floors(
        p.network, ONE_GB, 4, (Axis.OY,), READ_FJ, USE_FJ))
    assert floors.per_layer == (ONE_FLOOR * READ_FJ,)
    assert floors.cheap_per_layer == (4_368_000,)
    assert floors.cheap_between(0, 0) == 4_368_000
    plain = ChunkFloors(p.network, ONE_GB, 4, (Axis.OY,), READ_FJ)
    assert plain.cheap_between(0, 0) == plain.between(0, 0) == ONE_FLOOR * READ_FJ


@settings(**{**RANDOM_SETTINGS, "max_examples": 10})
@given(st.data())
def test_random_segments_pay_the_floor(data: st.DataObject) -> None:
    """Every segment that fits spends at least the cheap bound's weight energy plus the
    floor; buffers are drawn from where some layer's weights stop fitting whole beside
    its finest step to where they fit beside one step of its whole map."""
    net = make_problem(data.draw(tiny_networks()), 10 ** 6, k_unroll=1).network
    axes = frame_axes(net)
    lays = [lay for lay in net.layers if lay.has_weights]
    needs = [lay.weight_size_bits + min(step_bits(net, lay, a, 1, 1) for a in axes)
             for lay in lays]
    full = [lay.weight_size_bits + min(step_bits(net, lay, a, lay.extent(a), 1) for a in axes)
            for lay in lays]
    cap = data.draw(st.integers(max(1, max(needs) * 2 // 3), max(full) + 8))
    p = make_problem(net, cap, k_unroll=1, objective=Objective.ENERGY)
    assume(bf.space_size(p) <= 20000)  # (the walk scores every segment of every mapping)
    floors = floors_of(p)
    T = net.timesteps
    for name, fj in least_weight_energy(p).items():
        w = net.layer(name).weight_size_bits
        assert fj >= w * READ_FJ + T * w * USE_FJ + floors[name], (name, fj, floors[name], cap)


def test_hand_column_starts_at_its_optimum() -> None:
    """The one column of ``ONE`` at 550 bits starts at its exact value: the cheap bound
    (one tile, every decision at its cheapest) plus the floor is reached by the segment
    of one tile in four sub-tiles at Tb = 2 (checked by the local MIP and the solve)."""
    from stems_opt.solvers import solve

    p = make_problem(ONE, ONE_GB, objective=Objective.ENERGY)
    cs = ColumnSolver(p, solve_cpsat, SolveOptions(threads=1, seed=0))
    (col,) = cs.columns
    cheap = col.bound
    cs.price(col)
    assert col.exact and col.value == cheap
    best, _, _ = bf.brute_force_optimum(p, fast=True)
    r = solve(p, threads=1)
    assert r.status.value == "optimal"
    assert abs(r.objective_value - best) <= 1e-9 * best


def test_stage_four_columns_below_their_exact_values() -> None:
    """SEW-ResNet-152 at 128 KB: every one-layer column of the first stage-4 block, whose
    weights (1 to 9.4 Mbit) are streamed in chunks, starts at most at its exact value
    (priced by its frames' local MIPs), and above the DRAM floor alone."""
    from stems_opt.io import load_hardware, load_instance

    base = load_instance(ROOT / "instances" / "sew_resnet152_1mb.yaml")
    # (the GB-level operand rule: with loop nests the cheap floor has no GB weight reads)
    hw = replace(load_hardware(ROOT / "models" / "hardware" / "edge_128kb.yaml"),
                 loop_nests=False)
    p = Problem(base.network, hw, Objective.ENERGY, "s152_128kb", (), base.max_segment_layers)
    cs = ColumnSolver(p, solve_cpsat, SolveOptions(threads=1, seed=0))
    names = [lay.name for lay in p.network.layers]
    checked = 0
    for name in ("s4_b0_conv1", "s4_b0_conv2", "s4_b0_conv3"):
        i = names.index(name)
        assert cs.chunk_floors.cheap_per_layer[i] > cs.chunk_floors.per_layer[i] > 0
        for col in [c for c in cs.columns if c.first == c.last == i][:2]:
            cheap = col.bound
            cs.price(col)
            assert col.exact and col.value is not None and cheap <= col.value, (name, col.sig)
            checked += 1
    assert checked >= 3
