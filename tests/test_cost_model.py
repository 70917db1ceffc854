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

from stems_opt.cost.evaluation import evaluate
from stems_opt.cost.traffic import compulsory_traffic_bits
from stems_opt.feasibility import check
from stems_opt.heuristics import named_schedule
from stems_opt.io import load_instance
from stems_opt.mapping import RESIDENT, Halo, Mapping, Segment, StateMode

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


# Two readers of one DRAM tensor (the RED-LIF block wiring): a -> b -> b2, a -> c,
# d = b2 + c; input 2x8x8 spikes, T = 4, every conv 3x3 'same' with K 4. Segment
# (b, b2, c, d) with Tb = 4 reads a from DRAM under keep. A row of a along OY for one
# timestep: K 4 * OX 8 * 1 bit = 32 bits, held for Tb = 4 timesteps: 128 bits a row.
TWO_READERS = {
    "name": "two_readers", "timesteps": 4, "defaults": {"neuron": "lif"},
    "input": {"channels": 2, "height": 8, "width": 8, "bits": 1},
    "layers": [
        {"name": "a", "type": "conv", "inputs": ["input"], "loop_dims": {"K": 4, "FY": 3, "FX": 3}},
        {"name": "b", "type": "conv", "inputs": ["a"], "loop_dims": {"K": 4, "FY": 3, "FX": 3}},
        {"name": "b2", "type": "conv", "inputs": ["b"], "loop_dims": {"K": 4, "FY": 3, "FX": 3}},
        {"name": "c", "type": "conv", "inputs": ["a"], "loop_dims": {"K": 4, "FY": 3, "FX": 3}},
        {"name": "d", "type": "add", "inputs": ["b2", "c"]},
    ],
    "blocks": [{"name": "x", "layers": ["a"]}, {"name": "y", "layers": ["b", "b2", "c", "d"]}],
}


def _two_readers(tiny, tiles: int):
    from stems_opt.io import network_from_dict
    from stems_opt.mapping import Placement
    from stems_opt.problem import Problem

    problem = Problem(network_from_dict(TWO_READERS), tiny.hardware)
    on_chip = dict.fromkeys(("b", "b2", "c"), Placement.ON_CHIP)
    block = Segment(("b", "b2", "c", "d"), 4, tiles=tiles, halos={"a": Halo.KEEP},
                    activations=on_chip)
    cost = evaluate(problem, Mapping((Segment(("a",), 4), block)))
    return {t.tensor: t.persistent_bits for t in cost.segments[1].terms
            if t.tensor == "a" and t.persistent_bits}


def test_readers_of_a_dram_tensor_share_its_kept_rows(tiny) -> None:
    # Two tiles. d, c, b2 split evenly: [0, 4, 8); b runs one row ahead for b2's
    # window: b(1) = min(8, 3 + 2) = 5, so b = [0, 5, 8). At the boundary b keeps
    # rows [4, 6) of a (its next window starts at row 5 - 1 = 4, its last ended at
    # 5 + 1 = 6) and c keeps [3, 5). Positions b 0, b2 1, c 2, d 3: while b2 and c
    # run in tile 0 only b has moved on (2 rows); from d of tile 0 to b of tile 1
    # both hold theirs: [4, 6) | [3, 5) = [3, 6), 3 rows, not 2 + 2 = 4.
    # 3 rows * 128 = 384 bits, once for the tensor.
    assert _two_readers(tiny, 2) == {"a": 384}


def test_kept_rows_of_two_readers_are_counted_where_both_live(tiny) -> None:
    # Four tiles: c = [0, 2, 4, 6, 8), b = [0, 3, 5, 7, 8). b keeps [2, 4), [4, 6),
    # [6, 8) at boundaries 1, 2, 3; c keeps [1, 3), [3, 5), [5, 7). After b has run
    # tile 1 and before c has, b holds [4, 6) for its tile 2 and c still [1, 3) for
    # its tile 1: 4 rows live at once (the union at one boundary, [2, 4) | [1, 3),
    # is only 3, and reserving that would be too little). 4 * 128 = 512 bits.
    assert _two_readers(tiny, 4) == {"a": 512}


def test_sub_tile_halo_held_only_while_its_reader_runs(tiny) -> None:
    # (c1, c2) in one tile, Tb = 4, c1 in two sub-tiles [0, 4), [4, 8) reading the
    # input from DRAM under keep; c1 goes to DRAM for c2 and add. Input windows
    # (3x3, pad 1) [0, 5) and [3, 8) share 2 rows: 2 * 16 bits * Tb 4 = 128 bits,
    # held between the two sub-tiles of c1 only; with one tile nothing crosses a tile
    # boundary, so nothing is held for the whole segment.
    # At c1: weights 288 + state sub-tile 4 rows * 384 = 1536 + output sub-tile
    # 4 * 32 * 4 = 512 + new input rows max(5, 3) * 16 * 4 = 320 + the 128 kept = 2784.
    # At c2: weights 576 + state 3072 + output 1024 + c1 read whole 1024 = 5696, the
    # peak (reserving the 128 for the segment would make it 5824).
    m = Mapping((Segment(("c1", "c2"), 4, sub_tiles={"c1": 2}, halos={"input": Halo.KEEP}),
                 Segment(("add", "pool"), 4)))
    seg = evaluate(tiny, m).segments[0]
    assert (seg.persistent_gb_bits, seg.peak_gb_bits, seg.peak_layer) == (0, 5696, "c2")
    read = next(t for t in seg.terms if t.tensor == "input")
    assert read.local.tolist() == [[320 + 128, 0]]


def test_sub_tile_halo_reuses_the_room_of_the_tile_halo(tiny) -> None:
    # c1 alone, Tb = 4, two tiles of two sub-tiles: rows [0, 2), [2, 4) | [4, 6), [6, 8);
    # input windows [0, 3), [1, 5) | [3, 7), [5, 8); 64 bits a row (16 * Tb 4).
    # Across the tile boundary [1, 5) & [3, 7) = 2 rows are held: 128 bits for the
    # segment. Between sub-tiles 2 rows are held too ([1, 3) and [5, 7)), while the
    # tile halo's rows are not (used up by the tile's first sub-tile, or not yet
    # made): they fit in its 128 bits, so nothing is added (adding them would count
    # 256 bits). New rows per sub-tile: 3, 2 | 2, 1 -> the most per tile 3 and 2 rows.
    m = Mapping((Segment(("c1",), 4, tiles=2, sub_tiles={"c1": 2},
                         halos={"input": Halo.KEEP}),
                 *(Segment((n,), 4) for n in LAYERS[1:])))
    seg = evaluate(tiny, m).segments[0]
    assert seg.persistent_gb_bits == 128
    read = next(t for t in seg.terms if t.tensor == "input" and t.layer == "c1")
    assert read.local.tolist() == [[3 * 64], [2 * 64]]


def test_the_formulation_counts_shared_kept_rows_once(tiny) -> None:
    # The MIP holds the rows a DRAM tensor keeps across tiles on the frame (charged
    # with the tensor's halo variable), not on each reader's option: for the
    # two-tile frame of test_readers_of_a_dram_tensor_share_its_kept_rows that is the
    # same 384 bits, and an option of b or c that keeps a's halo differs from the same
    # option re-reading only at the reader's own position (charging the kept rows per
    # option would add them on every row and fail this).
    from stems_opt.formulation.data import KEEP, _FrameBuilder, make_context
    from stems_opt.io import network_from_dict
    from stems_opt.mapping import Order
    from stems_opt.network import Axis
    from stems_opt.problem import Problem

    problem = Problem(network_from_dict(TWO_READERS), tiny.hardware)
    fb = _FrameBuilder(make_context(problem), 1, 4, 4, Axis.OY, 2, Order.TIME_OUTER)
    options = fb.build()
    assert options is not None
    assert fb.halo_bits(options)["a"] == 384
    from stems_opt.formulation.data import REREAD

    for reader, pos in (("b", 0), ("c", 2)):
        def key(o, source):
            ins = tuple((ic.tensor, source if ic.tensor == "a" else ic.source) for ic in o.inputs)
            return o.m, o.weight, o.state, o.output, ins

        reread = {key(o, REREAD): o for o in options[reader]
                  if any(ic.tensor == "a" and ic.source == REREAD for ic in o.inputs)}
        pairs = [(o, reread[key(o, REREAD)]) for o in options[reader]
                 if any(ic.tensor == "a" and ic.source == KEEP for ic in o.inputs)
                 and key(o, REREAD) in reread]
        assert pairs
        for keep, rr in pairs:
            diff = (keep.coeff - rr.coeff).reshape(2, 4)  # tiles x positions
            assert not diff[:, [p for p in range(4) if p != pos]].any()
