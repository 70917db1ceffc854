"""NIR graphs built with numpy, in the shape of each framework's exports.

Each builder mimics what its framework writes (node names, neuron types,
parameter shapes, whether the Input carries a batch dimension, how residual
sums and flattens appear), small enough for the tiny test accelerator
(``models/hardware/tiny.yaml``). The expected network of each is written out
in the test that reads it.
"""

from __future__ import annotations

import itertools

import nir
import numpy as np

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _conv(c_out: int, c_in: int, k: int, stride: int = 1, padding: int | str = 1,
          groups: int = 1, input_shape: tuple[int, int] = (8, 8)) -> nir.Conv2d:
    # Exports record the spatial input shape; nir.write cannot store a missing one.
    return nir.Conv2d(input_shape=input_shape, weight=_w(c_out, c_in // groups, k, k),
                      stride=stride, padding=padding, dilation=1, groups=groups,
                      bias=np.zeros(c_out, np.float32))


def _lif(shape: tuple[int, ...]) -> nir.LIF:
    ones = np.ones(shape, np.float32)
    return nir.LIF(tau=ones * 0.02, r=ones, v_leak=ones * 0, v_threshold=ones, v_reset=ones * 0)


def _scalar_lif() -> nir.LIF:
    # nir.write refuses 0-d arrays, so "scalar" parameters arrive as shape (1,).
    one = np.ones(1, np.float32)
    return nir.LIF(tau=one * 0.02, r=one, v_leak=one * 0, v_threshold=one, v_reset=one * 0)


def snntorch_like() -> nir.NIRGraph:
    """snnTorch: modules named by index (so "10" sorts before "2"), the Input with a
    leading batch dimension, scalar Leaky parameters as LIF, Synaptic as CubaLIF,
    Linear exported as Affine after a Flatten.

    Network: input 1x2x8x8 -> 0 Conv2d(4, 3x3, pad 1) + 1 LIF -> 2 Conv2d(4, 3x3,
    stride 2, pad 1) + 3 CubaLIF -> 4 Flatten (64) -> 5 Affine(10) + 6 LIF ... the
    indices go up to 10 through two more Affine + LIF pairs.
    """
    one = np.ones(1, np.float32)
    cuba = nir.CubaLIF(tau_syn=one * 0.01, tau_mem=one * 0.02, r=one, v_leak=one * 0,
                       v_threshold=one, v_reset=one * 0, w_in=one)
    nodes = {
        "input": nir.Input(input_type=np.array([1, 2, 8, 8])),
        "0": _conv(4, 2, 3), "1": _scalar_lif(),
        "2": _conv(4, 4, 3, stride=2), "3": cuba,
        "4": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=1),
        "5": nir.Affine(weight=_w(16, 64), bias=_w(16)), "6": _scalar_lif(),
        "7": nir.Affine(weight=_w(12, 16), bias=_w(12)), "8": _scalar_lif(),
        "9": nir.Affine(weight=_w(10, 12), bias=_w(10)), "10": _scalar_lif(),
        "output": nir.Output(output_type=np.array([1, 10])),
    }
    order = ["input", *map(str, range(11)), "output"]
    edges = list(itertools.pairwise(order))
    # snnTorch writes the edges of each module in turn, not in any sorted order
    edges = edges[::2] + edges[1::2]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def spikingjelly_like() -> nir.NIRGraph:
    """SpikingJelly: a SEW residual block (the spikes of two branches summed by two
    edges into the next conv), IF neurons, AvgPool2d, a Flatten and an Affine
    classifier; per-neuron parameter arrays; no batch dimension.

    Network: input 2x8x8 -> conv1(4) + sn1 IF -> conv2(4) + sn2 IF, and sn1 + sn2
    summed into conv3's input (add "conv3_add") -> conv3(4) + sn3 LIF -> pool
    AvgPool2d 2x2 -> flatten (64) -> fc Affine(10) + sn4 LIF -> output.
    """
    def if_(shape: tuple[int, ...]) -> nir.IF:
        ones = np.ones(shape, np.float32)
        return nir.IF(r=ones, v_threshold=ones, v_reset=ones * 0)

    nodes = {
        "input": nir.Input(input_type=np.array([2, 8, 8])),
        "conv1": _conv(4, 2, 3, input_shape=(8, 8)), "sn1": if_((4, 8, 8)),
        "conv2": _conv(4, 4, 3, input_shape=(8, 8)), "sn2": if_((4, 8, 8)),
        "conv3": _conv(4, 4, 3, input_shape=(8, 8)), "sn3": _lif((4, 8, 8)),
        "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                              padding=np.array([0, 0])),
        "flatten": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0),
        "fc": nir.Affine(weight=_w(10, 64), bias=_w(10)), "sn4": _lif((10,)),
        "output": nir.Output(output_type=np.array([10])),
    }
    edges = [("input", "conv1"), ("conv1", "sn1"), ("sn1", "conv2"), ("conv2", "sn2"),
             ("sn1", "conv3"), ("sn2", "conv3"), ("conv3", "sn3"), ("sn3", "pool"),
             ("pool", "flatten"), ("flatten", "fc"), ("fc", "sn4"), ("sn4", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def norse_like() -> nir.NIRGraph:
    """Norse: a SequentialState exported as a nested graph (edges into and out of the
    subgraph node), LIF cells, a SumPool2d, and a leaky-integrator (LI) readout
    whose output is its membrane potential, not spikes; a Linear without bias.

    Network: input 2x8x8 -> block.conv(4, 3x3) + block.lif -> pool SumPool2d 2x2
    -> flatten (64) -> readout Linear(10) + li LI -> output.
    """
    block = nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([2, 8, 8])),
        "conv": _conv(4, 2, 3), "lif": _lif((4, 8, 8)),
        "output": nir.Output(output_type=np.array([4, 8, 8])),
    }, edges=[("input", "conv"), ("conv", "lif"), ("lif", "output")], type_check=False)
    ones = np.ones(10, np.float32)
    nodes = {
        "input": nir.Input(input_type=np.array([2, 8, 8])),
        "block": block,
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                              padding=np.array([0, 0])),
        "flatten": nir.Flatten(input_type={"input": np.array([4, 4, 4])}),
        "readout": nir.Linear(weight=_w(10, 64)),
        "li": nir.LI(tau=ones * 0.05, r=ones, v_leak=ones * 0),
        "output": nir.Output(output_type=np.array([10])),
    }
    edges = [("input", "block"), ("block", "pool"), ("pool", "flatten"),
             ("flatten", "readout"), ("readout", "li"), ("li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def sinabs_like() -> nir.NIRGraph:
    """Sinabs: IAF neurons exported as IF with scalar-shaped parameters, SumPool2d
    between layers, a Flatten and a Linear without bias; modules named by index;
    the Input shape with a leading batch dimension of 1.

    Network: input 1x2x8x8 -> 0 Conv2d(4, 3x3) + 1 IF -> 2 SumPool2d 2x2 -> 3 Conv2d
    (8, 3x3) + 4 IF -> 5 Flatten (128) -> 6 Linear(10) + 7 IF -> output.
    """
    def iaf() -> nir.IF:
        one = np.ones(1, np.float32)
        return nir.IF(r=one, v_threshold=one, v_reset=one * 0)

    nodes = {
        "input": nir.Input(input_type=np.array([1, 2, 8, 8])),
        "0": _conv(4, 2, 3), "1": iaf(),
        "2": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                           padding=np.array([0, 0])),
        "3": _conv(8, 4, 3, input_shape=(4, 4)), "4": iaf(),
        "5": nir.Flatten(input_type={"input": np.array([8, 4, 4])}),
        "6": nir.Linear(weight=_w(10, 128)), "7": iaf(),
        "output": nir.Output(output_type=np.array([10])),
    }
    order = ["input", *map(str, range(8)), "output"]
    return nir.NIRGraph(nodes=nodes, edges=list(itertools.pairwise(order)),
                        type_check=False)


def lava_like() -> nir.NIRGraph:
    """Lava-dl: CUBA neurons (CubaLIF, two state variables), a grouped (depthwise)
    conv, a threshold-only (stateless) neuron, and an Affine read straight from a
    conv's 3-d output with the flatten left implicit.

    Network: input 4x8x8 -> dw Conv2d(4, 3x3, groups 4) + cuba1 CubaLIF -> pw
    Conv2d(8, 1x1, pad 0) + thr Threshold -> fc Affine(10, reads 8x8x8 = 512) +
    cuba2 CubaLIF -> output.
    """
    def cuba(shape: tuple[int, ...]) -> nir.CubaLIF:
        ones = np.ones(shape, np.float32)
        return nir.CubaLIF(tau_syn=ones * 0.01, tau_mem=ones * 0.02, r=ones,
                           v_leak=ones * 0, v_threshold=ones, v_reset=ones * 0, w_in=ones)

    nodes = {
        "input": nir.Input(input_type=np.array([4, 8, 8])),
        "dw": _conv(4, 4, 3, groups=4), "cuba1": cuba((4, 8, 8)),
        "pw": _conv(8, 4, 1, padding=0),
        "thr": nir.Threshold(threshold=np.ones((8, 8, 8), np.float32)),
        "fc": nir.Affine(weight=_w(10, 512), bias=_w(10)), "cuba2": cuba((10,)),
        "output": nir.Output(output_type=np.array([10])),
    }
    edges = [("cuba2", "output"), ("fc", "cuba2"), ("thr", "fc"), ("pw", "thr"),
             ("cuba1", "pw"), ("dw", "cuba1"), ("input", "dw")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


FRAMEWORKS = {
    "snntorch": snntorch_like,
    "spikingjelly": spikingjelly_like,
    "norse": norse_like,
    "sinabs": sinabs_like,
    "lava": lava_like,
}
