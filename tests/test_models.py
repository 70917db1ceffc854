"""The bundled model and instance files: they load, and their totals match BENCHMARKS.md.

Every expected total below is worked out by hand in a comment from the layer
tables of BENCHMARKS.md (the project's reference notes on the STEMS study),
independently of both ``stems_opt`` and ``models/generate.py``. Units: bits;
1 Mbit = 1e6 bits, 1 KB = 8192 bits. The generated files must equal what
``models/generate.py`` writes, so nobody edits them by hand.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from stems_opt.io import load_hardware, load_instance, load_network, network_from_dict
from stems_opt.network import LayerKind, Network, NeuronKind, StatePersistence
from stems_opt.problem import Objective

REPO = Path(__file__).resolve().parent.parent
NETWORKS = REPO / "models" / "networks"
HARDWARE = REPO / "models" / "hardware"
INSTANCES = REPO / "instances"
KB = 8192


@cache
def network(stem: str) -> Network:
    """Load ``models/networks/<stem>.yaml`` once per test session."""
    return load_network(NETWORKS / f"{stem}.yaml")


@cache
def generator() -> ModuleType:
    """``models/generate.py`` imported as a module (it is a script, not a package)."""
    path = REPO / "models" / "generate.py"
    spec = importlib.util.spec_from_file_location("models_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@cache
def generated() -> dict[str, str]:
    """The generator's output with default parameters (computed once)."""
    return dict(generator().generated_files())


def count(net: Network, kind: LayerKind) -> int:
    return sum(layer.kind is kind for layer in net.layers)


def near(value: float, target: float, rel: float) -> bool:
    return abs(value - target) <= rel * target


# ---------------------------------------------------------------------------
# Every file loads
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(NETWORKS.glob("*.yaml")), ids=lambda p: p.name)
def test_network_files_load(path: Path) -> None:
    net = network(path.stem)
    assert net.name == path.stem
    assert net.layers


@pytest.mark.parametrize("path", sorted(HARDWARE.glob("*.yaml")), ids=lambda p: p.name)
def test_hardware_files_load(path: Path) -> None:
    hw = load_hardware(path)
    assert hw.name == path.stem


@pytest.mark.parametrize("path", sorted(INSTANCES.glob("*.yaml")), ids=lambda p: p.name)
def test_instance_files_load(path: Path) -> None:
    problem = load_instance(path)
    assert problem.name == path.stem
    assert problem.objective is Objective.TRAFFIC


def test_required_files_exist() -> None:
    required = [
        "instances/sew_resnet18_1mb.yaml", "instances/sew_resnet18_5plif_1mb.yaml",
        "instances/red_lif_1mb.yaml", "instances/sew_resnet152_1mb.yaml",
        *(f"instances/tiny_{t}.yaml" for t in ("chain", "residual", "reset", "ann_snn", "linear")),
        *(f"models/hardware/edge_{s}.yaml"
          for s in ("128kb", "256kb", "384kb", "512kb", "1mb", "2mb")),
        "models/hardware/tiny.yaml",
    ]
    assert [p for p in required if not (REPO / p).is_file()] == []


# ---------------------------------------------------------------------------
# SEW-ResNet-18
# ---------------------------------------------------------------------------

def test_sew_resnet18_structure() -> None:
    net = network("sew_resnet18")
    # 16 convs (3 + 2 + 2 + 2 + 3 + 2 + 2), 7 adds, 7 max pools = 30 layers
    assert (count(net, LayerKind.CONV), count(net, LayerKind.ADD),
            count(net, LayerKind.POOL)) == (16, 7, 7)
    assert len(net.layers) == 30
    assert net.timesteps == 16
    assert (net.input.channels, net.input.height, net.input.width, net.input.bits) == \
        (2, 128, 128, 4)
    assert net.output_names == ("b6_pool",)
    blocks = net.block_list
    assert [b.name for b in blocks] == [f"b{i}" for i in range(7)]
    assert all(net.layer(b.layers[-1]).kind is LayerKind.POOL for b in blocks)
    # the add sums the last two convs of its block (STEMS wiring), 1-bit output
    assert net.layer("b0_add").inputs == ("b0_conv_b", "b0_conv_c")
    assert net.layer("b1_add").inputs == ("b1_conv_a", "b1_conv_b")
    assert net.layer("b4_add").inputs == ("b4_conv_b", "b4_conv_c")
    assert all(layer.output_bits == 1 for layer in net.layers)
    # only b0_conv_a reads multi-bit (4-bit) input, so only it multiply-accumulates
    assert [layer.name for layer in net.layers if layer.uses_mac] == ["b0_conv_a"]
    assert net.layer("b4_conv_a").fy == 1 and net.layer("b4_conv_a").c == 64
    assert net.layer("b6_pool").oy == 1


def test_sew_resnet18_weights() -> None:
    # weights per block (K*C*FY*FX):
    #   b0: 64*2*1 + 2*64*64*9    = 128 + 73728      =    73856
    #   b1, b2, b3: 2*64*64*9 = 73728 each (x3)      =   221184
    #   b4: 128*64*1 + 2*128*128*9 = 8192 + 294912   =   303104
    #   b5, b6: 2*128*128*9 = 294912 each (x2)       =   589824
    #   sum 1187968 weights x 4 bit                  =  4751872 bits (4.75 Mbit)
    bits = 4 * (64 * 2 + 2 * 64 * 64 * 9 + 3 * 73728 + 128 * 64 + 2 * 128 * 128 * 9
                + 2 * 294912)
    assert bits == 4_751_872
    assert near(bits, 4.75e6, 0.01)
    for n in range(1, 8):
        stem = "sew_resnet18" if n == 7 else f"sew_resnet18_{n}plif"
        assert network(stem).weight_size_bits == bits


# neurons per block (K*OY*OX summed over the block's convs):
#   b0: 3*64*128*128 = 3145728   b1: 2*64*64*64 = 524288   b2: 2*64*32*32 = 131072
#   b3: 2*64*16*16   =   32768   b4: 3*128*8*8  =  24576   b5: 2*128*4*4  =   4096
#   b6: 2*128*2*2    =    1024
# NPLIF keeps the last N blocks; state bits = 12 * neurons:
#   7PLIF 3863552 neurons = 46362624 bits = 5659.5 KB (46.36 Mbit)
#   6PLIF  717824         =  8613888      = 1051.5 KB
#   5PLIF  193536         =  2322432      =  283.5 KB   (5659.5 / 283.5 = 19.96: the "20x")
#   4PLIF   62464         =   749568      =   91.5 KB
#   3PLIF   29696         =   356352      =   43.5 KB
#   2PLIF    5120         =    61440      =    7.5 KB
#   1PLIF    1024         =    12288      =    1.5 KB
SEW18_STATE_KB = {7: 5659.5, 6: 1051.5, 5: 283.5, 4: 91.5, 3: 43.5, 2: 7.5, 1: 1.5}


@pytest.mark.parametrize("n", sorted(SEW18_STATE_KB))
def test_sew_resnet18_state_per_variant(n: int) -> None:
    net = network("sew_resnet18" if n == 7 else f"sew_resnet18_{n}plif")
    assert net.state_size_bits == SEW18_STATE_KB[n] * KB  # exact: every value is k/2 KB
    stateful_blocks = [b.name for b in net.block_list
                       if any(net.layer(name).stateful for name in b.layers)]
    assert stateful_blocks == [f"b{i}" for i in range(7 - n, 7)]
    for layer in net.layers:
        if layer.has_weights:
            expected = NeuronKind.PLIF if int(layer.name[1]) >= 7 - n else NeuronKind.STATELESS
            assert layer.neuron is expected


def test_sew_resnet18_state_total() -> None:
    bits = 12 * (3 * 64 * 128 * 128 + 2 * 64 * 64 * 64 + 2 * 64 * 32 * 32 + 2 * 64 * 16 * 16
                 + 3 * 128 * 8 * 8 + 2 * 128 * 4 * 4 + 2 * 128 * 2 * 2)
    assert bits == 46_362_624 == network("sew_resnet18").state_size_bits
    assert near(bits, 46.36e6, 0.001)


def test_sew_resnet18_operations() -> None:
    # synaptic ops per timestep, K*C*FY*FX*OY*OX:
    #   b0: (64*2 + 2*64*64*9) * 128*128 = 73856 * 16384  = 1210056704
    #   b1: 73728 * 64*64   =  301989888
    #   b2: 73728 * 32*32   =   75497472
    #   b3: 73728 * 16*16   =   18874368
    #   b4: 303104 * 8*8    =   19398656
    #   b5: 294912 * 4*4    =    4718592
    #   b6: 294912 * 2*2    =    1179648
    #   sum 1631715328 per timestep x T=16 = 26107445248 (about 26.1 G accumulates;
    #   b0_conv_a's 2097152 * 16 = 33554432 of them are MACs on the 4-bit input)
    per_t = (73856 * 128 * 128 + 73728 * (64 * 64 + 32 * 32 + 16 * 16) + 303104 * 8 * 8
             + 294912 * (4 * 4 + 2 * 2))
    assert per_t * 16 == 26_107_445_248 == network("sew_resnet18").operations
    assert near(per_t * 16, 26.1e9, 0.01)


# ---------------------------------------------------------------------------
# RED-LIF
# ---------------------------------------------------------------------------

RED_ANN = ["conv0", "conv1", "conv2", "conv3", "add4", "conv5", "conv6", "add7", "conv8",
           "conv9", "conv10", "add11"]
RED_LIF = ["lif12", "lif13", "lif14", "lif15", "lif16"]


def test_red_lif_structure() -> None:
    net = network("red_lif")
    assert [layer.name for layer in net.layers] == RED_ANN + RED_LIF
    assert net.timesteps == 12
    assert (net.input.channels, net.input.height, net.input.width, net.input.bits) == \
        (6, 360, 640, 4)
    assert net.output_names == ("lif16",)
    assert [list(b.layers) for b in net.block_list] == [
        RED_ANN[0:5], RED_ANN[5:8], RED_ANN[8:12], *([name] for name in RED_LIF)]
    for name in RED_ANN:
        layer = net.layer(name)
        assert layer.neuron is NeuronKind.NONE and layer.output_bits == 4
        if layer.has_weights:
            assert layer.psum_bits == 12
    for name in RED_LIF:
        layer = net.layer(name)
        assert layer.neuron is NeuronKind.LIF and layer.stateful and layer.output_bits == 1
    assert net.layer("add4").inputs == ("conv2", "conv3")
    assert net.layer("add7").inputs == ("add4", "conv6")
    assert net.layer("add11").inputs == ("conv9", "conv10")
    assert net.layer("conv3").inputs == ("conv0",) and net.layer("conv10").inputs == ("add7",)
    assert (net.layer("conv0").pad_y, net.layer("conv1").pad_y) == (3, 1)
    assert [(net.layer(n).oy, net.layer(n).ox) for n in RED_LIF] == \
        [(45, 80), (23, 40), (12, 20), (6, 10), (3, 5)]
    assert net.layer("lif12").input_bits == 4  # the first LIF layer reads 4-bit activations


def test_red_lif_weights_and_state() -> None:
    net = network("red_lif")
    # weights K*C*FY*FX:
    #   0: 32*6*49 = 9408       1: 64*32*9 = 18432    2: 64*64*9 = 36864   3: 64*32*9 = 18432
    #   5, 6: 36864 each        8: 128*64*9 = 73728   9: 128*128*9 = 147456  10: 73728
    #   12: 256*128*9 = 294912  13-16: 256*256*9 = 589824 each
    #   sum 9408 + 18432 + 36864 + 18432 + 73728 + 73728 + 147456 + 73728 + 294912
    #       + 4*589824 = 3105984 weights x 4 bit = 12423936 bits (12.42 Mbit, 1516.6 KB)
    weights = 4 * (9408 + 18432 + 36864 + 18432 + 2 * 36864 + 73728 + 147456 + 73728
                   + 294912 + 4 * 589824)
    assert weights == 12_423_936 == net.weight_size_bits
    assert near(weights, 12.42e6, 0.01)
    # more than a 1 MB (1024 KB = 8388608 bits) buffer holds; BENCHMARKS.md's "1.52 MB" is
    # 12423936 / 8192 = 1516.6 KB read as 1.52 thousand KB
    assert weights > 1024 * KB
    assert round(weights / KB / 1000, 2) == 1.52
    # state 12 * K*OY*OX of layers 12-16:
    #   256 * (45*80 + 23*40 + 12*20 + 6*10 + 3*5) = 256 * (3600 + 920 + 240 + 60 + 15)
    #   = 256 * 4835 = 1237760 neurons x 12 bit = 14853120 bits (14.85 Mbit)
    state = 12 * 256 * (45 * 80 + 23 * 40 + 12 * 20 + 6 * 10 + 3 * 5)
    assert state == 14_853_120 == net.state_size_bits
    assert near(state, 14.85e6, 0.01)


def test_red_lif_operations_and_input() -> None:
    net = network("red_lif")
    T = 12
    # MACs (multi-bit input: layers 0-12), K*C*FY*FX * OY*OX per timestep:
    #   0: 9408 * 180*320 = 541900800          1: 18432 * 57600 = 1061683200
    #   2: 36864 * 90*160 = 530841600          3: 18432 * 14400 =  265420800
    #   5, 6: 2 * 36864 * 14400 = 1061683200   8: 73728 * 14400 = 1061683200
    #   9: 147456 * 14400 = 2123366400        10: 73728 * 14400 = 1061683200
    #   12: 294912 * 45*80 = 1061683200
    #   sum 8769945600 per timestep x 12 = 105239347200 (about 105 G MACs)
    macs = T * (9408 * 57600 + 18432 * 57600 + (36864 + 18432 + 2 * 36864 + 73728 + 147456
                                                + 73728) * 14400 + 294912 * 3600)
    assert macs == 105_239_347_200
    assert sum(layer.operations(T) for layer in net.layers if layer.uses_mac) == macs
    assert near(macs, 105e9, 0.01)
    # accumulates (spike input: layers 13-16), 589824 * OY*OX per timestep:
    #   589824 * (23*40 + 12*20 + 6*10 + 3*5) = 589824 * 1235 = 728432640
    #   x 12 = 8741191680 (about 8.7 G accumulates)
    acs = T * 589824 * (23 * 40 + 12 * 20 + 6 * 10 + 3 * 5)
    assert acs == 8_741_191_680
    assert sum(layer.operations(T) for layer in net.layers
               if layer.has_weights and not layer.uses_mac) == acs
    assert near(acs, 8.7e9, 0.01)
    assert net.operations == macs + acs
    # input: 12 * 6 * 360 * 640 * 4 bit = 66355200 bits (66.4 Mbit)
    assert net.tensor_size_bits("input") == 12 * 6 * 360 * 640 * 4 == 66_355_200
    assert near(66_355_200, 66.4e6, 0.001)


# ---------------------------------------------------------------------------
# SEW-ResNet-152 (no totals in BENCHMARKS.md: checked against ResNet-152's)
# ---------------------------------------------------------------------------

def test_sew_resnet152() -> None:
    net = network("sew_resnet152")
    # convs: stem 1 + 3 per bottleneck * (3 + 8 + 36 + 3 = 50) + 4 downsamples = 155;
    # adds: one per bottleneck = 50; pools: the stem's 1 -> 206 layers
    assert (count(net, LayerKind.CONV), count(net, LayerKind.ADD),
            count(net, LayerKind.POOL)) == (155, 50, 1)
    assert len(net.layers) == 206 and len(net.block_list) == 51
    assert net.timesteps == 4 and net.input.bits == 8
    assert net.output_names == ("s4_b2_add",)
    assert all(layer.neuron is NeuronKind.IF for layer in net.layers if layer.has_weights)
    assert (net.layer("stem_pool").oy, net.layer("s4_b2_add").oy) == (56, 7)
    assert net.layer("s2_b0_conv2").stride_y == 2 and net.layer("s2_b0_conv1").stride_y == 1
    assert net.layer("s3_b1_add").inputs == ("s3_b1_conv3", "s3_b0_add")
    # weights: torchvision's ResNet-152 has 60192808 parameters, of which fc is
    # 2048*1000 + 1000 = 2049000 and batch norm 2 * (64 + 6 * (3*64 + 8*128 + 36*256 + 3*512)
    # + 4 * (64 + 128 + 256 + 512)) = 2 * (64 + 71808 + 3840) = 151424, leaving
    # 57992384 conv weights x 4 bit = 231969536 bits
    assert net.weight_size_bits == 4 * (60_192_808 - 2_049_000 - 151_424) == 231_969_536
    # state neurons: stem 64*112*112 = 802816
    #   stage 1 (56x56 = 3136): 3 * 384 * 3136 + down 256 * 3136  = 3612672 + 802816
    #   stage 2: b0 128*3136 + 128*784 + 512*784 + down 512*784   = 1304576
    #            b1-b7: 7 * 768 * 784                             = 4214784
    #   stage 3: b0 256*784 + 256*196 + 1024*196 + down 1024*196  =  652288
    #            b1-b35: 35 * 1536 * 196                          = 10536960
    #   stage 4: b0 512*196 + 512*49 + 2048*49 + down 2048*49     =  326144
    #            b1-b2: 2 * 3072 * 49                             =  301056
    #   sum 22554112 neurons x 12 bit = 270649344 bits
    neurons = (802816 + 3612672 + 802816 + 1304576 + 4214784 + 652288 + 10536960 + 326144
               + 301056)
    assert net.state_size_bits == 12 * neurons == 270_649_344
    # ops: ResNet-152's 11.51 G conv multiply-accumulates per image (torchvision's
    # "11.51 GFLOPS" includes fc's 2048000) -> 11511578624 per timestep x T=4
    assert net.operations == 4 * 11_511_578_624
    assert near(11_511_578_624 + 2_048_000, 11.51e9, 0.001)
    assert [layer.name for layer in net.layers if layer.uses_mac] == ["stem_conv"]


# ---------------------------------------------------------------------------
# Tiny test networks and hardware
# ---------------------------------------------------------------------------

def test_tiny_networks() -> None:
    # sizes are worked out in each file's header comment
    expected = {  # stem: (layers, weight bits, state bits)
        "tiny_chain": (3, 896, 7680),
        "tiny_residual": (4, 864, 6144),
        "tiny_reset": (2, 864, 3840),
        "tiny_ann_snn": (3, 1440, 6144),
        "tiny_linear": (4, 2336, 3168),
    }
    for stem, (n_layers, weights, state) in expected.items():
        net = network(stem)
        assert (len(net.layers), net.weight_size_bits, net.state_size_bits) == \
            (n_layers, weights, state), stem
        assert net.timesteps == 4
        assert net.state_persistence is (StatePersistence.RESET if stem == "tiny_reset"
                                         else StatePersistence.STREAMING)
    ann = network("tiny_ann_snn")
    assert [layer.uses_mac for layer in ann.layers] == [True, True, False]
    assert ann.layer("a1").neuron is NeuronKind.NONE and ann.layer("a1").output_bits == 4
    assert [layer.kind for layer in network("tiny_linear").layers] == \
        [LayerKind.CONV, LayerKind.POOL, LayerKind.FLATTEN, LayerKind.LINEAR]
    tiny = load_hardware(HARDWARE / "tiny.yaml")
    assert tiny.gb_capacity_bits == 4096
    assert tiny.array.pe_count == 8


# ---------------------------------------------------------------------------
# The reference accelerator and its variants
# ---------------------------------------------------------------------------

EDGE_KB = {"edge_128kb": 128, "edge_256kb": 256, "edge_384kb": 384, "edge_512kb": 512,
           "edge_1mb": 1024, "edge_2mb": 2048}


@pytest.mark.parametrize("stem", sorted(EDGE_KB))
def test_edge_accelerator(stem: str) -> None:
    hw = load_hardware(HARDWARE / f"{stem}.yaml")
    assert hw.gb_capacity_bits == EDGE_KB[stem] * KB  # 1 MB = 1024 * 8192 = 8388608 bits
    gb, dram = hw.global_buffer, hw.dram
    assert (gb.read_pj_per_bit, gb.write_pj_per_bit) == (0.13, 0.175)
    assert (dram.read_pj_per_bit, dram.write_pj_per_bit) == (10.94, 11.72)
    assert hw.dram_bandwidth_bits_per_cycle == 64
    # 700 / 750 pJ per 64-bit word
    assert near(dram.read_pj_per_bit * 64, 700, 0.001)
    assert near(dram.write_pj_per_bit * 64, 750, 0.001)
    assert hw.array.unrolling == {"K": 32, "C": 2, "OY": 16, "OX": 1}
    assert hw.array.pe_count == 1024
    assert (hw.array.accumulate_pj, hw.array.mac_pj, hw.array.neuron_update_pj) == \
        (0.07, 0.16, 0.1)
    assert [(lv.name, lv.capacity_bits, lv.operands, lv.read_pj_per_bit, lv.write_pj_per_bit)
            for lv in hw.inner_levels] == [
        ("weight_buffer", 32 * KB, ("W",), 0.10, 0.12),
        ("input_buffer", 16 * KB, ("I",), 0.10, 0.12),
    ]
    assert hw.clock_hz == 500e6
    assert EDGE_KB["edge_1mb"] * KB == 8_388_608


# ---------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------

def test_generator_is_deterministic() -> None:
    first, second = generated(), generator().generated_files()
    assert list(first.items()) == list(second.items())  # same files, same order, same text
    assert all(text.endswith("\n") and "\t" not in text for text in first.values())


def test_generated_files_are_committed_unchanged() -> None:
    files = generated()
    assert sorted(files) == sorted(
        [f"models/networks/sew_resnet18{s}.yaml"
         for s in ("", "_6plif", "_5plif", "_4plif", "_3plif", "_2plif", "_1plif")]
        + ["models/networks/sew_resnet152.yaml", "models/networks/red_lif.yaml"]
        + [f"models/hardware/{stem}.yaml" for stem in EDGE_KB])
    stale = [rel for rel, text in files.items()
             if (REPO / rel).read_text(encoding="utf-8") != text]
    assert stale == [], "rerun `python models/generate.py` (do not edit generated files)"


def test_generator_parameters() -> None:
    gen = generator()
    net = network_from_dict(yaml.safe_load(gen.sew_resnet152(timesteps=8)))
    assert net.timesteps == 8 and len(net.layers) == 206
    for bad in (0, 8):
        with pytest.raises(ValueError):
            gen.sew_resnet18(bad)
    assert gen.main(["--check"]) == 0


def test_generator_flow_round_trips() -> None:
    flow = generator().flow
    value = {"name": "b0_conv_a", "inputs": ["input"], "yes": "no", "n": None, "t": True,
             "x": 0.175, "s": "two words: a, b", "k": 64, "nested": {"O": 4, "L": [1, [2]]}}
    assert yaml.safe_load(flow(value)) == value
    assert flow({"name": "b0_conv_a", "padding": "same"}) == "{name: b0_conv_a, padding: same}"
