"""Layers from partial specs (the YAML form): field checks and shape inference.

:func:`build_network` resolves every layer's shape through the DAG, checking
each given loop bound against the inferred one, and reports every problem at
once, each naming the layer and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stems_opt.errors import Issue, excerpt, raise_if
from stems_opt.limits import MAX_COUNT, MAX_EXTENT
from stems_opt.network import (
    Block,
    InputTensor,
    Layer,
    LayerKind,
    Network,
    NeuronKind,
    StatePersistence,
)

LAYER_FIELDS = {
    "name", "type", "inputs", "loop_dims", "kernel", "stride", "padding", "neuron",
    "operand_precision", "spike_rate", "pool", "groups", "comment",
}
PRECISION_KEYS = {"W", "O", "V", "psum"}
LOOP_DIMS = {"K", "C", "OY", "OX", "FY", "FX", "T", "B"}
SPATIAL_DIMS = {"OY", "OX", "FY", "FX"}

Shape = tuple[int, int, int, int]
"""``(channels, OY, OX, bits)`` of a tensor."""


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


@dataclass(frozen=True)
class _Fields:
    """A layer's fields that need no input shape, each already checked."""

    kind: LayerKind
    inputs: tuple[str, ...]
    dims: Mapping[str, Any]
    precision: Mapping[str, Any]
    neuron: NeuronKind
    spike_rate: float


@dataclass(frozen=True)
class _Site:
    """Everything a layer kind's builder reads: its spec, checked fields and input."""

    name: str
    spec: Mapping[str, Any]
    fields: _Fields
    shape: Shape
    defaults: NetworkDefaults
    issues: list[Issue]

    def issue(self, message: str, field_name: str) -> None:
        self.issues.append(Issue(message, layer=self.name, field=field_name))

    def check_given(self, key: str, inferred: int, why: str) -> None:
        """Report a given loop bound that differs from the inferred one."""
        dims = self.fields.dims
        if key in dims and dims[key] != inferred:
            self.issue(f"is {dims[key]} but {why} gives {inferred}", f"loop_dims.{key}")

    def common(self) -> dict[str, Any]:
        """The :class:`Layer` fields every kind sets the same way."""
        _, iy, ix, ibits = self.shape
        return dict(name=self.name, inputs=self.fields.inputs, iy=iy, ix=ix, input_bits=ibits,
                    spike_rate=self.fields.spike_rate,
                    psum_bits=self.fields.precision.get("psum", self.defaults.psum_bits))


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
    shapes: dict[str, Shape] = {
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
    for idx, spec in enumerate(specs):
        lname = spec.get("name") if isinstance(spec, Mapping) else None
        if not isinstance(lname, str) or not lname:
            issues.append(Issue("every layer needs a string 'name'", layer=f"#{idx}", field="name"))
            continue
        _check_fields(lname, spec, defaults, timesteps, issues)
    return issues


def _build_layer(
    lname: str,
    spec: Mapping[str, Any],
    shapes: Mapping[str, Shape],
    failed: set[str],
    d: NetworkDefaults,
    timesteps: int,
    issues: list[Issue],
) -> Layer | None:
    """Resolve one layer's shape from its spec, or return ``None`` with ``issues`` filled.

    Parameters
    ----------
    shapes
        The shape of the network input and of every layer built so far.
    failed
        Earlier layers that could not be built: reading one is not reported
        again (its own problem already is), the layer is just skipped.
    timesteps
        The network's T, which a given ``loop_dims.T`` must equal.
    """
    # First every check that needs no input shape, so that a layer reading a broken
    # layer still reports its own mistakes.
    fields = _check_fields(lname, spec, d, timesteps, issues)
    if fields is None or issues:
        return None
    shape = _input_shape(lname, fields, shapes, failed, issues)
    if shape is None:
        return None
    site = _Site(lname, spec, fields, shape, d, issues)
    if fields.kind in (LayerKind.CONV, LayerKind.LINEAR):
        if "K" not in fields.dims:
            site.issue("is required", "loop_dims.K")
            return None
        build = _linear if fields.kind is LayerKind.LINEAR else _conv
    elif fields.neuron is not NeuronKind.NONE:
        site.issue(f"a {fields.kind.value} layer has no neurons; use 'none'", "neuron")
        return None
    else:
        build = {LayerKind.POOL: _pool, LayerKind.ADD: _add}.get(fields.kind, _flatten)
    layer = build(site, shapes)
    return None if issues else layer


def _check_fields(lname: str, spec: Mapping[str, Any], d: NetworkDefaults, timesteps: Any,
                  issues: list[Issue]) -> _Fields | None:
    """Check every field that needs no input shape; ``None`` if any is wrong."""
    own: list[Issue] = []
    for key in spec:
        if key not in LAYER_FIELDS:
            own.append(Issue(f"unknown field (known: {', '.join(sorted(LAYER_FIELDS))})",
                             layer=lname, field=str(key)))
    kind = _kind(lname, spec, own)
    inputs = _inputs(lname, spec, own)
    dims = _loop_dims(lname, spec, own)
    precision = _precision(lname, spec, own)
    neuron = _neuron(lname, spec, kind, d, own)
    rate = spec.get("spike_rate", 1.0)
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate <= 1:
        own.append(Issue(f"must be a number in [0, 1], got {excerpt(rate)}", layer=lname,
                         field="spike_rate"))
    _window_issues(lname, dims, timesteps, own)
    issues.extend(own)
    if own or kind is None or inputs is None or neuron is None:
        return None
    return _Fields(kind, inputs, dims, precision, neuron, float(rate))


def _kind(lname: str, spec: Mapping[str, Any], issues: list[Issue]) -> LayerKind | None:
    try:
        return LayerKind(spec.get("type"))
    except (ValueError, TypeError):
        issues.append(Issue(f"unknown layer type {excerpt(spec.get('type'))} (one of "
                            f"{', '.join(k.value for k in LayerKind)})", layer=lname, field="type"))
        return None


def _inputs(lname: str, spec: Mapping[str, Any], issues: list[Issue]) -> tuple[str, ...] | None:
    inputs = spec.get("inputs")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, Sequence) or not inputs \
            or not all(isinstance(i, str) for i in inputs):
        issues.append(Issue("must be a non-empty list of tensor names", layer=lname,
                            field="inputs"))
        return None
    return tuple(inputs)


def _loop_dims(lname: str, spec: Mapping[str, Any], issues: list[Issue]) -> Mapping[str, Any]:
    dims = spec.get("loop_dims", {}) or {}
    if not isinstance(dims, Mapping):
        issues.append(Issue("must be a mapping such as {K: 64, FY: 3, FX: 3}", layer=lname,
                            field="loop_dims"))
        return {}
    for key, v in dims.items():
        if key not in LOOP_DIMS:
            issues.append(Issue("unknown loop dimension", layer=lname,
                                field=f"loop_dims.{key}"))
            continue
        top = MAX_EXTENT if key in SPATIAL_DIMS else MAX_COUNT
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top:
            issues.append(Issue(f"must be a positive integer up to {top}, got {excerpt(v)}",
                                layer=lname, field=f"loop_dims.{key}"))
    return dims


def _window_issues(lname: str, dims: Mapping[str, Any], timesteps: Any,
                   issues: list[Issue]) -> None:
    # Every layer runs over the whole window, so T is the network's; the batch is always 1.
    valid_t = isinstance(timesteps, int) and not isinstance(timesteps, bool)
    if isinstance(dims.get("T"), int) and valid_t and dims["T"] != timesteps:
        issues.append(Issue(f"is {dims['T']} but the network has timesteps: {timesteps}",
                            layer=lname, field="loop_dims.T"))
    if isinstance(dims.get("B"), int) and dims["B"] != 1:
        issues.append(Issue(f"batch must be 1, got {dims['B']}", layer=lname,
                            field="loop_dims.B"))


def _precision(lname: str, spec: Mapping[str, Any], issues: list[Issue]) -> Mapping[str, Any]:
    prec = spec.get("operand_precision", {}) or {}
    if not isinstance(prec, Mapping):
        issues.append(Issue("must be a mapping such as {W: 4, O: 1, V: 12}", layer=lname,
                            field="operand_precision"))
        return {}
    for key, v in prec.items():
        if key not in PRECISION_KEYS:
            issues.append(Issue("unknown operand (W, O, V, psum)", layer=lname,
                                field=f"operand_precision.{key}"))
        elif not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_COUNT:
            issues.append(Issue(f"must be a positive integer up to {MAX_COUNT}, got "
                                f"{excerpt(v)}", layer=lname, field=f"operand_precision.{key}"))
    return prec


def _neuron(lname: str, spec: Mapping[str, Any], kind: LayerKind | None, d: NetworkDefaults,
            issues: list[Issue]) -> NeuronKind | None:
    default_neuron = d.neuron.value if kind in (LayerKind.CONV, LayerKind.LINEAR) else "none"
    try:
        return NeuronKind(spec.get("neuron", default_neuron))
    except (ValueError, TypeError):
        issues.append(Issue(f"unknown neuron {excerpt(spec.get('neuron'))} (one of "
                            f"{', '.join(n.value for n in NeuronKind)})", layer=lname,
                            field="neuron"))
        return None


def _input_shape(lname: str, fields: _Fields, shapes: Mapping[str, Shape], failed: set[str],
                 issues: list[Issue]) -> Shape | None:
    """The first input's shape once the inputs exist and their number suits the kind."""
    inputs = fields.inputs
    missing = [i for i in inputs if i not in shapes and i not in failed]
    if missing:
        issues.append(Issue(f"unknown or later tensor(s) {excerpt(', '.join(missing))} (inputs "
                            "must be the network input or earlier layers)", layer=lname,
                            field="inputs"))
        return None
    if any(i in failed for i in inputs):
        # The input's own problem is already reported; its shape is unknown, so stop quietly.
        return None
    if fields.kind is LayerKind.ADD and len(inputs) < 2:
        issues.append(Issue("an add needs two or more inputs", layer=lname, field="inputs"))
        return None
    if fields.kind is not LayerKind.ADD and len(inputs) != 1:
        issues.append(Issue(f"a {fields.kind.value} layer takes exactly one input", layer=lname,
                            field="inputs"))
        return None
    return shapes[inputs[0]]


def _weighted_bits(site: _Site) -> dict[str, int]:
    """Output, weight and state precision of a conv or linear layer."""
    prec, d = site.fields.precision, site.defaults
    return dict(output_bits=prec.get("O", d.spike_bits if site.fields.neuron.spiking
                                     else d.activation_bits),
                weight_bits=prec.get("W", d.weight_bits), state_bits=prec.get("V", d.state_bits))


def _linear(site: _Site, shapes: Mapping[str, Shape]) -> Layer | None:
    c, iy, ix, _ = site.shape
    source = site.fields.inputs[0]
    if iy != 1 or ix != 1:
        site.issue(f"input {excerpt(source)} is {iy}x{ix}; flatten it first", "inputs")
        return None
    site.check_given("C", c, f"input {excerpt(source)}")
    for key in ("OY", "OX", "FY", "FX"):
        site.check_given(key, 1, "a linear layer")
    if site.issues:
        return None
    return Layer(kind=LayerKind.LINEAR, k=site.fields.dims["K"], c=c, oy=1, ox=1,
                 neuron=site.fields.neuron, **_weighted_bits(site), **site.common())


def _conv(site: _Site, shapes: Mapping[str, Shape]) -> Layer | None:
    c, iy, ix, _ = site.shape
    dims, spec = site.fields.dims, site.spec
    k, fy, fx = dims["K"], dims.get("FY", 1), dims.get("FX", 1)
    groups = spec.get("groups", 1)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 \
            or c % groups or k % groups:
        site.issue(f"must be an integer >= 1 dividing both the input channels ({c}) and K "
                   f"({k}), got {groups!r}", "groups")
        return None
    stride = _pair(spec.get("stride", 1), site.name, "stride", site.issues)
    pad_spec = spec.get("padding", "same")
    pad = ((fy - 1) // 2, (fx - 1) // 2) if pad_spec == "same" else \
        _pair(pad_spec, site.name, "padding", site.issues)
    if stride is None or pad is None:
        return None
    if min(stride) < 1 or min(pad) < 0:
        site.issue("stride must be >= 1 and padding >= 0",
                   "stride" if min(stride) < 1 else "padding")
        return None
    if fy > iy + 2 * pad[0] or fx > ix + 2 * pad[1]:
        site.issue(f"kernel {fy}x{fx} is larger than the padded input map "
                   f"{iy + 2 * pad[0]}x{ix + 2 * pad[1]}",
                   "loop_dims.FY" if fy > iy + 2 * pad[0] else "loop_dims.FX")
        return None
    oy, ox = _spatial_out(iy, fy, stride[0], pad[0]), _spatial_out(ix, fx, stride[1], pad[1])
    if max(oy, ox) > MAX_EXTENT:
        site.issue(f"makes a {oy}x{ox} output, beyond the {MAX_EXTENT} rows allowed along an "
                   "axis", "padding")
        return None
    site.check_given("C", c // groups, f"input {site.fields.inputs[0]!r} and groups: {groups}")
    site.check_given("OY", oy, "the input, kernel, stride and padding")
    site.check_given("OX", ox, "the input, kernel, stride and padding")
    if site.issues:
        return None
    return Layer(kind=LayerKind.CONV, k=k, c=c // groups, groups=groups, oy=oy, ox=ox, fy=fy,
                 fx=fx, stride_y=stride[0], stride_x=stride[1], pad_y=pad[0], pad_x=pad[1],
                 neuron=site.fields.neuron, **_weighted_bits(site), **site.common())


def _pool(site: _Site, shapes: Mapping[str, Shape]) -> Layer | None:
    c, iy, ix, ibits = site.shape
    dims, spec, lname, issues = site.fields.dims, site.spec, site.name, site.issues
    kernel = _pair(spec.get("kernel", [dims.get("FY", 2), dims.get("FX", 2)]), lname, "kernel",
                   issues)
    stride = _pair(spec.get("stride", kernel), lname, "stride", issues) if kernel else None
    pad = _pair(spec.get("padding", 0), lname, "padding", issues)
    ptype = spec.get("pool", "max")
    if ptype not in ("max", "avg", "sum"):
        site.issue(f"unknown pool {excerpt(ptype)} (max, avg, sum)", "pool")
    if kernel is None or stride is None or pad is None or issues:
        return None
    if min(kernel) < 1 or min(stride) < 1 or min(pad) < 0:
        site.issue("kernel and stride must be >= 1, padding >= 0", "kernel")
        return None
    if kernel[0] > iy + 2 * pad[0] or kernel[1] > ix + 2 * pad[1]:
        site.issue(f"kernel {kernel[0]}x{kernel[1]} is larger than the input map {iy}x{ix}",
                   "kernel")
        return None
    oy = _spatial_out(iy, kernel[0], stride[0], pad[0])
    ox = _spatial_out(ix, kernel[1], stride[1], pad[1])
    if max(oy, ox) > MAX_EXTENT:
        site.issue(f"makes a {oy}x{ox} output, beyond the {MAX_EXTENT} rows allowed along an "
                   "axis", "padding")
        return None
    site.check_given("K", c, "a pool keeps the channels of its input; it")
    site.check_given("C", c, f"input {excerpt(site.fields.inputs[0])}")
    site.check_given("FY", kernel[0], "the kernel")
    site.check_given("FX", kernel[1], "the kernel")
    site.check_given("OY", oy, "the input, kernel and stride")
    site.check_given("OX", ox, "the input, kernel and stride")
    if site.issues:
        return None
    return Layer(kind=LayerKind.POOL, k=c, c=c, oy=oy, ox=ox, fy=kernel[0], fx=kernel[1],
                 stride_y=stride[0], stride_x=stride[1], pad_y=pad[0], pad_x=pad[1],
                 output_bits=site.fields.precision.get("O", ibits), pool_type=ptype,
                 **site.common())


def _add(site: _Site, shapes: Mapping[str, Shape]) -> Layer | None:
    c, iy, ix, _ = site.shape
    inputs = site.fields.inputs
    shapes_in = [shapes[i] for i in inputs]
    first = shapes_in[0]
    for src, (sc, sy, sx, _) in zip(inputs[1:], shapes_in[1:], strict=True):
        if (sc, sy, sx) != first[:3]:
            site.issue(f"input {excerpt(src)} is {sc}x{sy}x{sx} but {excerpt(inputs[0])} is "
                       f"{first[0]}x{first[1]}x{first[2]} (channels x OY x OX must match)",
                       "inputs")
    if site.issues:
        return None
    widest = max(s[3] for s in shapes_in)
    exact = widest + math.ceil(math.log2(len(inputs))) if widest > 1 else \
        math.ceil(math.log2(len(inputs) + 1))
    d = site.defaults
    obits = site.fields.precision.get("O", exact if d.add_output_bits == "exact" else widest)
    why = f"the shape of input {excerpt(inputs[0])}"
    for key, inferred in (("K", c), ("C", c), ("OY", iy), ("OX", ix), ("FY", 1), ("FX", 1)):
        site.check_given(key, inferred, why)
    if site.issues:
        return None
    return Layer(kind=LayerKind.ADD, k=c, c=c, oy=iy, ox=ix, output_bits=obits, **site.common())


def _flatten(site: _Site, shapes: Mapping[str, Shape]) -> Layer | None:
    # (C, Y, X) -> (C*Y*X, 1, 1)
    c, iy, ix, ibits = site.shape
    why = f"flattening input {excerpt(site.fields.inputs[0])} ({c}x{iy}x{ix})"
    for key, inferred in (("K", c * iy * ix), ("C", c), ("OY", 1), ("OX", 1), ("FY", 1),
                          ("FX", 1)):
        site.check_given(key, inferred, why)
    if site.issues:
        return None
    return Layer(kind=LayerKind.FLATTEN, k=c * iy * ix, c=c, oy=1, ox=1, output_bits=ibits,
                 **site.common())


__all__ = ["NetworkDefaults", "build_network", "layer_spec_issues"]
