"""The workload: layers of a spiking neural network and their shapes.

A :class:`Network` is a DAG of :class:`Layer` in topological order with
``timesteps`` (T) and batch 1. Shapes are resolved by :func:`build_network`
from partial specs (the YAML form), so a :class:`Layer` always carries every
loop bound; both classes validate themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

from stems_opt.errors import Issue, excerpt, raise_if


class LayerKind(str, Enum):
    """Layer operator."""

    CONV = "conv"
    LINEAR = "linear"
    POOL = "pool"
    ADD = "add"
    FLATTEN = "flatten"


class NeuronKind(str, Enum):
    """Neuron model at a layer's output."""

    LIF = "lif"
    PLIF = "plif"
    IF = "if"
    STATELESS = "stateless"
    NONE = "none"

    @property
    def stateful(self) -> bool:
        """Whether the neuron carries a membrane potential across timesteps."""
        return self in (NeuronKind.LIF, NeuronKind.PLIF, NeuronKind.IF)

    @property
    def spiking(self) -> bool:
        """Whether the layer emits 1-bit spikes and updates neurons."""
        return self is not NeuronKind.NONE


class StatePersistence(str, Enum):
    """What happens to neuron state at the window's ends (MODEL.md section 1)."""

    STREAMING = "streaming"
    RESET = "reset"


class Axis(str, Enum):
    """Spatial axis along which a segment is tiled."""

    OY = "OY"
    OX = "OX"


NETWORK_INPUT = "input"
"""Default name of the network input tensor."""


@dataclass(frozen=True)
class InputTensor:
    """The network input: ``channels x height x width`` per timestep, ``bits`` per
    element (1: spikes, as in the network YAML)."""

    name: str
    channels: int
    height: int
    width: int
    bits: int = 1

    def __post_init__(self) -> None:
        issues = [
            Issue(f"must be a positive integer, got {excerpt(v)}", layer=self.name, field=f)
            for f, v in (
                ("channels", self.channels),
                ("height", self.height),
                ("width", self.width),
                ("bits", self.bits),
            )
            if not isinstance(v, int) or isinstance(v, bool) or v < 1
        ]
        raise_if(issues)


@dataclass(frozen=True)
class Layer:
    """One layer with every loop bound resolved.

    Spatial fields are per axis: ``oy``/``ox`` output extent, ``iy``/``ix``
    input extent, ``fy``/``fx`` kernel, ``stride_y``/``stride_x``,
    ``pad_y``/``pad_x`` (leading padding; trailing padding is whatever makes
    the output extent, as in PyTorch). A grouped conv (``groups`` > 1) reads
    ``c`` = input channels / ``groups`` per output channel, so ``c`` is the
    channels of one group and weights and operations count ``k * c``.
    """

    name: str
    kind: LayerKind
    inputs: tuple[str, ...]
    k: int
    c: int
    oy: int
    ox: int
    iy: int
    ix: int
    fy: int = 1
    fx: int = 1
    stride_y: int = 1
    stride_x: int = 1
    pad_y: int = 0
    pad_x: int = 0
    neuron: NeuronKind = NeuronKind.NONE
    weight_bits: int = 4
    input_bits: int = 1
    output_bits: int = 1
    state_bits: int = 12
    psum_bits: int = 16
    spike_rate: float = 1.0
    pool_type: str | None = None
    groups: int = 1

    def __post_init__(self) -> None:
        issues: list[Issue] = []
        for f in ("k", "c", "oy", "ox", "iy", "ix", "fy", "fx", "stride_y", "stride_x",
                  "weight_bits", "input_bits", "output_bits", "state_bits", "psum_bits",
                  "groups"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                issues.append(Issue(f"must be a positive integer, got {excerpt(v)}",
                                    layer=self.name, field=f))
        for f in ("pad_y", "pad_x"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                issues.append(Issue(f"must be a non-negative integer, got {excerpt(v)}",
                                    layer=self.name, field=f))
        rate = self.spike_rate
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
            issues.append(Issue(f"must lie in [0, 1], got {excerpt(rate)}", layer=self.name,
                                field="spike_rate"))
        if not issues and self.groups > 1 and (self.kind is not LayerKind.CONV
                                               or self.k % self.groups):
            issues.append(Issue(f"{self.groups} groups need a conv whose K ({self.k}) they "
                                "divide", layer=self.name, field="groups"))
        raise_if(issues)

    # --- sizes (bits, over all timesteps where T appears) -----------------
    @property
    def has_weights(self) -> bool:
        """Conv and linear layers carry weights."""
        return self.kind in (LayerKind.CONV, LayerKind.LINEAR)

    @property
    def weight_size_bits(self) -> int:
        """|W|: K x C x FY x FX x weight bits (0 for pools, adds, flattens)."""
        return self.k * self.c * self.fy * self.fx * self.weight_bits if self.has_weights else 0

    @property
    def stateful(self) -> bool:
        """Whether the layer has a neuron state tensor V."""
        return self.has_weights and self.neuron.stateful

    @property
    def state_size_bits(self) -> int:
        """|V|: K x OY x OX x state bits (no T: state is carried over time)."""
        return self.k * self.oy * self.ox * self.state_bits if self.stateful else 0

    def output_size_bits(self, timesteps: int) -> int:
        """|O| over ``timesteps`` timesteps."""
        return timesteps * self.k * self.oy * self.ox * self.output_bits

    def extent(self, axis: Axis) -> int:
        """Output extent along ``axis``."""
        return self.oy if axis is Axis.OY else self.ox

    def cross_extent(self, axis: Axis) -> int:
        """Output extent across ``axis``."""
        return self.ox if axis is Axis.OY else self.oy

    def input_extent(self, axis: Axis) -> int:
        """Input extent along ``axis``."""
        return self.iy if axis is Axis.OY else self.ix

    def output_row_bits(self, axis: Axis) -> int:
        """Bits of one output row along ``axis`` for one timestep."""
        return self.k * self.cross_extent(axis) * self.output_bits

    def state_row_bits(self, axis: Axis) -> int:
        """Bits of one row of V along ``axis``."""
        return self.k * self.cross_extent(axis) * self.state_bits if self.stateful else 0

    # --- windows -----------------------------------------------------------
    def window(self, axis: Axis, lo: int, hi: int) -> tuple[int, int]:
        """Input rows ``[a, b)`` needed to compute output rows ``[lo, hi)``.

        Empty output ranges need nothing; rows in the padding are clipped.
        """
        if hi <= lo:
            return (0, 0)
        if self.kind in (LayerKind.FLATTEN, LayerKind.LINEAR):
            return (0, self.input_extent(axis))
        if self.kind is LayerKind.ADD:
            return (lo, hi)
        if axis is Axis.OY:
            s, p, f, e = self.stride_y, self.pad_y, self.fy, self.iy
        else:
            s, p, f, e = self.stride_x, self.pad_x, self.fx, self.ix
        return (max(0, lo * s - p), min(e, (hi - 1) * s - p + f))

    # --- operations ----------------------------------------------------------
    def operations(self, timesteps: int) -> int:
        """Synaptic operations over ``timesteps`` (AC or MAC; compares for pools)."""
        if self.kind is LayerKind.CONV:
            return timesteps * self.k * self.c * self.oy * self.ox * self.fy * self.fx
        if self.kind is LayerKind.LINEAR:
            return timesteps * self.k * self.c
        if self.kind is LayerKind.POOL:
            return timesteps * self.k * self.oy * self.ox * self.fy * self.fx
        if self.kind is LayerKind.ADD:
            return timesteps * self.k * self.oy * self.ox * (len(self.inputs) - 1)
        return 0

    @property
    def uses_mac(self) -> bool:
        """Multi-bit inputs need multiply-accumulates; spikes only accumulate."""
        return self.has_weights and self.input_bits > 1

    def neuron_updates(self, timesteps: int) -> int:
        """Leak/compare/reset operations: one per output neuron per timestep."""
        if not (self.has_weights and self.neuron.spiking):
            return 0
        return timesteps * self.k * self.oy * self.ox


@dataclass(frozen=True)
class Block:
    """A named contiguous run of layers (the unit of STEMS's schedule strings)."""

    name: str
    layers: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Network:
    """A validated SNN: layers in topological order, ``timesteps`` T, batch 1.

    Compared and hashed by identity, so derived geometry can be cached per network.
    """

    name: str
    timesteps: int
    input: InputTensor
    layers: tuple[Layer, ...]
    state_persistence: StatePersistence = StatePersistence.STREAMING
    blocks: tuple[Block, ...] = ()
    outputs: tuple[str, ...] = ()
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _consumers: dict[str, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False,
                                                   compare=False)

    def __post_init__(self) -> None:
        try:  # accept the YAML spelling from Python callers too
            object.__setattr__(self, "state_persistence",
                               StatePersistence(self.state_persistence))
        except ValueError:
            raise_if([Issue(f"unknown value {excerpt(self.state_persistence)} (streaming, reset)",
                            field="state_persistence")])
        issues: list[Issue] = []
        T = self.timesteps
        if not isinstance(T, int) or isinstance(T, bool) or T < 1:
            issues.append(Issue(f"must be a positive integer, got {excerpt(T)}", field="timesteps"))
        seen: dict[str, int] = {}
        for i, layer in enumerate(self.layers):
            if layer.name in seen or layer.name == self.input.name:
                issues.append(Issue("duplicate layer name", layer=layer.name, field="name"))
            for src in layer.inputs:
                if src != self.input.name and src not in seen:
                    issues.append(Issue(f"input {excerpt(src)} is not the network input or an "
                                        "earlier layer", layer=layer.name, field="inputs"))
            seen[layer.name] = i
        if not self.layers:
            issues.append(Issue("a network needs at least one layer", field="layers"))
        raise_if(issues)
        self._index.update(seen)
        consumers: dict[str, list[str]] = {self.input.name: []}
        consumers.update({layer.name: [] for layer in self.layers})
        for layer in self.layers:
            for src in layer.inputs:
                if layer.name not in consumers[src]:
                    consumers[src].append(layer.name)
        self._consumers.update({k: tuple(v) for k, v in consumers.items()})
        for o in self.outputs:
            if o not in seen:
                issues.append(Issue(f"output {excerpt(o)} is not a layer", field="outputs"))
        covered: list[str] = []
        for b in self.blocks:
            for name in b.layers:
                if name not in seen:
                    issues.append(Issue(f"block {excerpt(b.name)} names unknown layer", layer=name,
                                        field="blocks"))
            covered.extend(b.layers)
        if self.blocks and not issues and covered != [layer.name for layer in self.layers]:
            issues.append(Issue("blocks must list every layer once, in layer order",
                                field="blocks"))
        raise_if(issues)

    # --- queries ---------------------------------------------------------------
    def index(self, name: str) -> int:
        """Position of layer ``name`` in topological order."""
        return self._index[name]

    def layer(self, name: str) -> Layer:
        """The layer called ``name``."""
        return self.layers[self._index[name]]

    def has_layer(self, name: str) -> bool:
        """Whether ``name`` is a layer (not the network input)."""
        return name in self._index

    def consumers(self, tensor: str) -> tuple[str, ...]:
        """Layers reading ``tensor`` (a layer name or the input's name), in order."""
        return self._consumers[tensor]

    @property
    def output_names(self) -> tuple[str, ...]:
        """Network outputs: the listed ones, else every layer nobody reads."""
        if self.outputs:
            return self.outputs
        return tuple(layer.name for layer in self.layers if not self._consumers[layer.name])

    def tensor_size_bits(self, tensor: str) -> int:
        """|X| over all timesteps for a layer output or the network input."""
        if tensor == self.input.name:
            i = self.input
            return self.timesteps * i.channels * i.height * i.width * i.bits
        return self.layer(tensor).output_size_bits(self.timesteps)

    def tensor_row_bits(self, tensor: str, axis: Axis) -> int:
        """Bits of one row (along ``axis``) of ``tensor`` for one timestep."""
        if tensor == self.input.name:
            i = self.input
            cross = i.width if axis is Axis.OY else i.height
            return i.channels * cross * i.bits
        return self.layer(tensor).output_row_bits(axis)

    @property
    def block_list(self) -> tuple[Block, ...]:
        """The block partition; one block per layer when none is given."""
        if self.blocks:
            return self.blocks
        return tuple(Block(layer.name, (layer.name,)) for layer in self.layers)

    @property
    def weight_size_bits(self) -> int:
        """Sum of |W| over layers."""
        return sum(layer.weight_size_bits for layer in self.layers)

    @property
    def state_size_bits(self) -> int:
        """Sum of |V| over layers."""
        return sum(layer.state_size_bits for layer in self.layers)

    @property
    def operations(self) -> int:
        """Synaptic operations of conv and linear layers over T."""
        return sum(layer.operations(self.timesteps) for layer in self.layers if layer.has_weights)


def divisors(n: int) -> list[int]:
    """All divisors of ``n`` in increasing order (trial division up to ``sqrt(n)``:
    at most 46,341 steps for the largest count an input may hold)."""
    return list(_divisors(n))


@lru_cache(maxsize=4096)
def _divisors(n: int) -> tuple[int, ...]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return tuple(sorted(set(small + [n // d for d in small])))


def most_chunks(k: int, k_unroll: int) -> int:
    """Most chunks ``K`` splits into with at least ``k_unroll`` channels each (1 when
    ``K < k_unroll``): ``K`` over its smallest divisor ``>= k_unroll``.

    Found among the divisors, so the work does not grow with ``K``'s value.
    """
    for d in _divisors(k):
        if d >= k_unroll:
            return k // d
    return 1


__all__ = [
    "NETWORK_INPUT", "Axis", "Block", "InputTensor", "Layer", "LayerKind", "Network",
    "NeuronKind", "StatePersistence", "divisors", "most_chunks",
]
