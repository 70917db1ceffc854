"""Hand-computed cases for the cost model, and the named schedules on SEW-ResNet-18.

The tiny network (tests/data/tiny/net.yaml): input 2x8x8 spikes, T = 4;
c1 = conv 3x3 (K 4, C 2, lif), c2 = conv 3x3 (K 4, C 4, lif),
add = c1 + c2, pool = 2x2 max pool. Sizes used below:

    |W_c1| = 4*2*9*4 = 288       |W_c2| = 4*4*9*4 = 576
    |V_c1| = |V_c2| = 4*8*8*12 = 3072
    |input| = 4*2*8*8*1 = 512    (row along OY, one timestep: 2*8 = 16 bits)
    |c1| = |c2| = |add| = 4*4*8*8 = 1024 (row: 4*8 = 32 bits)
    |pool| = 4*4*4*4 = 256
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stems_opt.cost_model import compulsory_traffic_bits, evaluate
from stems_opt.heuristics import named_schedule
from stems_opt.io import load_instance
from stems_opt.mapping import RESIDENT, Halo, Mapping, Segment, StateMode, check

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny" / "inst.yaml"
LAYERS = ("c1", "c2", "add", "pool")


@pytest.fixture(scope="module")
def tiny():
    return load_instance(TINY)


def test_layer_by_layer_time_batched(tiny) -> None:
    # Each layer alone, Tb = T = 4, one tile, weights resident, everything through DRAM.
    # weights 288 + 576 = 864; state S = 1: 2 * (3072 + 3072) = 12288;
    # activations: input read 512; c1, c2, add written once (3 * 1024); c1 read by c2 and
    # by add, c2 read by add, add read by pool (4 * 1024); pool written 256:
    # 512 + 7 * 1024 + 256 = 7936.
    segs = tuple(Segment((n,), 4, weights={n: RESIDENT} if n in ("c1", "c2") else {})
                 for n in LAYERS)
    cost = evaluate(tiny, Mapping(segs))
    assert cost.traffic.by_class() == {"weights": 864, "state": 12288, "activations": 7936}
    assert cost.traffic_bits == 864 + 12288 + 7936


def test_single_timestep_one_segment(tiny) -> None:
    # One segment, Tb = 1 (S = 4), one tile, everything streamed, spilled, through DRAM:
    # weights re-read every step: 4 * 864 = 3456; state 2 * 4 * (3072 + 3072) = 49152;
    # activations as above: 7936.
    cost = evaluate(tiny, Mapping((Segment(LAYERS, 1),)))
    assert cost.traffic.by_class() == {"weights": 3456, "state": 49152, "activations": 7936}
    # Reads and writes separately: state 24576 each way; activations write c1, c2, add,
    # pool = 3 * 1024 + 256 = 3328, read the rest 7936 - 3328 = 4608.
    assert cost.traffic.read_bits["state"] == cost.traffic.write_bits["state"] == 24576
    assert cost.traffic.write_bits["activations"] == 3328


def test_two_tiles_reread_and_keep(tiny) -> None:
    # c1 alone, Tb = 4, two tiles along OY: c1 rows [0, 4) and [4, 8).
    # Input windows (3x3, pad 1): [0, 5) and [3, 8): 5 + 5 = 10 rows re-read,
    # 10 * 16 bits * T 4 = 640 bits; kept: 5 + 3 = 8 rows = 512 bits.
    # Peak at tile 0 (reread): streamed weights 288 + spilled state 4 rows * 384 = 1536
    # + input 5 rows * 16 * Tb 4 = 320 + output 4 rows * 32 * 4 = 512 -> 2656.
    # With keep: 2 halo rows * 16 * 4 = 128 held for the segment -> 2784.
    reread = Mapping((Segment(("c1",), 4, tiles=2),
                      *(Segment((n,), 4) for n in LAYERS[1:])))
    keep = Mapping((Segment(("c1",), 4, tiles=2, halos={"input": Halo.KEEP}),
                    *(Segment((n,), 4) for n in LAYERS[1:])))
    c_reread, c_keep = evaluate(tiny, reread), evaluate(tiny, keep)
    s0, k0 = c_reread.segments[0], c_keep.segments[0]
    assert s0.traffic.read_bits["activations"] == 640
    assert k0.traffic.read_bits["activations"] == 512
    assert (s0.peak_gb_bits, s0.peak_tile, s0.peak_layer) == (2656, 0, "c1")
    assert (k0.peak_gb_bits, k0.persistent_gb_bits) == (2784, 128)


def test_state_persistence_reset(tiny) -> None:
    # Reset: S = 4 spilled moves (S - 1) * |V| each way: 2 * 3 * 3072 = 18432 per layer;
    # resident state moves nothing.
    from dataclasses import replace

    from stems_opt.network import StatePersistence

    net = replace(tiny.network, state_persistence=StatePersistence.RESET)
    problem = replace(tiny, network=net)
    spilled = evaluate(problem, Mapping((Segment(LAYERS, 1),)))
    assert spilled.traffic.by_class()["state"] == 2 * 18432
    resident = evaluate(problem, Mapping((Segment(
        LAYERS, 1, states={"c1": StateMode.RESIDENT, "c2": StateMode.RESIDENT}),)))
    assert resident.traffic.by_class()["state"] == 0


def test_compulsory_bound(tiny) -> None:
    # input 512 + output pool 256 + weights 864 + 2 * (3072 + 3072) = 13920: the TB-F optimum
    # of this network reaches it (every activation on chip, state moved once).
    assert compulsory_traffic_bits(tiny.network) == 512 + 256 + 864 + 12288
    best = named_schedule(tiny, "TB-F")
    assert best.cost.traffic_bits == 13920


def test_capacity_violation_is_reported(tiny) -> None:
    # Everything resident in one segment: weights 864 + states 6144 > 4096 bits of GB.
    seg = Segment(LAYERS, 1, weights={"c1": RESIDENT, "c2": RESIDENT},
                  states={"c1": StateMode.RESIDENT, "c2": StateMode.RESIDENT})
    violations = check(tiny, Mapping((seg,)))
    assert [v.code for v in violations] == ["capacity"]
    assert violations[0].bits > violations[0].capacity_bits == 4096


# --- SEW-ResNet-18 at 1 MB: the named schedules by hand --------------------------------

@pytest.fixture(scope="module")
def resnet18():
    problem = load_instance(ROOT / "instances" / "sew_resnet18_1mb.yaml")
    return problem, {name: named_schedule(problem, name) for name in ("ST-LBL", "TB-LBL")}


def test_time_batched_moves_state_once(resnet18) -> None:
    # Tb = T: every stateful layer's V is read once and written once: 2 * 46362624 bits.
    _, runs = resnet18
    assert runs["TB-LBL"].feasible
    assert runs["TB-LBL"].cost.traffic.by_class()["state"] == 2 * 46_362_624


def test_single_timestep_moves_state_every_timestep(resnet18) -> None:
    # ST-LBL (Tb = 1, S = T = 16): a layer whose V is not kept resident moves 2 * T * |V_l|;
    # a resident one moves 2 * |V_l|. The greedy keeps only states that fit.
    problem, runs = resnet18
    run = runs["ST-LBL"]
    seg = run.mapping.segments[0]
    expected = 0
    for layer in problem.network.layers:
        if layer.stateful:
            kept = seg.state(layer.name) is not StateMode.SPILLED
            expected += 2 * layer.state_size_bits * (1 if kept else 16)
    assert run.cost.traffic.by_class()["state"] == expected
    # The 128x128 block-0 states (4 * 64*128*128*12 bits) cannot stay on an 8 Mbit chip.
    for name in ("b0_conv_a", "b0_conv_b", "b0_conv_c"):
        assert seg.state(name) is StateMode.SPILLED
    assert run.cost.traffic_bits > runs["TB-LBL"].cost.traffic_bits
