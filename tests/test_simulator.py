"""The closed-form cost model against an independent step-by-step simulator.

``tests/simulator.py`` runs each schedule literally (written from
``docs/model.md``, importing nothing from ``stems_opt.cost``); here its
DRAM traffic per tensor class and its peak global-buffer occupancy are
compared, per segment and in total, with :func:`stems_opt.cost.evaluation.evaluate`.

Part 1 checks hand-computed cases (the arithmetic is written next to each).
Part 2 checks random small networks and random valid mappings with hypothesis.
A tensor kept whole on chip but read from DRAM by a reader set to ``dram`` is
charged literally (the read and its buffer); two tests pin that case.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stems_opt.cost.evaluation import evaluate
from stems_opt.cost.geometry import sub_tile_limits
from stems_opt.io import hardware_from_dict, network_from_dict
from stems_opt.layer_specs import build_network
from stems_opt.mapping import (
    RESIDENT,
    STREAMED,
    Halo,
    Mapping,
    Order,
    Placement,
    Segment,
    StateMode,
    WeightChoice,
    check_structure,
)
from stems_opt.network import (
    Axis,
    InputTensor,
    Network,
    StatePersistence,
    divisors,
)
from stems_opt.problem import Problem

sys.path.insert(0, str(Path(__file__).resolve().parent))
import simulator as sim

P, H = Placement, Halo

HARDWARE = hardware_from_dict({
    "name": "test",
    "dram": {"read_pj_per_bit": 10.0, "write_pj_per_bit": 12.0, "bandwidth_bits_per_cycle": 64},
    "global_buffer": {"size": 1 << 30, "read_pj_per_bit": 0.1, "write_pj_per_bit": 0.2},
    "operational_array": {"sizes": {"K": 1}, "accumulate_pj": 0.1, "mac_pj": 0.2},
})


def mismatches(network: Network, mapping: Mapping) -> list[str]:
    """Every difference between the simulator and ``evaluate`` (empty: they agree)."""
    cost = evaluate(Problem(network, HARDWARE), mapping)
    run = sim.simulate(network, mapping)
    out = []
    for i, (sr, sc) in enumerate(zip(run.segments, cost.segments, strict=True)):
        if sr.read_bits != sc.traffic.read_bits:
            out.append(f"segment {i} reads: simulator {sr.read_bits}, "
                       f"cost model {sc.traffic.read_bits}")
        if sr.write_bits != sc.traffic.write_bits:
            out.append(f"segment {i} writes: simulator {sr.write_bits}, "
                       f"cost model {sc.traffic.write_bits}")
        if sr.peak_bits != sc.peak_gb_bits:
            out.append(f"segment {i} peak: simulator {sr.peak_bits} at {sr.peak_at} "
                       f"{sr.peak_buffers}, cost model {sc.peak_gb_bits} at tile "
                       f"{sc.peak_tile} layer {sc.peak_layer}")
    if run.read_bits != cost.traffic.read_bits or run.write_bits != cost.traffic.write_bits:
        out.append(f"total: simulator {run.read_bits} / {run.write_bits}, cost model "
                   f"{cost.traffic.read_bits} / {cost.traffic.write_bits}")
    return out


def assert_agree(network: Network, mapping: Mapping) -> sim.Run:
    assert check_structure(network, mapping) == []
    problems = mismatches(network, mapping)
    assert not problems, "\n".join(problems)
    return sim.simulate(network, mapping)


# ---------------------------------------------------------------------------
# Part 1: hand-built cases
# ---------------------------------------------------------------------------
#
# input 2 x 8 x 8, 1 bit -> conv1 (K 4, 3x3 same, lif) -> conv2 (K 4, 3x3 same, lif)
#                              \------------------------------> add(conv1, conv2) -> pool 2x2/2
# T = 4, axis OY. Sizes (bits):
#   input row 2*8*1 = 16, |input| = 4*2*8*8 = 512
#   conv1: |W| = 4*2*9*4 = 288, |V| = 4*8*8*12 = 3072, vrow = 4*8*12 = 384,
#          row 4*8*1 = 32, |X| = 4*4*64 = 1024
#   conv2: |W| = 4*4*9*4 = 576, |V| = 3072, row 32, |X| = 1024
#   add:   row 32, |X| = 1024 (widest input: 1 bit);  pool: row 4*4 = 16, |X| = 4*4*16 = 256

TINY = {
    "name": "tiny", "timesteps": 4,
    "input": {"channels": 2, "height": 8, "width": 8, "bits": 1},
    "layers": [
        {"name": "conv1", "type": "conv", "inputs": ["input"],
         "loop_dims": {"K": 4, "FY": 3, "FX": 3}},
        {"name": "conv2", "type": "conv", "inputs": ["conv1"],
         "loop_dims": {"K": 4, "FY": 3, "FX": 3}},
        {"name": "add", "type": "add", "inputs": ["conv1", "conv2"]},
        {"name": "pool", "type": "pool", "inputs": ["add"], "kernel": 2, "stride": 2},
    ],
}


def tiny(persistence: str = "streaming") -> Network:
    return network_from_dict({**TINY, "state_persistence": persistence})


def traffic(run: sim.SegmentRun) -> tuple[dict[str, int], dict[str, int]]:
    return run.read_bits, run.write_bits


def rw(w: int = 0, s: int = 0, a: int = 0) -> dict[str, int]:
    return {"weights": w, "state": s, "activations": a}


def test_layer_by_layer_time_batched() -> None:
    net = tiny()
    run = assert_agree(net, Mapping(tuple(Segment((lay.name,), 4) for lay in net.layers)))
    c1, c2, add, pool = run.segments
    # conv1: W streamed once (S = 1, one tile) 288; state spilled with S = 1 moves |V| each way;
    # input read whole 512; conv1 written 1024.
    assert traffic(c1) == (rw(288, 3072, 512), rw(0, 3072, 1024))
    # peak: W 288 + V sub-tile 8 rows * 384 = 3072 + input 8*16*Tb 4 = 512 + output 8*32*4 = 1024
    assert c1.peak_bits == 288 + 3072 + 512 + 1024 == 4896
    assert traffic(c2) == (rw(576, 3072, 1024), rw(0, 3072, 1024))
    assert c2.peak_bits == 576 + 3072 + 1024 + 1024
    # add reads conv1 and conv2 (1024 each), writes 1024; peak = two inputs + output
    assert traffic(add) == (rw(a=2048), rw(a=1024))
    assert add.peak_bits == 3 * 1024
    assert traffic(pool) == (rw(a=1024), rw(a=256))
    assert pool.peak_bits == 1024 + 4 * 16 * 4


@pytest.mark.parametrize(("persistence", "state_each_way"), [
    ("streaming", 4 * 3072),   # spilled, S = 4: S |V| each way
    ("reset", 3 * 3072),       # reset: (S - 1) |V| each way
])
def test_spilled_state_single_timestep(persistence: str, state_each_way: int) -> None:
    net = tiny(persistence)
    segs = (Segment(("conv1",), 1), *(Segment((n,), 4) for n in ("conv2", "add", "pool")))
    run = assert_agree(net, Mapping(segs))
    seg = run.segments[0]
    # streamed weights: S * active * |W| = 4 * 1 * 288; input and output still once
    assert traffic(seg) == (rw(4 * 288, state_each_way, 512), rw(0, state_each_way, 1024))
    # peak: W 288 + V 8 rows * 384 (state has no T) + input 8*16*1 + output 8*32*1
    assert seg.peak_bits == 288 + 3072 + 128 + 256


@pytest.mark.parametrize("persistence", ["streaming", "reset"])
def test_resident_state(persistence: str) -> None:
    net = tiny(persistence)
    segs = (Segment(("conv1",), 1, states={"conv1": StateMode.RESIDENT},
                    weights={"conv1": RESIDENT}),
            Segment(("conv2", "add", "pool"), 4))
    run = assert_agree(net, Mapping(segs))
    seg = run.segments[0]
    v = 3072 if persistence == "streaming" else 0
    # resident weights read once; resident state |V| each way (streaming) or nothing (reset)
    assert traffic(seg) == (rw(288, v, 512), rw(0, v, 1024))
    # peak: W 288 + V 3072 (persistent) + input 128 + output 256 (Tb = 1)
    assert seg.peak_bits == 288 + 3072 + 128 + 256


@pytest.mark.parametrize(("halo", "input_reads", "peak"), [
    # two tiles [0,4) [4,8) of conv1 read input rows [0,5) and [3,8): 10 rows * 16 * T 4 = 640
    # peak: W 288 + V 4 rows*384 + input 5 rows*16*4 + output 4 rows*32*4
    (H.REREAD, 10 * 16 * 4, 288 + 1536 + 320 + 512),
    # keep: rows 3, 4 stay on chip: 8 rows read = 512; kept halo 2 rows * 16 * Tb 4 = 128
    (H.KEEP, 8 * 16 * 4, 288 + 1536 + 320 + 512 + 128),
])
def test_two_tiles_halo(halo: Halo, input_reads: int, peak: int) -> None:
    net = tiny()
    segs = (Segment(("conv1",), 4, tiles=2, halos={"input": halo}),
            Segment(("conv2", "add", "pool"), 4))
    seg = assert_agree(net, Mapping(segs)).segments[0]
    # weights streamed in each of the 2 steps; state spilled with S = 1: |V| each way
    assert traffic(seg) == (rw(2 * 288, 3072, input_reads), rw(0, 3072, 1024))
    assert seg.peak_bits == peak


@pytest.mark.parametrize(("halo", "input_reads", "peak"), [
    # conv2 tiles [0,4) [4,8); conv1 tiles [0,5) [5,8) (conv2's tile 0 needs conv1 rows < 5);
    # input windows [0,6) and [4,8): (6 + 4) rows * 16 * T 4 = 640
    (H.REREAD, 10 * 16 * 4, 3264 + 256),
    # keep: rows 4, 5 stay: 8 rows = 512; kept halo 2 rows * 16 * 4 = 128 more
    (H.KEEP, 8 * 16 * 4, 3264 + 256 + 128),
])
def test_fused_pair(halo: Halo, input_reads: int, peak: int) -> None:
    net = tiny()
    segs = (Segment(("conv1", "conv2"), 4, tiles=2, activations={"conv1": P.ON_CHIP},
                    halos={"input": halo}),
            Segment(("add", "pool"), 4, activations={"add": P.ON_CHIP}))
    run = assert_agree(net, Mapping(segs))
    seg = run.segments[0]
    # weights: 2 steps * (288 + 576); state spilled S = 1: 2 * 3072 each way;
    # conv1 and conv2 are both read by add in the next segment: written 1024 each
    assert traffic(seg) == (rw(2 * 864, 6144, input_reads), rw(0, 6144, 2048))
    # carried rows of conv1 at the tile boundary: made rows < 5, conv2's next row 4 reads
    # from row 3: 2 rows * 32 * Tb 4 = 256 (persistent).
    # local peak at (tile 0, conv2): W 576 + V 4*384 + live conv1 5*32*4 + out 4*32*4
    #   = 576 + 1536 + 640 + 512 = 3264 (conv1 at tile 0: 288 + 1920 + 384 + 640 = 3232)
    assert seg.peak_bits == peak
    # add + pool: add's output on chip (live 8*32*4 = 1024), conv1/conv2 inputs 1024 each
    # at add; at pool: live add 1024 + pool out 4*16*4 = 256
    assert traffic(run.segments[1]) == (rw(a=2048), rw(a=256))
    assert run.segments[1].peak_bits == 3 * 1024


def test_space_outer_tile_resident_keep() -> None:
    net = tiny()
    segs = (Segment(("conv1",), 1, tiles=2, order=Order.SPACE_OUTER,
                    states={"conv1": StateMode.TILE_RESIDENT}, halos={"input": H.KEEP}),
            Segment(("conv2", "add", "pool"), 4))
    seg = assert_agree(net, Mapping(segs)).segments[0]
    # weights: S 4 * 2 tiles * 288; tile_resident: |V| each way;
    # input: per time batch 5 + 3 rows, * 16 * T 4 = 512
    assert traffic(seg) == (rw(8 * 288, 3072, 512), rw(0, 3072, 1024))
    # persistent: largest tile's V 4*384 = 1536 + kept halo at a space_outer tile boundary
    # 2 rows * 16 * T 4 = 128; local: W 288 + input 5*16*1 + output 4*32*1 = 496
    assert seg.peak_bits == 1536 + 128 + 496


def test_chunked_weights_and_sub_tiles() -> None:
    net = tiny()
    segs = (Segment(("conv1",), 4, sub_tiles={"conv1": 2},
                    weights={"conv1": WeightChoice(chunks=2)}),
            Segment(("conv2", "add", "pool"), 4))
    seg = assert_agree(net, Mapping(segs)).segments[0]
    # k > 1: S * active * m * |W| = 1 * 1 * 2 * 288; sub-tiles [0,4) [4,8) read input
    # rows [0,5) and [3,8): 10 * 16 * 4 = 640
    assert traffic(seg) == (rw(2 * 288, 3072, 640), rw(0, 3072, 1024))
    # peak: chunk 288/2 + V sub-tile 4*384 + input 5*16*4 + output sub-tile 4*32*4
    assert seg.peak_bits == 144 + 1536 + 320 + 512


def test_whole_tensor_across_segments() -> None:
    net = tiny()
    segs = (Segment(("conv1",), 4), Segment(("conv2",), 4, inputs={"conv1": P.ON_CHIP}),
            Segment(("add", "pool"), 4, activations={"add": P.ON_CHIP},
                    inputs={"conv1": P.ON_CHIP, "conv2": P.ON_CHIP}))
    run = assert_agree(net, Mapping(segs))
    s0, s1, s2 = run.segments
    # conv1 kept whole on chip in segments 0..2 and never written; conv2 whole in 1..2
    assert traffic(s0) == (rw(288, 3072, 512), rw(0, 3072, 0))
    assert traffic(s1) == (rw(576, 3072, 0), rw(0, 3072, 0))
    assert traffic(s2) == (rw(), rw(a=256))
    # segment 0: whole conv1 1024 + W 288 + V 3072 + input 512 (no output transient)
    assert s0.peak_bits == 1024 + 288 + 3072 + 512
    # segment 1: conv1 + conv2 whole 2048 + W 576 + V 3072
    assert s1.peak_bits == 2048 + 576 + 3072
    # segment 2: 2048 + live add 1024 + pool output 256
    assert s2.peak_bits == 2048 + 1024 + 256


def lag_network(T: int = 1, persistence: str = "streaming") -> Network:
    """3x3 conv -> 1x1 stride-2 conv -> 5x5 conv on 8x8: lags, an empty middle tile at n = 4."""
    return network_from_dict({
        "name": "lag", "timesteps": T, "state_persistence": persistence,
        "input": {"channels": 1, "height": 8, "width": 8},
        "layers": [
            {"name": "a", "type": "conv", "inputs": ["input"],
             "loop_dims": {"K": 2, "FY": 3, "FX": 3}},
            {"name": "b", "type": "conv", "inputs": ["a"], "loop_dims": {"K": 2}, "stride": 2},
            {"name": "c", "type": "conv", "inputs": ["b"], "loop_dims": {"K": 2, "FY": 5, "FX": 5}},
        ]})


def test_tile_geometry_matches_sub_tile_limits() -> None:
    net = lag_network()
    seg = Segment(("a", "b", "c"), 1, tiles=4)
    bounds = sim.tile_bounds(net, seg.layers, Axis.OY, 4)
    # c (the segment output): 0,1,2,3,4; b: window_c(0, b_c).hi = min(4, b_c + 2) = 0,3,4,4,4;
    # a: window_b(0, b_b).hi = min(8, 2 (b_b - 1) + 1) = 0,5,7,7 and b_a(4) = 8:
    # a's tile 2 is empty and its tile 3 is [7, 8), a row b never reads.
    assert bounds == {"c": [0, 1, 2, 3, 4], "b": [0, 3, 4, 4, 4], "a": [0, 5, 7, 7, 8]}
    assert sim.sub_tile_limits(net, seg) == sub_tile_limits(net, seg) == {"a": 1, "b": 1, "c": 1}


@pytest.mark.parametrize("persistence", ["streaming", "reset"])
def test_lag_network_every_decision(persistence: str) -> None:
    """Every combination of segment-wide decisions on the fused lag network, T = 2.

    Covers empty (middle and last) tiles, a 1x1 stride-2 line buffer whose next
    window starts past the last row made (no carried rows), halos at every
    boundary, streamed weights at empty tiles, tile-resident state.
    """
    net = lag_network(2, persistence)
    count = 0
    for n, tb, order, place_a, place_b, halo, state, wc in itertools.product(
            range(1, 5), [1, 2], list(Order), list(Placement), list(Placement), list(Halo),
            list(StateMode), [RESIDENT, STREAMED, WeightChoice(chunks=2)]):
        if order is Order.SPACE_OUTER and (n == 1 or tb == 2):
            continue
        if state is StateMode.TILE_RESIDENT and order is not Order.SPACE_OUTER:
            continue
        base = Segment(("a", "b", "c"), tb, n, Axis.OY, order)
        limits = sub_tile_limits(net, base)
        acts = {"a": place_a, "b": place_b}
        seg = base.replace(
            sub_tiles={name: limits[name] for name in "abc"}, weights=dict.fromkeys("abc", wc),
            states=dict.fromkeys("abc", state), activations=acts,
            halos={t: halo for t in ("input", "a", "b") if acts.get(t, P.DRAM) is P.DRAM})
        assert_agree(net, Mapping((seg,)))
        count += 1
    assert count == 600  # 200 segment shapes x 3 weight choices


# ---------------------------------------------------------------------------
# Known disagreements (cost model vs docs/model.md), pinned with minimal cases
# ---------------------------------------------------------------------------
#
# A tensor kept whole on chip (a later segment reads it 'on_chip') that some
# consumer reads with placement 'dram' (in its own segment, or in a segment
# between its producer's and its last on-chip consumer's). docs/model.md
# section 4 charges that consumer T * row * R_c of DRAM reads ("read from DRAM by
# consumer c") and writes X once because a consumer reads it from DRAM; section 5
# adds the consumer's transient input buffer. The cost model writes X (16 bits
# below) but skips the read and its buffer (segment_terms: `src in ctx.whole`
# -> continue), so it charges a DRAM write that nothing ever reads back.
#
# input 1x4x4 (1 bit), T = 1 -> a (1x1 conv, K 1, stateless) -> b (1x1 conv, K 1, stateless)
#                                  \-----------------------------> c = add(a, b)
# |W| = 4, every tensor 16 bits, rows 4 bits.


def whole_network() -> Network:
    return network_from_dict({
        "name": "whole", "timesteps": 1, "input": {"channels": 1, "height": 4, "width": 4},
        "layers": [
            {"name": "a", "type": "conv", "inputs": ["input"], "loop_dims": {"K": 1},
             "neuron": "stateless"},
            {"name": "b", "type": "conv", "inputs": ["a"], "loop_dims": {"K": 1},
             "neuron": "stateless"},
            {"name": "c", "type": "add", "inputs": ["a", "b"]},
        ]})


def test_whole_tensor_read_from_dram_in_its_own_segment() -> None:
    net = whole_network()
    mapping = Mapping((Segment(("a", "b"), 1, activations={"a": P.DRAM}),
                       Segment(("c",), 1, inputs={"a": P.ON_CHIP, "b": P.DRAM})))
    assert check_structure(net, mapping) == []
    seg = sim.simulate(net, mapping).segments[0]
    # docs: reads W 4 + 4, input 16 + a read by b 16; writes a 16 (in-segment dram) + b 16.
    # Peak at b: whole a 16 + W 4 + a's input buffer 16 + b's output buffer 16 = 52.
    # Cost model: activations read 16 (no read of a), same writes, peak 36.
    assert traffic(seg) == (rw(8, 0, 32), rw(0, 0, 32))
    assert seg.peak_bits == 52
    assert_agree(net, mapping)


def test_whole_tensor_read_from_dram_in_a_later_segment() -> None:
    net = whole_network()
    mapping = Mapping((Segment(("a",), 1), Segment(("b",), 1, inputs={"a": P.DRAM}),
                       Segment(("c",), 1, inputs={"a": P.ON_CHIP, "b": P.DRAM})))
    assert check_structure(net, mapping) == []
    run = sim.simulate(net, mapping)
    # docs: segment 0 writes a (segment 1 reads it from DRAM): 16; segment 1 reads a: 16,
    # peak whole a 16 + W 4 + input buffer 16 + output buffer 16 = 52.
    # Cost model: segment 0 writes 16, segment 1 reads 0, peak 36.
    assert traffic(run.segments[0]) == (rw(4, 0, 16), rw(0, 0, 16))
    assert traffic(run.segments[1]) == (rw(4, 0, 16), rw(0, 0, 16))
    assert run.segments[1].peak_bits == 52
    assert_agree(net, mapping)


# ---------------------------------------------------------------------------
# Part 2: random networks and mappings
# ---------------------------------------------------------------------------

NEURONS = ["lif", "plif", "if", "stateless", "none"]


def _conv_spec(draw: st.DrawFn, name: str, src: str, shape: tuple[int, int, int],
               same_shape: bool = False) -> tuple[dict, tuple[int, int, int]]:
    c, y, x = shape
    k = draw(st.sampled_from([1, 3]))
    s = 1 if same_shape else draw(st.sampled_from([1, 2]))
    pad = "same" if same_shape or k == 1 else draw(st.sampled_from(["same", "same", 0]))
    p = (k - 1) // 2 if pad == "same" else 0
    if k > min(y, x) + 2 * p:
        k, pad, p = 1, "same", 0
    kk = c if same_shape else draw(st.integers(1, 4))
    spec = {"name": name, "type": "conv", "inputs": [src], "loop_dims": {"K": kk, "FY": k, "FX": k},
            "stride": s, "padding": pad, "neuron": draw(st.sampled_from(NEURONS))}
    return spec, (kk, (y + 2 * p - k) // s + 1, (x + 2 * p - k) // s + 1)


@st.composite
def networks(draw: st.DrawFn) -> Network:
    """2-5 layers: convs (1x1 or 3x3, stride 1 or 2), pools, residual adds, flatten/linear."""
    T = draw(st.sampled_from([1, 2, 4]))
    c0 = draw(st.integers(1, 4))
    h, w = draw(st.integers(4, 12)), draw(st.integers(4, 12))
    bits = draw(st.sampled_from([1, 1, 4]))
    shapes = {"input": (c0, h, w)}
    specs: list[dict] = []
    n_layers = draw(st.integers(2, 5))
    tail = draw(st.sampled_from(["none", "none", "none", "flatten", "linear"]))
    budget = max(1, n_layers - {"none": 0, "flatten": 1, "linear": 2}[tail])
    while len(specs) < budget:
        names = list(shapes)
        last = names[-1]
        src = draw(st.sampled_from([last, last, *names]))
        shape = shapes[src]
        kind = draw(st.sampled_from(["conv", "conv", "pool", "add", "add"]))
        name = f"l{len(specs)}"
        if kind == "add":
            partners = [t for t in names if t != src and shapes[t] == shape]
            if partners:
                other = draw(st.sampled_from(partners))
                specs.append({"name": name, "type": "add", "inputs": [src, other]})
                shapes[name] = shape
                continue
            if budget - len(specs) >= 2:  # a residual block: same-shape conv, then add
                spec, shapes[name] = _conv_spec(draw, name, src, shape, same_shape=True)
                specs.append(spec)
                add = f"l{len(specs)}"
                specs.append({"name": add, "type": "add", "inputs": [src, name]})
                shapes[add] = shape
                continue
            kind = "conv"
        if kind == "pool" and min(shape[1:]) >= 3:
            k = draw(st.sampled_from([2, 3]))
            s = draw(st.sampled_from([1, 2]))
            pad = draw(st.sampled_from([0, (k - 1) // 2]))
            specs.append({"name": name, "type": "pool", "inputs": [src], "kernel": k,
                          "stride": s, "padding": pad})
            shapes[name] = (shape[0], (shape[1] + 2 * pad - k) // s + 1,
                            (shape[2] + 2 * pad - k) // s + 1)
            continue
        spec, shapes[name] = _conv_spec(draw, name, src, shape)
        specs.append(spec)
    if tail in ("flatten", "linear"):
        specs.append({"name": "flat", "type": "flatten", "inputs": [list(shapes)[-1]]})
    if tail == "linear":
        specs.append({"name": "fc", "type": "linear", "inputs": ["flat"],
                      "loop_dims": {"K": draw(st.integers(1, 4))},
                      "neuron": draw(st.sampled_from(NEURONS))})
    persistence = draw(st.sampled_from(list(StatePersistence)))
    outputs: list[str] = []
    if draw(st.integers(0, 3)) == 0:  # explicit outputs: any non-empty subset of the layers
        names = [spec["name"] for spec in specs]
        outputs = sorted(draw(st.sets(st.sampled_from(names), min_size=1)), key=names.index)
    return build_network("random", T, InputTensor("input", c0, h, w, bits), specs,
                         state_persistence=persistence, outputs=outputs)


@st.composite
def mappings(draw: st.DrawFn, net: Network) -> Mapping:
    names = [lay.name for lay in net.layers]
    T = net.timesteps
    cuts = sorted(draw(st.sets(st.integers(1, len(names) - 1))) if len(names) > 1 else [])
    runs = [tuple(names[a:b]) for a, b in zip([0, *cuts], [*cuts, len(names)], strict=True)]
    segs = []
    for layers in runs:
        inside = set(layers)
        lays = [net.layer(n) for n in layers]
        tb = draw(st.sampled_from(divisors(T)))
        axis = draw(st.sampled_from([Axis.OY, Axis.OX]))
        max_n = min(lay.extent(axis) for lay in lays)
        # tile counts near the extent make empty (and empty middle) tiles: draw them often
        n = draw(st.one_of(st.integers(1, max_n), st.sampled_from([max_n, max(1, max_n - 1)])))
        order = Order.SPACE_OUTER if n > 1 and tb < T and draw(st.booleans()) \
            else Order.TIME_OUTER
        base = Segment(layers, tb, n, axis, order)
        limits = sub_tile_limits(net, base)
        sub_tiles = {name: draw(st.integers(1, limits[name])) for name in layers}
        weights = {}
        for lay in lays:
            if lay.has_weights:
                if draw(st.booleans()):
                    weights[lay.name] = RESIDENT
                else:
                    weights[lay.name] = WeightChoice(chunks=draw(st.sampled_from(divisors(lay.k))))
        state_modes = [StateMode.RESIDENT, StateMode.SPILLED]
        if order is Order.SPACE_OUTER:
            state_modes += [StateMode.TILE_RESIDENT, StateMode.TILE_RESIDENT]
        states = {lay.name: draw(st.sampled_from(state_modes)) for lay in lays if lay.stateful}
        activations = {lay.name: draw(st.sampled_from([P.ON_CHIP, P.DRAM])) for lay in lays
                       if any(c in inside for c in net.consumers(lay.name))}
        inputs = {}
        for lay in lays:
            for src in lay.inputs:
                if src not in inside:
                    inputs[src] = P.DRAM if src == net.input.name else \
                        draw(st.sampled_from([P.ON_CHIP, P.DRAM]))
        dram_read = [t for t, p in {**activations, **inputs}.items() if p is P.DRAM]
        halos = {t: draw(st.sampled_from([H.KEEP, H.REREAD])) for t in sorted(dram_read)}
        segs.append(base.replace(sub_tiles=sub_tiles, weights=weights, states=states,
                                 activations=activations, inputs=inputs, halos=halos))
    return Mapping(tuple(segs))


@st.composite
def cases(draw: st.DrawFn) -> tuple[Network, Mapping]:
    net = draw(networks())
    return net, draw(mappings(net))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_random_agreement(case: tuple[Network, Mapping]) -> None:
    net, mapping = case
    assert check_structure(net, mapping) == []
    for seg in mapping.segments:
        assert sim.sub_tile_limits(net, seg) == sub_tile_limits(net, seg)
    problems = mismatches(net, mapping)
    assert not problems, "\n".join(problems)
