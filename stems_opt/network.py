"""The workload: layers of a spiking neural network and their shapes.

A :class:`Network` is a DAG of :class:`Layer` in topological order with
``timesteps`` (T) and batch 1. Shapes are resolved by :func:`build_network`
from partial specs (the YAML form), so a :class:`Layer` always carries every
loop bound; both classes validate themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import Any

from stems_opt.errors import Issue, excerpt, raise_if
from stems_opt.limits import MAX_COUNT, MAX_EXTENT


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


# ----------------------------------------------------------------------------
# Shape inference from partial specs
# ----------------------------------------------------------------------------

LAYER_FIELDS = {
    "name", "type", "inputs", "loop_dims", "kernel", "stride", "padding", "neuron",
    "operand_precision", "spike_rate", "pool", "groups", "comment",
}
PRECISION_KEYS = {"W", "O", "V", "psum"}
LOOP_DIMS = {"K", "C", "OY", "OX", "FY", "FX", "T", "B"}
SPATIAL_DIMS = {"OY", "OX", "FY", "FX"}


@dataclass(frozen=True)
class NetworkDefaults:
    """Network-wide defaults for per-layer fields."""

    weight_bits: int = 4
    spike_bits: int = 1
    activation_bits: int = 4
    state_bits: int = 12
    psum_bits: int = 16
    neuron: NeuronKind = NeuronKind.LIF
    add_output_bits: str = "widest"


def _pair(value: Any, layer: str, fname: str, issues: list[Issue]) -> tuple[int, int] | None:
    if isinstance(value, bool):
        value = None
    pair = None
    if isinstance(value, int):
        pair = (value, value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 \
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        pair = (value[0], value[1])
    if pair is None:
        issues.append(Issue(f"must be an integer or a [y, x] pair of integers, got "
                            f"{excerpt(value)}", layer=layer, field=fname))
    elif max(abs(v) for v in pair) > MAX_EXTENT:
        issues.append(Issue(f"must be at most {MAX_EXTENT}, got {excerpt(value)}", layer=layer,
                            field=fname))
        pair = None
    return pair


def _spatial_out(i: int, f: int, s: int, p: int) -> int:
    return (i + 2 * p - f) // s + 1


def build_network(
    name: str,
    timesteps: int,
    input_tensor: InputTensor,
    specs: Sequence[Mapping[str, Any]],
    defaults: NetworkDefaults = NetworkDefaults(),
    state_persistence: StatePersistence = StatePersistence.STREAMING,
    blocks: Sequence[Block] = (),
    outputs: Sequence[str] = (),
) -> Network:
    """Resolve shapes through the DAG and build a validated :class:`Network`.

    Parameters
    ----------
    specs
        One mapping per layer, as in the network YAML (``name``, ``type``,
        ``inputs``, ``loop_dims``, ``stride``, ``padding``, ...). Every given
        loop bound is checked against the inferred one: ``K``, ``C``, ``OY``,
        ``OX``, ``FY``, ``FX`` against the layer's shape, ``T`` against
        ``timesteps`` and ``B`` against 1.

    Raises
    ------
    StemsInputError
        With every problem found, each naming the layer and the field.
    """
    issues: list[Issue] = []
    shapes: dict[str, tuple[int, int, int, int]] = {
        input_tensor.name: (input_tensor.channels, input_tensor.height, input_tensor.width,
                            input_tensor.bits)
    }
    layers: list[Layer] = []
    failed: set[str] = set()
    for idx, spec in enumerate(specs):
        lname = spec.get("name") if isinstance(spec, Mapping) else None
        if not isinstance(lname, str) or not lname:
            issues.append(Issue("every layer needs a string 'name'", layer=f"#{idx}", field="name"))
            continue
        layer_issues: list[Issue] = []
        layer = _build_layer(lname, spec, shapes, failed, defaults, timesteps, layer_issues)
        issues.extend(layer_issues)
        if layer is not None and not layer_issues:
            layers.append(layer)
            shapes[lname] = (layer.k, layer.oy, layer.ox, layer.output_bits)
        else:
            failed.add(lname)
    raise_if(issues)
    return Network(name=name, timesteps=timesteps, input=input_tensor, layers=tuple(layers),
                   state_persistence=state_persistence, blocks=tuple(blocks),
                   outputs=tuple(outputs))


def layer_spec_issues(specs: Sequence[Any], input_name: str, defaults: NetworkDefaults,
                      timesteps: Any) -> list[Issue]:
    """The problems of each layer spec that need no input shape (fields, types,
    loop bounds, precisions, neurons): reported with the network's own problems
    when those stop the shapes from being resolved."""
    issues: list[Issue] = []
    failed = {input_name}
    for idx, spec in enumerate(specs):
        lname = spec.get("name") if isinstance(spec, Mapping) else None
        if not isinstance(lname, str) or not lname:
            issues.append(Issue("every layer needs a string 'name'", layer=f"#{idx}", field="name"))
            continue
        # With every tensor "failed", each layer stops after its own checks.
        _build_layer(lname, spec, {}, failed, defaults, timesteps, issues)
        failed.add(lname)
    return issues


def _build_layer(
    lname: str,
    spec: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, int, int, int]],
    failed: set[str],
    d: NetworkDefaults,
    timesteps: int,
    issues: list[Issue],
) -> Layer | None:
    """Resolve one layer's shape from its spec, or return ``None`` with ``issues`` filled.

    Parameters
    ----------
    shapes
        ``(channels, OY, OX, bits)`` of the network input and every layer built so far.
    failed
        Earlier layers that could not be built: reading one is not reported
        again (its own problem already is), the layer is just skipped.
    timesteps
        The network's T, which a given ``loop_dims.T`` must equal.
    """
    # First every check that needs no input shape, so that a layer reading a broken
    # layer still reports its own mistakes.
    for key in spec:
        if key not in LAYER_FIELDS:
            issues.append(Issue(f"unknown field (known: {', '.join(sorted(LAYER_FIELDS))})",
                                layer=lname, field=str(key)))
    kind: LayerKind | None
    try:
        kind = LayerKind(spec.get("type"))
    except (ValueError, TypeError):
        issues.append(Issue(f"unknown layer type {excerpt(spec.get('type'))} (one of "
                            f"{', '.join(k.value for k in LayerKind)})", layer=lname, field="type"))
        kind = None
    inputs = spec.get("inputs")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, Sequence) or not inputs \
            or not all(isinstance(i, str) for i in inputs):
        issues.append(Issue("must be a non-empty list of tensor names", layer=lname,
                            field="inputs"))
        inputs = None
    dims = spec.get("loop_dims", {}) or {}
    if not isinstance(dims, Mapping):
        issues.append(Issue("must be a mapping such as {K: 64, FY: 3, FX: 3}", layer=lname,
                            field="loop_dims"))
        dims = {}
    for key, v in dims.items():
        if key not in LOOP_DIMS:
            issues.append(Issue("unknown loop dimension", layer=lname,
                                field=f"loop_dims.{key}"))
        else:
            top = MAX_EXTENT if key in SPATIAL_DIMS else MAX_COUNT
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top:
                issues.append(Issue(f"must be a positive integer up to {top}, got {excerpt(v)}",
                                    layer=lname, field=f"loop_dims.{key}"))
    prec = spec.get("operand_precision", {}) or {}
    if not isinstance(prec, Mapping):
        issues.append(Issue("must be a mapping such as {W: 4, O: 1, V: 12}", layer=lname,
                            field="operand_precision"))
        prec = {}
    for key, v in prec.items():
        if key not in PRECISION_KEYS:
            issues.append(Issue("unknown operand (W, O, V, psum)", layer=lname,
                                field=f"operand_precision.{key}"))
        elif not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_COUNT:
            issues.append(Issue(f"must be a positive integer up to {MAX_COUNT}, got "
                                f"{excerpt(v)}", layer=lname, field=f"operand_precision.{key}"))
    default_neuron = d.neuron.value if kind in (LayerKind.CONV, LayerKind.LINEAR) else "none"
    neuron = None
    try:
        neuron = NeuronKind(spec.get("neuron", default_neuron))
    except (ValueError, TypeError):
        issues.append(Issue(f"unknown neuron {excerpt(spec.get('neuron'))} (one of "
                            f"{', '.join(n.value for n in NeuronKind)})", layer=lname,
                            field="neuron"))
    rate = spec.get("spike_rate", 1.0)
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate <= 1:
        issues.append(Issue(f"must be a number in [0, 1], got {excerpt(rate)}", layer=lname,
                            field="spike_rate"))
    # Every layer runs over the whole window, so T is the network's; the batch is always 1.
    valid_t = isinstance(timesteps, int) and not isinstance(timesteps, bool)
    if isinstance(dims.get("T"), int) and valid_t and dims["T"] != timesteps:
        issues.append(Issue(f"is {dims['T']} but the network has timesteps: {timesteps}",
                            layer=lname, field="loop_dims.T"))
    if isinstance(dims.get("B"), int) and dims["B"] != 1:
        issues.append(Issue(f"batch must be 1, got {dims['B']}", layer=lname,
                            field="loop_dims.B"))
    if issues or kind is None or inputs is None or neuron is None:
        return None

    missing = [i for i in inputs if i not in shapes and i not in failed]
    if missing:
        issues.append(Issue(f"unknown or later tensor(s) {excerpt(', '.join(missing))} (inputs "
                            "must be the network input or earlier layers)", layer=lname,
                            field="inputs"))
        return None
    if any(i in failed for i in inputs):
        # The input's own problem is already reported; its shape is unknown, so stop quietly.
        return None
    if kind is LayerKind.ADD and len(inputs) < 2:
        issues.append(Issue("an add needs two or more inputs", layer=lname, field="inputs"))
        return None
    if kind is not LayerKind.ADD and len(inputs) != 1:
        issues.append(Issue(f"a {kind.value} layer takes exactly one input", layer=lname,
                            field="inputs"))
        return None
    c, iy, ix, ibits = shapes[inputs[0]]

    common = dict(name=lname, inputs=tuple(inputs), iy=iy, ix=ix, input_bits=ibits,
                  spike_rate=float(rate), psum_bits=prec.get("psum", d.psum_bits))

    def check_given(key: str, inferred: int, why: str) -> None:
        if key in dims and dims[key] != inferred:
            issues.append(Issue(f"is {dims[key]} but {why} gives {inferred}", layer=lname,
                                field=f"loop_dims.{key}"))

    if kind in (LayerKind.CONV, LayerKind.LINEAR):
        if "K" not in dims:
            issues.append(Issue("is required", layer=lname, field="loop_dims.K"))
            return None
        k = dims["K"]
        out_bits = prec.get("O", d.spike_bits if neuron.spiking else d.activation_bits)
        wbits = prec.get("W", d.weight_bits)
        sbits = prec.get("V", d.state_bits)
        if kind is LayerKind.LINEAR:
            if iy != 1 or ix != 1:
                issues.append(Issue(f"input {excerpt(inputs[0])} is {iy}x{ix}; flatten it first",
                                    layer=lname, field="inputs"))
                return None
            check_given("C", c, f"input {excerpt(inputs[0])}")
            for key in ("OY", "OX", "FY", "FX"):
                check_given(key, 1, "a linear layer")
            if issues:
                return None
            return Layer(kind=kind, k=k, c=c, oy=1, ox=1, neuron=neuron, weight_bits=wbits,
                         output_bits=out_bits, state_bits=sbits, **common)
        fy, fx = dims.get("FY", 1), dims.get("FX", 1)
        groups = spec.get("groups", 1)
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 \
                or c % groups or k % groups:
            issues.append(Issue(f"must be an integer >= 1 dividing both the input channels "
                                f"({c}) and K ({k}), got {groups!r}", layer=lname,
                                field="groups"))
            return None
        stride = _pair(spec.get("stride", 1), lname, "stride", issues)
        pad_spec = spec.get("padding", "same")
        pad = ((fy - 1) // 2, (fx - 1) // 2) if pad_spec == "same" else \
            _pair(pad_spec, lname, "padding", issues)
        if stride is None or pad is None:
            return None
        if min(stride) < 1 or min(pad) < 0:
            issues.append(Issue("stride must be >= 1 and padding >= 0", layer=lname,
                                field="stride" if min(stride) < 1 else "padding"))
            return None
        if fy > iy + 2 * pad[0] or fx > ix + 2 * pad[1]:
            issues.append(Issue(f"kernel {fy}x{fx} is larger than the padded input map "
                                f"{iy + 2 * pad[0]}x{ix + 2 * pad[1]}", layer=lname,
                                field="loop_dims.FY" if fy > iy + 2 * pad[0] else
                                "loop_dims.FX"))
            return None
        oy = _spatial_out(iy, fy, stride[0], pad[0])
        ox = _spatial_out(ix, fx, stride[1], pad[1])
        if max(oy, ox) > MAX_EXTENT:
            issues.append(Issue(f"makes a {oy}x{ox} output, beyond the {MAX_EXTENT} rows "
                                "allowed along an axis", layer=lname, field="padding"))
            return None
        check_given("C", c // groups, f"input {inputs[0]!r} and groups: {groups}")
        check_given("OY", oy, "the input, kernel, stride and padding")
        check_given("OX", ox, "the input, kernel, stride and padding")
        if issues:
            return None
        return Layer(kind=kind, k=k, c=c // groups, groups=groups, oy=oy, ox=ox, fy=fy, fx=fx,
                     stride_y=stride[0], stride_x=stride[1], pad_y=pad[0], pad_x=pad[1],
                     neuron=neuron, weight_bits=wbits, output_bits=out_bits, state_bits=sbits,
                     **common)

    if neuron is not NeuronKind.NONE:
        issues.append(Issue(f"a {kind.value} layer has no neurons; use 'none'", layer=lname,
                            field="neuron"))
        return None
    if kind is LayerKind.POOL:
        kernel = _pair(spec.get("kernel", [dims.get("FY", 2), dims.get("FX", 2)]), lname,
                       "kernel", issues)
        stride = _pair(spec.get("stride", kernel), lname, "stride", issues) if kernel else None
        pad = _pair(spec.get("padding", 0), lname, "padding", issues)
        ptype = spec.get("pool", "max")
        if ptype not in ("max", "avg", "sum"):
            issues.append(Issue(f"unknown pool {excerpt(ptype)} (max, avg, sum)", layer=lname,
                                field="pool"))
        if kernel is None or stride is None or pad is None or issues:
            return None
        if min(kernel) < 1 or min(stride) < 1 or min(pad) < 0:
            issues.append(Issue("kernel and stride must be >= 1, padding >= 0", layer=lname,
                                field="kernel"))
            return None
        if kernel[0] > iy + 2 * pad[0] or kernel[1] > ix + 2 * pad[1]:
            issues.append(Issue(f"kernel {kernel[0]}x{kernel[1]} is larger than the input map "
                                f"{iy}x{ix}", layer=lname, field="kernel"))
            return None
        oy = _spatial_out(iy, kernel[0], stride[0], pad[0])
        ox = _spatial_out(ix, kernel[1], stride[1], pad[1])
        if max(oy, ox) > MAX_EXTENT:
            issues.append(Issue(f"makes a {oy}x{ox} output, beyond the {MAX_EXTENT} rows "
                                "allowed along an axis", layer=lname, field="padding"))
            return None
        check_given("K", c, "a pool keeps the channels of its input; it")
        check_given("C", c, f"input {excerpt(inputs[0])}")
        check_given("FY", kernel[0], "the kernel")
        check_given("FX", kernel[1], "the kernel")
        check_given("OY", oy, "the input, kernel and stride")
        check_given("OX", ox, "the input, kernel and stride")
        if issues:
            return None
        return Layer(kind=kind, k=c, c=c, oy=oy, ox=ox, fy=kernel[0], fx=kernel[1],
                     stride_y=stride[0], stride_x=stride[1], pad_y=pad[0], pad_x=pad[1],
                     output_bits=prec.get("O", ibits), pool_type=ptype, **common)
    if kind is LayerKind.ADD:
        shapes_in = [shapes[i] for i in inputs]
        first = shapes_in[0]
        for src, (sc, sy, sx, _) in zip(inputs[1:], shapes_in[1:], strict=True):
            if (sc, sy, sx) != first[:3]:
                issues.append(Issue(f"input {excerpt(src)} is {sc}x{sy}x{sx} but "
                                    f"{excerpt(inputs[0])} is {first[0]}x{first[1]}x{first[2]} "
                                    "(channels x OY x OX must match)", layer=lname,
                                    field="inputs"))
        if issues:
            return None
        widest = max(s[3] for s in shapes_in)
        exact = widest + math.ceil(math.log2(len(inputs))) if widest > 1 else \
            math.ceil(math.log2(len(inputs) + 1))
        obits = prec.get("O", exact if d.add_output_bits == "exact" else widest)
        why = f"the shape of input {excerpt(inputs[0])}"
        for key, inferred in (("K", c), ("C", c), ("OY", iy), ("OX", ix), ("FY", 1), ("FX", 1)):
            check_given(key, inferred, why)
        if issues:
            return None
        return Layer(kind=kind, k=c, c=c, oy=iy, ox=ix, output_bits=obits, **common)
    # flatten: (C, Y, X) -> (C*Y*X, 1, 1)
    why = f"flattening input {excerpt(inputs[0])} ({c}x{iy}x{ix})"
    for key, inferred in (("K", c * iy * ix), ("C", c), ("OY", 1), ("OX", 1), ("FY", 1),
                          ("FX", 1)):
        check_given(key, inferred, why)
    if issues:
        return None
    return Layer(kind=kind, k=c * iy * ix, c=c, oy=1, ox=1, output_bits=ibits, **common)


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
    "NetworkDefaults", "NeuronKind", "StatePersistence", "build_network", "divisors",
    "layer_spec_issues", "most_chunks",
]
