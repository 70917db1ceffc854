"""Loop nests below the GB: hand-computed accesses, brute force over every nest,
the floor bound."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest

from stems_opt.cost.loops import (
    GB,
    Buffer,
    Loop,
    Nest,
    NestHardware,
    NoNestError,
    StepShape,
    all_nests,
    check_nest,
    chunk_counts,
    layer_floor_fj,
    layer_nest_energy,
    layer_nest_floor_fj,
    nest_cost,
    optimal_nest,
    step_floor_fj,
)
from stems_opt.network import Axis, Layer, LayerKind, NeuronKind

# Unrolling K=2 only; GB 1/2 fJ per bit read/write, weight buffer 3/5, input buffer 7/11.
HW = NestHardware((2, 1, 1, 1, 1, 1), 1, 2, None,
                  Buffer("weight_buffer", 100, 3, 5, None),
                  Buffer("input_buffer", 100, 7, 11, None))
# K 4, C 2, OY 2: temporal extents K 2, C 2, OY 2 (N = 8); 4-bit weights, 1-bit spikes,
# 16-bit partial sums, 8-bit state.
SHAPE = StepShape(k=4, c=2, oy=2, ox=1, fy=1, fx=1, tb=1, iy=2, ix=1, state_bits=8)


def nest(*loops: tuple[str, int], w: int, i: int) -> Nest:
    return Nest(tuple(Loop(d, f) for d, f in loops), (("I", i), ("W", w)))


def test_output_stationary_nest_by_hand() -> None:
    # for K in [0,2): for OY in [0,2): for C in [0,2): (innermost C), W buffer holds
    # the C loop, I buffer holds C and OY.
    got = nest_cost(nest(("C", 2), ("OY", 2), ("K", 2), w=1, i=2), SHAPE, HW)
    # W: C is relevant, so no register reuse: 8 iterations x 2 weights x 4 bits = 64
    #    buffer reads. Buffer tile K2 x C2 x 4 = 16 bits, refetched over OY? no: OY is
    #    irrelevant and directly above, so fills = 8 / (2 * 2) = 2 -> 32 bits.
    # I: register tile 1 bit, no K run innermost: 8 reads. Buffer tile C2 x 2 rows = 4
    #    bits, K above is irrelevant: fetched once -> 4 bits.
    # O: C innermost, all reductions inside the register: 8 outputs x 1 bit, no psum.
    # V: first K/OY/OX loop has no T below it: 8 neurons x 8 bits read and written.
    assert got.access_bits == {
        ("weight_buffer", "W"): (64, 32), (GB, "W"): (32, 0),
        ("input_buffer", "I"): (8, 4), (GB, "I"): (4, 0),
        (GB, "O"): (0, 8), (GB, "V"): (64, 64)}
    # 64*3 + 32*5 + 32*1 + 8*7 + 4*11 + 4*1 + 8*2 + 64*1 + 64*2 = 696
    assert got.total_fj == 696
    assert got.compute_cycles == 8


def test_partial_sums_by_hand() -> None:
    # for OY: for C: for K (innermost K): the reduction C sits above the output register.
    got = nest_cost(nest(("K", 2), ("C", 2), ("OY", 2), w=0, i=0), SHAPE, HW)
    # W: K innermost is relevant: 8 x 8 bits = 64 reads; buffer holds nothing beyond the
    #    register tile (8 bits), nothing irrelevant directly above: 8 fills -> 64 bits.
    # I: K innermost is irrelevant: 8 / 2 = 4 register fills of 1 bit; the buffer tile of
    #    1 bit has the K run above it too: 4 fetches -> 4 bits.
    # O: each output leaves its register e_C = 2 times: (2 - 1) x 8 x 16 = 128 psum bits
    #    read and written, plus 8 final 1-bit outputs.
    assert got.access_bits[("weight_buffer", "W")] == (64, 64)
    assert got.access_bits[("input_buffer", "I")] == (4, 4)
    assert got.access_bits[(GB, "O")] == (128, 136)
    # 64*3 + 64*5 + 64*1 + 4*7 + 4*11 + 4*1 + 128*1 + 136*2 + 64*1 + 64*2 = 1244
    assert got.total_fj == 1244


def test_state_kept_over_inner_timesteps() -> None:
    shape = StepShape(k=4, c=2, oy=2, ox=1, fy=1, fx=1, tb=2, iy=2, ix=1, state_bits=8)
    inner_t = nest(("C", 2), ("T", 2), ("OY", 2), ("K", 2), w=1, i=1)
    outer_t = nest(("C", 2), ("OY", 2), ("K", 2), ("T", 2), w=1, i=1)
    # 8 neurons x 8 bits: once for both timesteps when T is below every K/OY/OX loop,
    # once per timestep (x 2) when it is outside them.
    assert nest_cost(inner_t, shape, HW).access_bits[(GB, "V")] == (64, 64)
    assert nest_cost(outer_t, shape, HW).access_bits[(GB, "V")] == (128, 128)


def test_checks() -> None:
    shape = StepShape(k=4, c=2, oy=2, ox=1, fy=1, fx=1, tb=2, iy=2, ix=1)
    assert check_nest(nest(("C", 2), ("T", 2), ("OY", 2), ("K", 2), w=0, i=0), shape, HW) == []
    # T inside C: the neuron would fire before its reduction is complete.
    assert any("causality" in p for p in check_nest(
        nest(("T", 2), ("C", 2), ("OY", 2), ("K", 2), w=0, i=0), shape, HW))
    small = NestHardware(HW.unrolling, 1, 2, None, Buffer("weight_buffer", 15, 3, 5, None),
                         HW.input_buffer)
    # W tile of K2 x C2 x 4 bits = 16 bits does not fit 15 bits.
    assert any("exceeds" in p for p in check_nest(
        nest(("C", 2), ("OY", 2), ("K", 2), w=1, i=0), SHAPE, small))
    assert any("multiply" in p for p in check_nest(
        nest(("C", 2), ("K", 2), w=0, i=0), SHAPE, HW))


TINY_SHAPES = [
    SHAPE,
    StepShape(k=4, c=2, oy=2, ox=2, fy=1, fx=1, tb=2, iy=2, ix=2, state_bits=8),
    StepShape(k=2, c=2, oy=3, ox=1, fy=3, fx=1, tb=1, iy=4, ix=1, state_bits=0),
    StepShape(k=4, c=3, oy=2, ox=1, fy=1, fx=1, tb=2, iy=3, ix=1, stride_y=2,
              input_bits=4, state_bits=12),
    StepShape(k=8, c=2, oy=2, ox=1, fy=1, fx=1, tb=2, iy=2, ix=1, state_bits=8, chunks=2),
]
TIGHT = NestHardware(HW.unrolling, 1, 2, 4, Buffer("weight_buffer", 24, 3, 5, 8),
                     Buffer("input_buffer", 6, 7, 11, None))
NO_BUFFERS = NestHardware((2, 2, 1, 1, 1, 1), 1, 2, None, None, None)


@pytest.mark.parametrize("hw", [HW, TIGHT, NO_BUFFERS], ids=["roomy", "tight", "none"])
@pytest.mark.parametrize("shape", TINY_SHAPES, ids=range(len(TINY_SHAPES)))
def test_optimum_equals_brute_force(shape: StepShape, hw: NestHardware) -> None:
    """The dynamic programme's optimum is the least energy over every valid nest."""
    best = min(nest_cost(n, shape, hw).total_fj for n in all_nests(shape, hw))
    found, value = optimal_nest(shape, hw)
    assert value == best
    assert check_nest(found, shape, hw) == []
    assert nest_cost(found, shape, hw).total_fj == value


@pytest.mark.parametrize("hw", [HW, TIGHT, NO_BUFFERS], ids=["roomy", "tight", "none"])
def test_step_floor_is_a_lower_bound(hw: NestHardware) -> None:
    """Inflating the floor by 1 fJ makes the tight case fail: with every extent
    covered by the array each operand moves exactly once."""
    for shape in TINY_SHAPES:
        assert step_floor_fj(shape, hw) <= optimal_nest(shape, hw)[1]
    one = StepShape(k=2, c=1, oy=1, ox=1, fy=1, fx=1, tb=1, iy=1, ix=1, state_bits=8)
    assert step_floor_fj(one, hw) == optimal_nest(one, hw)[1]


def _layer(rng: random.Random, kind: LayerKind) -> Layer:
    f = rng.choice([1, 3])
    e = rng.randint(2, 5)
    neuron = rng.choice([NeuronKind.LIF, NeuronKind.NONE])
    if kind is LayerKind.LINEAR:
        return Layer("l", kind, ("x",), k=rng.choice([2, 4]), c=rng.randint(1, 6), oy=1, ox=1,
                     iy=1, ix=1, neuron=neuron)
    return Layer("l", kind, ("x",), k=rng.choice([2, 4]), c=rng.randint(1, 3), oy=e, ox=2,
                 iy=e, ix=2, fy=f, fx=1, pad_y=(f - 1) // 2, neuron=neuron)


def test_layer_floor_bounds_every_split() -> None:
    """The layer floor never exceeds the layer's nest energy for any tile count,
    sub-tile count, time batch or chunking (T = 4). Counting the weights once
    per tile twice (``2 * active``) makes it fail."""
    rng = random.Random(7)
    T = 4
    for _ in range(12):
        lay = _layer(rng, rng.choice([LayerKind.CONV, LayerKind.LINEAR]))
        E = lay.oy
        for n, tb in itertools.product(range(1, E + 1), (1, 2, 4)):
            bounds = tuple(t * E // n for t in range(n + 1))
            active = sum(1 for a, b in itertools.pairwise(bounds) if b > a)
            floor = layer_floor_fj(lay, active, T, TIGHT)
            smallest = min(bounds[t + 1] - bounds[t] for t in range(n))
            for m in range(1, smallest + 1):
                for chunks in (1, 2) if lay.k >= 4 else (1,):
                    got = sum(v for _, v in layer_nest_energy(lay, Axis.OY, bounds, m, tb,
                                                                T // tb, TIGHT, chunks))
                    assert floor <= got


def test_layer_nest_floor_is_the_least_option() -> None:
    """``layer_nest_floor_fj`` is never above the nest energy of any sub-tile
    count ``m`` (1 .. the smallest tile) and chunk count of the layer, and
    equals the least of them, for random conv and linear layers, tile counts
    and time batches (T = 4), with roomy and tight inner buffers.

    Mutations that make it fail: adding 1 fJ to the floor; taking the max
    instead of the min over ``(m, chunks)`` (the options differ in energy:
    checked below).
    """
    rng = random.Random(11)
    T = 4
    differ = 0
    for _ in range(16):
        lay = _layer(rng, rng.choice([LayerKind.CONV, LayerKind.LINEAR]))
        chunks = chunk_counts(lay.k, 2)
        assert chunks == ((1, 2) if lay.k == 4 else (1,))
        E = lay.oy
        for hw, n, tb in itertools.product((HW, TIGHT), range(1, E + 1), (1, 2, 4)):
            bounds = tuple(t * E // n for t in range(n + 1))
            floor = T // tb * layer_nest_floor_fj(lay, Axis.OY, bounds, tb, hw, chunks)
            smallest = min(bounds[t + 1] - bounds[t] for t in range(n))
            energies = {}
            for m, c in itertools.product(range(1, smallest + 1), chunks):
                try:
                    energies[(m, c)] = sum(v for _, v in layer_nest_energy(
                        lay, Axis.OY, bounds, m, tb, T // tb, hw, c))
                except NoNestError:
                    continue
            assert all(floor <= e for e in energies.values())
            assert floor == min(energies.values(), default=0)
            differ += len(set(energies.values())) > 1
    assert differ > 0


@pytest.mark.parametrize("schedule", ["ST-LBL", "TB-F"])
def test_energy_by_level_adds_up(schedule: str) -> None:
    """Per-level, per-operand energies sum to the total; the inner levels are
    charged (the tiny network's conv layers use the weight and input buffers)."""
    from pathlib import Path

    from stems_opt.cost.evaluation import evaluate
    from stems_opt.heuristics import named_schedule
    from stems_opt.io import load_instance

    problem = load_instance(Path(__file__).parent.parent / "instances" / "tiny_chain.yaml")
    result = named_schedule(problem, schedule)
    assert result.mapping is not None
    cost = evaluate(problem, result.mapping)
    levels = cost.energy_by_level_pj
    total = sum(v for ops in levels.values() for v in ops.values())
    assert total == pytest.approx(cost.energy_pj["total"], rel=1e-12)
    assert sum(levels["weight_buffer"].values()) + sum(levels["input_buffer"].values()) \
        == pytest.approx(cost.energy_pj["inner_levels"], rel=1e-12)
    assert cost.energy_pj["inner_levels"] > 0
    assert sum(levels["dram"].values()) == pytest.approx(cost.energy_pj["dram"], rel=1e-12)


def test_random_tiny_steps_equal_brute_force() -> None:
    """Random tiny steps (strides, kernels, chunks, state, tight buffers): the
    optimum is valid, scores as claimed and equals brute force. Letting the
    closed-form tails place ``T`` before a remaining reduction (no causality
    check) makes this fail."""
    rng = random.Random(3)
    checked = 0
    while checked < 25:
        u = (rng.choice([1, 2]), rng.choice([1, 2]), 1, 1, 1, 1)
        k, c = u[0] * rng.choice([1, 2]), rng.choice([1, 2, 3])
        fy, s = rng.choice([1, 3]), rng.choice([1, 2])
        oy, tb = rng.randint(1, 3), rng.choice([1, 2])
        chunks = rng.choice([ch for ch in (1, 2) if k % ch == 0 and k // ch >= u[0]])
        shape = StepShape(k=k, c=c, oy=oy, ox=1, fy=fy, fx=1, tb=tb,
                          iy=rng.randint(1, (oy - 1) * s + fy), ix=1, stride_y=s,
                          state_bits=rng.choice([0, 8]), chunks=chunks,
                          input_bits=rng.choice([1, 4]))
        hw = NestHardware(u, 1, 2, None,
                          Buffer("weight_buffer", rng.choice([16, 32, 64, 10**6]), 3, 5, None),
                          Buffer("input_buffer", rng.choice([4, 8, 16, 10**6]), 7, 11, None))
        costs = [nest_cost(n, shape, hw).total_fj for n in all_nests(shape, hw)]
        if not costs:
            continue
        found, value = optimal_nest(shape, hw)
        assert value == min(costs)
        assert check_nest(found, shape, hw) == []
        assert nest_cost(found, shape, hw).total_fj == value
        checked += 1


def test_show_loops(capsys: pytest.CaptureFixture[str]) -> None:
    """``--show-loops``: each step's nest, its loops multiplying to the step's
    temporal extents, energies summing to the layer's operand energy."""
    import json
    from pathlib import Path

    from stems_opt.cli import main

    inst = str(Path(__file__).parent.parent / "instances" / "tiny_chain.yaml")
    assert main(["evaluate", inst, "--schedule", "TB-F", "--show-loops", "c2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    steps = doc["loops"]["steps"]
    assert steps
    for st in steps:
        # tiny array K 4 x C 2: c2 has K 4 (1 iteration), C 4 (2), a 3 x 3 kernel.
        prod = {}
        for dim, f in st["loops"]:
            prod[dim] = prod.get(dim, 1) * f
        assert prod.get("K", 1) == 1 and prod.get("C", 1) == 2
        assert prod.get("FY", 1) == prod.get("FX", 1) == 3
        assert prod.get("T", 1) == st["tb"]
    assert main(["evaluate", inst, "--schedule", "TB-F", "--show-loops", "c2"]) == 0
    out = capsys.readouterr().out
    assert "for C in [0,2):" in out and "above the global buffer" in out
    assert main(["evaluate", inst, "--schedule", "TB-F", "--show-loops", "nope"]) == 2
    assert "show-loops" in capsys.readouterr().err


@pytest.mark.parametrize("schedule", ["TB-F", "ST-LBL", "TB-LBL"])
def test_show_loops_from_dram(schedule: str) -> None:
    """Above the GB, ``--show-loops`` walks the time batches, tiles and sub-tiles of
    the layer's segment (as many steps as the nests below count) and gives the
    layer's DRAM reads and writes per operand, which add up to the traffic the cost
    model charges the layer. On tiny_residual under TB-F (one segment, ``Tb`` 4,
    one tile), ``c1`` reads the network input once, 2 channels x 8 x 8 x 4 timesteps
    = 512 bits at 1 bit, and its weights once, K 4 x C 2 x 3 x 3 x 4 bits = 288."""
    from pathlib import Path

    from stems_opt.cost.evaluation import evaluate
    from stems_opt.heuristics.named import named_schedule
    from stems_opt.io import load_instance
    from stems_opt.nest_report import show_loops

    # (SEW-ResNet-18 under TB-F: b4_conv_a has rows in 3 of its segment's 4 tiles)
    for name in ("tiny_chain", "tiny_residual", "sew_resnet18_1mb"):
        p = load_instance(Path(__file__).parent.parent / "instances" / f"{name}.yaml")
        mapping = named_schedule(p, schedule).mapping
        assert mapping is not None
        cost = evaluate(p, mapping)
        for lay in p.network.layers:
            _, doc = show_loops(p, mapping, lay.name)
            bits = doc["dram_access_bits"]
            assert sum(r + w for r, w in bits.values()) == cost.traffic_by_layer[lay.name]
            if doc["steps"]:
                runs = math.prod(f for _, f in doc["dram_loops"])
                assert sum(st["count"] for st in doc["steps"]) == runs
            if name == "tiny_residual" and schedule == "TB-F" and lay.name == "c1":
                assert bits["I"] == [512, 0] and bits["W"] == [288, 0]
    # Mutations (each fails): the sub-tile loop left out of ``_dram_loops``; every
    # tile counted, with rows or not (``seg.tiles``: SEW-ResNet-18 under TB-F); the
    # activations' reads charged as outputs (``READ_OPERAND["activations"] = "O"``).


def test_loop_nests_flag_must_be_a_bool() -> None:
    import yaml

    from stems_opt.errors import StemsInputError
    from stems_opt.io import hardware_from_dict

    doc = yaml.safe_load((Path(__file__).parent.parent / "models" / "hardware"
                          / "tiny.yaml").read_text())
    assert hardware_from_dict(doc).loop_nests is True
    doc["loop_nests"] = "yes"
    with pytest.raises(StemsInputError) as err:
        hardware_from_dict(doc, "hw.yaml")
    assert "loop_nests" in str(err.value) and "hw.yaml" in str(err.value)


@pytest.mark.parametrize("hw", [
    NestHardware((2, 2, 1, 1, 1, 1), 1, 2, None, Buffer("weight_buffer", 10**6, 3, 5, None),
                 Buffer("input_buffer", 10**6, 7, 11, None)),
    NestHardware((2, 2, 1, 1, 1, 1), 1, 2, None, Buffer("weight_buffer", 16, 3, 5, None),
                 Buffer("input_buffer", 8, 7, 11, None)),
    NestHardware((2, 2, 1, 1, 1, 1), 1, 2, None, None, None),
], ids=["roomy", "tight", "none"])
def test_state_kept_over_innermost_timesteps_equals_brute_force(hw: NestHardware) -> None:
    """Every reduction unrolled (C 2 on an array with C 2, 1 x 1 kernel), state
    and four timesteps: ``T`` loops innermost keep ``V`` in its register while
    ``OY``/``OX`` loops above them still reuse the weight register. Trying only
    chains without innermost ``T`` loops (``_prefixes`` returning ``[1]``) makes
    every case fail."""
    for shape in (StepShape(k=4, c=2, oy=2, ox=2, fy=1, fx=1, tb=4, iy=2, ix=2, state_bits=8),
                  StepShape(k=4, c=2, oy=3, ox=1, fy=1, fx=1, tb=4, iy=5, ix=1, stride_y=2,
                            state_bits=12, input_bits=4)):
        best = min(nest_cost(n, shape, hw).total_fj for n in all_nests(shape, hw))
        found, value = optimal_nest(shape, hw)
        assert value == best
        assert check_nest(found, shape, hw) == []
        assert nest_cost(found, shape, hw).total_fj == value


def test_batched_shapes_equal_brute_force() -> None:
    """Shapes sharing a grid (same temporal extents) but not their rows, windows,
    strides, bit widths or state are solved in one batch (``solve_nests``); each
    equals brute force. Giving every shape of a batch the first shape's input
    rows (``iy``) makes this fail. The energy-only batch (the frame floors')
    gives the same energies: keeping the first case's energy instead of the
    least in ``_ChainSearch.solve`` when no nest is asked makes this fail."""
    from nest_cases import BATCH_HW, batch_shapes

    from stems_opt.cost.loops import (
        _ChainSearch,
        clear_nest_table,
        nest_energy_fj,
        solve_nests,
    )

    hw, shapes = BATCH_HW, batch_shapes((4, 1, 4, 1, 4))
    assert len({_ChainSearch.key(s, hw) for s in shapes}) == 1  # one batch
    clear_nest_table()
    solve_nests(shapes, hw)  # energies alone, in one batch
    energies = [nest_energy_fj(shape, hw) for shape in shapes]
    clear_nest_table()
    solve_nests(shapes, hw, nests=True)
    for shape, energy in zip(shapes, energies, strict=True):
        best = min(nest_cost(n, shape, hw).total_fj for n in all_nests(shape, hw))
        found, value = optimal_nest(shape, hw)
        assert value == best == energy
        assert nest_cost(found, shape, hw).total_fj == value


def test_layer_steps_count_every_sub_tile() -> None:
    """``layer_steps`` equals one ``step_shape`` per non-empty sub-tile, counted.
    Keying the count by rows alone (not the window's length) makes this fail:
    a padded edge sub-tile has a shorter window than an inner one."""
    from collections import Counter

    from stems_opt.cost.loops import layer_steps, step_shape

    rng = random.Random(11)
    for _ in range(20):
        lay = _layer(rng, LayerKind.CONV)
        E = lay.oy
        n = rng.randint(1, E)
        bounds = tuple(t * E // n for t in range(n + 1))
        m = rng.randint(1, max(1, min(b - a for a, b in itertools.pairwise(bounds))))
        naive: Counter = Counter()
        for lo, hi in itertools.pairwise(bounds):
            for j in range(m):
                a, z = lo + j * (hi - lo) // m, lo + (j + 1) * (hi - lo) // m
                if z > a:
                    naive[step_shape(lay, Axis.OY, a, z, 2)] += 1
        assert layer_steps(lay, Axis.OY, bounds, m, 2) == dict(naive)


def test_random_steps_on_random_arrays_equal_brute_force() -> None:
    """Random tiny steps on random arrays (any dimension unrolled by 1 or 2,
    kernels and strides on both axes, no weights, no buffers, tight buffers,
    chunks, up to four timesteps): the optimum equals brute force, or no nest
    exists for either. Dropping the ``K`` family (I's register reuse) from the
    chain search makes this fail."""
    rng = random.Random(5)
    checked = 0
    while checked < 40:
        u = tuple(rng.choice([1, 2]) for _ in range(6))
        k, c = u[0] * rng.choice([1, 2]), rng.choice([1, 2, 3])
        fy, fx, sy, sx = rng.choice([1, 2, 3]), rng.choice([1, 2]), rng.choice([1, 2]), \
            rng.choice([1, 2])
        oy, ox, tb = rng.randint(1, 3), rng.randint(1, 2), rng.choice([1, 2, 4])
        chunks = rng.choice([ch for ch in (1, 2) if k % ch == 0 and k // ch >= u[0]])
        shape = StepShape(k=k, c=c, oy=oy, ox=ox, fy=fy, fx=fx, tb=tb,
                          iy=rng.randint(1, (oy - 1) * sy + fy),
                          ix=rng.randint(1, (ox - 1) * sx + fx), stride_y=sy, stride_x=sx,
                          weight_bits=rng.choice([0, 4, 4]), state_bits=rng.choice([0, 8]),
                          chunks=chunks, input_bits=rng.choice([1, 4]))
        extents = [-(-x // f) for x, f in zip((k // chunks, c, oy, ox, fy, fx), u, strict=True)]
        if math.prod(extents) * tb > 24:
            continue  # keep brute force small
        hw = NestHardware(u, rng.choice([1, 2]), rng.choice([1, 2, 3]), None,
                          rng.choice([None, Buffer("weight_buffer", rng.choice([8, 32, 10**6]),
                                                   3, 5, None)]),
                          rng.choice([None, Buffer("input_buffer", rng.choice([2, 8, 10**6]),
                                                   7, 11, None)]))
        costs = [nest_cost(n, shape, hw).total_fj for n in all_nests(shape, hw)]
        checked += 1
        if not costs:
            with pytest.raises(NoNestError):
                optimal_nest(shape, hw)
            continue
        found, value = optimal_nest(shape, hw)
        assert value == min(costs)
        assert check_nest(found, shape, hw) == []
        assert nest_cost(found, shape, hw).total_fj == value


def test_running_minima_equal_their_definition() -> None:
    """``_above_min`` / ``_below_min`` on grids big enough for the slice loop
    (``SMALL_GRID`` points and more) and small ones equal the minimum over
    every point ``y <= x`` (``y >= x``) index by index, computed point by
    point. Starting the loop at index 2 (``range(2, n)``) makes this fail."""
    from stems_opt.cost.loops import SMALL_GRID, _above_min, _below_min

    rng = np.random.default_rng(3)
    for shape in [(2, 3, 2, 5, 2, 2, 3), (1, 4, 2, 3, 2, 2, 2, 2), (3, 2, 3), (1, 2, 1, 2)]:
        a = rng.integers(0, 1000, size=shape)
        up, down = _above_min(a), _below_min(a)
        for x in itertools.product(*(range(n) for n in shape)):
            box_up = a[(x[0], *(slice(0, i + 1) for i in x[1:]))]
            box_down = a[(x[0], *(slice(i, None) for i in x[1:]))]
            assert up[x] == box_up.min() and down[x] == box_down.min()
    assert math.prod((2, 3, 2, 5, 2, 2, 3)) >= SMALL_GRID > math.prod((3, 2, 3))


def test_layer_total_equals_the_sum_of_its_nests() -> None:
    """``layer_nest_total_fj`` (the option costs' operand term, from the least
    nest energies alone) equals the sum of ``layer_nest_energy``'s per-level
    values (each step's optimal nest scored by ``nest_cost``) for random conv
    and linear layers, tile counts, sub-tile counts, time batches, chunkings,
    roomy and tight buffers; both raise ``NoNestError`` together. Dropping the
    ``batches`` factor (or the step ``count``) in ``layer_nest_total_fj``
    makes this fail."""
    from stems_opt.cost.loops import clear_nest_table, layer_nest_total_fj

    clear_nest_table()  # (the totals must not lean on nests found before)
    rng = random.Random(17)
    T = 4
    for _ in range(10):
        lay = _layer(rng, rng.choice([LayerKind.CONV, LayerKind.LINEAR]))
        E = lay.oy
        for hw, n, tb in itertools.product((HW, TIGHT), range(1, E + 1), (1, 2, 4)):
            bounds = tuple(t * E // n for t in range(n + 1))
            m = rng.randint(1, min(bounds[t + 1] - bounds[t] for t in range(n)))
            for c in chunk_counts(lay.k, 2):
                try:
                    want = sum(v for _, v in layer_nest_energy(lay, Axis.OY, bounds, m, tb,
                                                                T // tb, hw, c))
                except NoNestError:
                    with pytest.raises(NoNestError):
                        layer_nest_total_fj(lay, Axis.OY, bounds, m, tb, T // tb, hw, c)
                    continue
                assert layer_nest_total_fj(lay, Axis.OY, bounds, m, tb, T // tb, hw, c) == want


def test_layers_of_one_shape_share_their_step_tables() -> None:
    """Two layers equal but for their names and inputs share one twin (the key
    of their step tables) and have equal nest energies; a layer differing in
    any field their steps see has another twin. Making the twin drop ``c``
    too (``dataclasses.replace(..., c=1)``) makes this fail."""
    from dataclasses import fields, replace

    from stems_opt.cost.loops import shape_twin

    a = Layer("a", LayerKind.CONV, ("x",), k=4, c=2, oy=3, ox=2, iy=3, ix=2, fy=3, fx=1,
              pad_y=1, neuron=NeuronKind.LIF)
    b = replace(a, name="b", inputs=("y", "z"))
    assert shape_twin(a) == shape_twin(b)
    bounds = (0, 2, 3)
    assert layer_nest_energy(a, Axis.OY, bounds, 1, 2, 2, TIGHT) == \
        layer_nest_energy(b, Axis.OY, bounds, 1, 2, 2, TIGHT)
    for f in fields(a):
        if f.name in ("name", "inputs", "kind", "neuron", "pool_type", "spike_rate"):
            continue
        other = replace(a, **{f.name: getattr(a, f.name) + 1})
        assert shape_twin(other) != shape_twin(a), f.name


# Both inner buffers small (weights 64 bits, inputs 40), unrolled 2 x 2.
SMALL_BUFFERS = NestHardware((2, 1, 2, 1, 1, 1), 1, 2, None,
                             Buffer("weight_buffer", 64, 3, 5, None),
                             Buffer("input_buffer", 40, 2, 3, None))


def random_layer(rng: random.Random) -> Layer:
    """A small conv (1 or 3 rows of kernel, stride 1 or 2, any padding) or linear
    layer, with or without LIF state, for the floors' random tests."""
    kind = rng.choice([LayerKind.CONV, LayerKind.CONV, LayerKind.LINEAR])
    f, sy = rng.choice([1, 3]), rng.choice([1, 2])
    e = rng.randint(2, 5)
    pad = rng.choice([0, (f - 1) // 2, f - 1]) if f > 1 else 0
    neuron = rng.choice([NeuronKind.LIF, NeuronKind.NONE])
    k, c = rng.choice([2, 4]), rng.randint(1, 4)
    if kind is LayerKind.LINEAR:
        return Layer("l", kind, ("x",), k=k, c=c, oy=1, ox=1, iy=1, ix=1, neuron=neuron)
    iy = (e - 1) * sy + f - 2 * pad
    return Layer("l", kind, ("x",), k=k, c=c, oy=e, ox=2, iy=iy, ix=2, fy=f, fx=1,
                 stride_y=sy, pad_y=pad, neuron=neuron)


def test_register_floor_bounds_every_split() -> None:
    """``layer_floor_fj`` with the register floor (``register_floor_fj``) is
    never above the nest energy of any tile count, sub-tile count, time
    batch or chunking of random conv and linear layers (strides, padding,
    ``OY`` unrolled or not, buffers or none; T = 4), and the register floor
    decides it in some of them. Mutations that make this fail: charging the
    partial sums ``R`` times instead of ``R - 1`` (``red - 1`` -> ``red``);
    not capping ``rho`` at 1 (``min(1, Fraction(...))`` -> ``Fraction(...)``)."""
    from stems_opt.cost.loops import register_floor_fj

    rng = random.Random(23)
    T = 4
    decided = 0
    hws = [TIGHT, NO_BUFFERS, SMALL_BUFFERS]
    for _ in range(24):
        lay = random_layer(rng)
        E = lay.oy
        for hw in hws:
            reg = register_floor_fj(lay, T, hw)
            for n, tb in itertools.product(range(1, E + 1), (1, 2, 4)):
                bounds = tuple(t * E // n for t in range(n + 1))
                active = sum(1 for a, b in itertools.pairwise(bounds) if b > a)
                floor = layer_floor_fj(lay, active, T, hw)
                smallest = min(bounds[t + 1] - bounds[t] for t in range(n))
                for m in range(1, smallest + 1):
                    for chunks in chunk_counts(lay.k, hw.unrolling[0]):
                        try:
                            got = sum(v for _, v in layer_nest_energy(
                                lay, Axis.OY, bounds, m, tb, T // tb, hw, chunks))
                        except NoNestError:
                            continue
                        assert floor <= got, (lay, hw, n, tb, m, chunks)
            with patch("stems_opt.cost.loops.register_floor_fj", return_value=0):
                without = layer_floor_fj(lay, 1, T, hw)
            decided += reg > 0 and layer_floor_fj(lay, 1, T, hw) > without
    assert decided > 0


# K 2, C 2, OY 2 unrolled: a 1x1 conv of two output rows is one array tile, every
# temporal extent 1 but T's.
UNROLLED = NestHardware((2, 2, 2, 1, 1, 1), 1, 2, None,
                        Buffer("weight_buffer", 100, 3, 5, None),
                        Buffer("input_buffer", 100, 7, 11, None))


def test_partition_floor_by_hand() -> None:
    """``layer_partition_floor_fj`` of a 1x1 conv (K 2, C 2, two rows, one column;
    4-bit weights, 1-bit spikes, 8-bit state) on ``UNROLLED``, worked out below.
    Mutations that make this fail: splitting at every row (``least[:hi]`` ->
    ``least[hi - 1:hi]``); one time batch (``timesteps`` -> 1 in the steps)."""
    from stems_opt.cost.loops import layer_partition_floor_fj

    lay = Layer("l", LayerKind.CONV, ("x",), k=2, c=2, oy=2, ox=1, iy=2, ix=1,
                neuron=NeuronKind.LIF, weight_bits=4, state_bits=8)
    # T = 1, both rows in one step (no loop at all): W 16 bits read from the weight
    # buffer into the registers (16 x 3) and fetched into it (16 x (1 + 5)) = 144;
    # I 2 channels x 2 rows = 4 bits: 4 x 7 + 4 x (1 + 11) = 76; O 4 outputs x 1 bit
    # written (x 2) = 8; V 4 x 8 bits read and written (x (1 + 2)) = 96. Sum 324.
    # One row per step: W twice (288), I 2 x (2 x 7 + 2 x 12) = 76, O 8, V 96: 468.
    assert layer_partition_floor_fj(lay, Axis.OY, 1, UNROLLED) == 324
    # T = 2, one step: one T loop. W: T is irrelevant, innermost: one register fill
    # and one fetch, 144. I: 8 register bits (56) and 8 bits fetched (96): 152. O 2 x 4
    # bits x 2 = 16. V: T below every K/OY/OX loop (there is none), kept: 96. Sum 408
    # (two time batches of one timestep would cost 2 x 324 = 648).
    assert layer_partition_floor_fj(lay, Axis.OY, 2, UNROLLED) == 408


def test_partition_floor_bounds_every_split() -> None:
    """``layer_partition_floor_fj`` is never above the nest energy of any tiling
    (every composition of the rows into tiles), sub-tile count, time batch and
    chunking of random conv and linear layers, and equals the least of them
    in most of them. Mutations that make this fail: the most expensive last step
    (``.min()`` -> ``.max()`` in the shortest path); splitting at every row
    (``least[:hi]`` -> ``least[hi - 1:hi]``); steps of one timestep
    (``timesteps`` -> 1 in the steps: the least is never attained)."""
    from stems_opt.cost.loops import layer_partition_floor_fj

    rng = random.Random(29)
    T = 4
    hws = [TIGHT, NO_BUFFERS, UNROLLED, SMALL_BUFFERS]
    attained = 0
    for _ in range(16):
        lay = random_layer(rng)
        E = lay.oy
        for hw in hws:
            floor = layer_partition_floor_fj(lay, Axis.OY, T, hw)
            least = math.inf
            for cuts in itertools.product((False, True), repeat=E - 1):
                bounds = (0, *(r + 1 for r in range(E - 1) if cuts[r]), E)
                smallest = min(b - a for a, b in itertools.pairwise(bounds))
                for tb, m in itertools.product((1, 2, 4), range(1, smallest + 1)):
                    for chunks in chunk_counts(lay.k, hw.unrolling[0]):
                        try:
                            got = sum(v for _, v in layer_nest_energy(
                                lay, Axis.OY, bounds, m, tb, T // tb, hw, chunks))
                        except NoNestError:
                            continue
                        assert floor <= got, (lay, hw, bounds, tb, m, chunks)
                        least = min(least, got)
            attained += floor == least
    assert attained >= 10
