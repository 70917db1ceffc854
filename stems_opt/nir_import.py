"""Reading NIR graphs (the neuromorphic exchange format) as networks.

snnTorch, SpikingJelly, Norse, Sinabs, Lava-dl and others export trained
networks as NIR files. :func:`nir_to_network_dict` turns a NIR graph into the
network YAML form of ``docs/formats.md``, which :func:`load_nir` then builds
with the usual shape checks. Exports differ in small ways, so the graph is
read defensively:

- nodes are ordered by the edges, never by the order in the file (``nir.read``
  returns them sorted by name);
- shapes are propagated from the Input node, not taken from the nodes' own
  ``input_type`` (often missing or wrong); a leading batch (or time)
  dimension of the input is dropped;
- neuron parameters are not read at all, so scalar or per-channel parameters
  both work;
- a grouped conv has ``weight.shape[1] * groups`` input channels;
- nested graphs are inlined, their nodes named ``outer.inner``;
- several edges into one node mean their sum: an ``add`` layer is inserted.

A conv or linear node whose only consumer is a neuron node becomes one layer
with that neuron; ``T`` and the precisions come from the caller, not from the
file (its metadata is not reliable for them). The ``nir`` package is imported
only when a file is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stems_opt.errors import Issue, StemsInputError
from stems_opt.io import network_from_dict
from stems_opt.network import Network

NIR_SUFFIX = ".nir"

# NIR neuron type -> (our neuron, state variables, whether the output is the state, not spikes)
NEURONS: dict[str, tuple[str, int, bool]] = {
    "LIF": ("lif", 1, False),
    "IF": ("if", 1, False),
    "CubaLIF": ("lif", 2, False),  # synaptic current and membrane potential
    "LI": ("lif", 1, True),
    "I": ("if", 1, True),
    "CubaLI": ("lif", 2, True),
    "Threshold": ("stateless", 0, False),
}
WEIGHTED = ("Conv2d", "Conv1d", "Linear", "Affine")
POOLS = {"SumPool2d": "sum", "AvgPool2d": "avg"}
PASS = ("Input", "Output", "Flatten", "NIRGraph")
SUPPORTED = sorted({*NEURONS, *WEIGHTED, *POOLS, *PASS})


@dataclass(frozen=True)
class NirOptions:
    """What a NIR file does not say reliably: the time window and the precisions.

    Parameters
    ----------
    timesteps
        ``T``, the time window every layer runs over.
    weight_bits, state_bits, spike_bits
        Precision of weights, of one neuron state variable (CubaLIF has two)
        and of spikes (also used for the network input), in bits.
    """

    timesteps: int
    weight_bits: int = 4
    state_bits: int = 12
    spike_bits: int = 1


@dataclass(frozen=True)
class _Tensor:
    """A tensor of the network being built: its name and shape (C, H, W) with its rank."""

    name: str
    shape: tuple[int, int, int]
    rank: int


def load_nir(path: str | Path, options: NirOptions) -> Network:
    """Read a NIR file as a :class:`~stems_opt.network.Network`.

    Raises
    ------
    StemsInputError
        Naming the file and the node, for a file that cannot be read, an
        unsupported node or shapes that do not fit.
    """
    return network_from_dict(read_nir_document(path, options), str(path))


def read_nir_document(path: str | Path, options: NirOptions) -> dict[str, Any]:
    """The network YAML form (a dict) of the NIR file at ``path``."""
    graph = read_nir_graph(path)
    try:
        return nir_to_network_dict(graph, options, name=Path(path).stem, source=Path(path).name)
    except StemsInputError as exc:
        raise exc.with_file(str(path)) from None


def read_nir_graph(path: str | Path) -> Any:
    """``nir.read`` without its type check (which rejects real exports)."""
    try:
        import nir
    except ImportError:
        raise StemsInputError(Issue("reading NIR files needs the nir package: "
                                    "pip install 'stems-opt[nir]'", file=str(path))) from None
    p = Path(path)
    if not p.is_file():
        raise StemsInputError(Issue("file not found" if not p.exists() else
                                    "is a directory, not a file", file=str(path)))
    try:
        return nir.read(p, type_check=False)
    except Exception as exc:  # h5py and nir raise many kinds; all mean an unreadable file
        raise StemsInputError(Issue(f"cannot be read as a NIR graph: {exc}",
                                    file=str(path))) from None


def _kind(node: Any) -> str:
    return type(node).__name__


def _inline(graph: Any, prefix: str = "") -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Nodes and edges of ``graph`` with nested graphs inlined as ``outer.inner``.

    An edge into a nested graph ``g`` goes to each of its Input nodes, an
    edge out of ``g`` leaves from each of its Output nodes; the inner Input
    and Output nodes then pass their tensor through.
    """
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    entries: dict[str, list[str]] = {}
    exits: dict[str, list[str]] = {}
    for name, node in graph.nodes.items():
        full = prefix + str(name)
        if _kind(node) == "NIRGraph":
            inner_nodes, inner_edges = _inline(node, full + ".")
            nodes.update(inner_nodes)
            edges.extend(inner_edges)
            entries[full] = [f"{full}.{n}" for n, v in node.nodes.items() if _kind(v) == "Input"]
            exits[full] = [f"{full}.{n}" for n, v in node.nodes.items() if _kind(v) == "Output"]
        else:
            nodes[full] = node
    for src, dst in graph.edges:
        src, dst = prefix + str(src), prefix + str(dst)
        for s in exits.get(src, [src]):
            for d in entries.get(dst, [dst]):
                edges.append((s, d))
    return nodes, edges


def _topological(nodes: Mapping[str, Any], edges: Iterable[tuple[str, str]],
                 issues: list[Issue]) -> tuple[list[str], dict[str, list[str]]]:
    """Nodes ordered by the edges (ties by first mention), and each node's predecessors."""
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    succs: dict[str, list[str]] = {n: [] for n in nodes}
    rank: dict[str, int] = {}
    for src, dst in edges:
        for end in (src, dst):
            if end not in nodes:
                issues.append(Issue(f"an edge {src!r} -> {dst!r} names node {end!r}, which is "
                                    "not in the graph", layer=end, field="edges"))
        if src in nodes and dst in nodes and src not in preds[dst]:
            preds[dst].append(src)
            succs[src].append(dst)
        rank.setdefault(src, len(rank))
        rank.setdefault(dst, len(rank))
    for n in nodes:
        rank.setdefault(n, len(rank))
    waiting = {n: len(p) for n, p in preds.items()}
    ready = sorted((n for n, w in waiting.items() if w == 0), key=rank.__getitem__)
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for s in succs[n]:
            waiting[s] -= 1
            if waiting[s] == 0:
                ready.append(s)
        ready.sort(key=rank.__getitem__)
    cyclic = [n for n in nodes if n not in order]
    if cyclic:
        issues.append(Issue(f"the graph has a cycle through {', '.join(map(repr, cyclic))}; "
                            "recurrent connections are not supported", field="edges"))
    return order, preds


def _ints(value: Any, n: int, node: str, fname: str, issues: list[Issue]) -> tuple[int, ...]:
    """``value`` (scalar or array) as ``n`` integers."""
    import numpy as np

    arr = np.atleast_1d(np.asarray(value)).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, n)
    if arr.size != n or not np.all(np.equal(np.mod(arr, 1), 0)):
        issues.append(Issue(f"expected {n} integer(s), got {value!r}", layer=node, field=fname))
        return (1,) * n
    return tuple(int(v) for v in arr)


def _input_shape(name: str, node: Any, consumers: list[Any],
                 issues: list[Issue]) -> _Tensor | None:
    """The network input's shape, dropping leading batch or time dimensions.

    The rank is the one its consumers expect: 3 for Conv2d and pools, 2 for
    Conv1d, 1 for Linear and Affine (or a flatten of a larger tensor).
    """
    import numpy as np

    raw = (node.input_type or {}).get("input")
    if raw is None:
        issues.append(Issue("has no shape", layer=name, field="shape"))
        return None
    shape = tuple(int(v) for v in np.atleast_1d(np.asarray(raw)).ravel())
    want = min(3, len(shape))
    for c in consumers:
        k = _kind(c)
        if k in ("Conv2d", *POOLS):
            want = 3
        elif k == "Conv1d":
            want = 2
        elif k in ("Linear", "Affine"):
            fan_in = int(np.asarray(c.weight).shape[1])
            want = 1 if shape and shape[-1] == fan_in else min(3, len(shape))
    kept = shape[len(shape) - want:]
    if len(shape) < want or min(kept, default=0) < 1:
        issues.append(Issue(f"shape {list(shape)} does not end in {want} positive "
                            "dimension(s)", layer=name, field="shape"))
        return None
    return _Tensor(name, (*kept, 1, 1)[:3], want)


@dataclass
class _Builder:
    """Walks the nodes in order and writes layer specs (the network YAML form)."""

    nodes: Mapping[str, Any]
    preds: Mapping[str, list[str]]
    succs: Mapping[str, list[str]]
    options: NirOptions
    issues: list[Issue]

    def __post_init__(self) -> None:
        self.layers: list[dict[str, Any]] = []
        self.tensors: dict[str, _Tensor] = {}
        self.fused: dict[str, str] = {}  # neuron node -> the weighted node it belongs to
        self.outputs: list[str] = []
        self.input: _Tensor | None = None

    def consumers(self, node: str) -> list[Any]:
        """The nodes reading ``node``'s tensor, looking through pass-through nodes."""
        out = []
        for s in self.succs[node]:
            if _kind(self.nodes[s]) in ("Input", "Output"):
                out.extend(self.consumers(s))
            else:
                out.append(self.nodes[s])
        return out

    def fail(self, node: str, message: str, fname: str | None = None) -> None:
        self.issues.append(Issue(message, layer=node, field=fname))

    def source(self, node: str) -> _Tensor | None:
        """The tensor ``node`` reads: its predecessor's, or their sum."""
        preds = self.preds[node]
        if not preds:
            self.fail(node, f"{_kind(self.nodes[node])} node has no input edge")
            return None
        ins = [self.tensors.get(p) for p in preds]
        if any(t is None for t in ins):
            return None  # an earlier node failed and said so
        if len(ins) == 1:
            return ins[0]
        shapes = {t.shape for t in ins}
        if len(shapes) > 1:
            self.fail(node, "its inputs are summed but their shapes differ: " + ", ".join(
                f"{t.name} {list(t.shape[:t.rank])}" for t in ins), "edges")
            return None
        name = f"{node}_add"
        self.layers.append({"name": name, "type": "add", "inputs": [t.name for t in ins],
                            "comment": f"sum of the edges into NIR node {node!r}"})
        return _Tensor(name, ins[0].shape, ins[0].rank)

    def add(self, node: str) -> None:
        kind = _kind(self.nodes[node])
        if kind == "Input":
            if self.preds[node]:  # the Input of an inlined nested graph
                src = self.source(node)
                if src is not None:
                    self.tensors[node] = src
                return
            if self.input is not None:
                self.fail(node, f"a second network input (the first is {self.input.name!r}); "
                          "only one is supported")
                return
            self.input = _input_shape(node, self.nodes[node], self.consumers(node), self.issues)
            if self.input is not None:
                self.tensors[node] = self.input
            return
        if kind in NEURONS and node in self.fused:
            fused = self.tensors.get(self.fused[node])
            if fused is not None:
                self.tensors[node] = fused
            return
        if kind in NEURONS:
            self.fail(node, f"{kind} node does not directly follow a Conv1d, Conv2d, Linear or "
                      "Affine node (as its only consumer); neurons are modelled only at the "
                      "outputs of weighted layers")
            return
        src = self.source(node)
        if src is None:
            return
        if kind == "Output":
            self.tensors[node] = src
            if not self.succs[node] and src.name not in self.outputs:
                self.outputs.append(src.name)
        elif kind in ("Conv2d", "Conv1d"):
            self.conv(node, src)
        elif kind in ("Linear", "Affine"):
            self.linear(node, src)
        elif kind in POOLS:
            self.pool(node, src)
        elif kind == "Flatten":
            self.flatten(node, src)
        else:
            self.fail(node, f"unsupported NIR node type {kind} (supported: "
                      f"{', '.join(SUPPORTED)})", "type")

    def neuron_of(self, node: str) -> tuple[str, dict[str, int], str]:
        """The neuron fused into weighted ``node``, its precisions and a comment part."""
        succ = self.succs[node]
        if len(succ) == 1 and _kind(self.nodes[succ[0]]) in NEURONS \
                and self.preds[succ[0]] == [node]:
            kind = _kind(self.nodes[succ[0]])
            neuron, state_vars, outputs_state = NEURONS[kind]
            self.fused[succ[0]] = node
            prec: dict[str, int] = {}
            if state_vars > 1:
                prec["V"] = state_vars * self.options.state_bits
            if outputs_state:
                prec["O"] = self.options.state_bits
            return neuron, prec, f" + {kind} {succ[0]!r}"
        return "none", {}, ""

    def weighted(self, node: str, spec: dict[str, Any], shape: tuple[int, int, int],
                 rank: int) -> None:
        neuron, prec, more = self.neuron_of(node)
        spec.update(neuron=neuron)
        if prec:
            spec["operand_precision"] = prec
        spec["comment"] = f"NIR {_kind(self.nodes[node])} {node!r}{more}"
        self.layers.append(spec)
        self.tensors[node] = _Tensor(node, shape, rank)

    def conv(self, node: str, src: _Tensor) -> None:
        import numpy as np

        n = self.nodes[node]
        dims = 2 if _kind(n) == "Conv2d" else 1
        w = np.asarray(n.weight)
        if w.ndim != 2 + dims:
            self.fail(node, f"weight has shape {list(w.shape)}; a {_kind(n)} weight has "
                      f"{2 + dims} dimensions", "weight")
            return
        if src.rank != dims + 1:
            self.fail(node, f"its input {src.name!r} has shape {list(src.shape[:src.rank])}; "
                      f"{_kind(n)} needs {dims + 1} dimensions", "input_type")
            return
        groups = int(np.asarray(n.groups if n.groups is not None else 1).ravel()[0])
        k, c_in = int(w.shape[0]), int(w.shape[1]) * groups
        if c_in != src.shape[0]:
            self.fail(node, f"weight has {w.shape[1]} input channels x {groups} groups = {c_in}"
                      f", but its input {src.name!r} has {src.shape[0]} channels", "weight")
            return
        kernel = (*w.shape[2:], 1)[:2]
        stride = _ints(n.stride, dims, node, "stride", self.issues)
        dilation = _ints(n.dilation if n.dilation is not None else 1, dims, node, "dilation",
                         self.issues)
        if max(dilation) > 1:
            self.fail(node, f"dilation {list(dilation)} is not supported", "dilation")
            return
        if isinstance(n.padding, str):
            if n.padding not in ("same", "valid"):
                self.fail(node, f"unknown padding {n.padding!r}", "padding")
                return
            pad = tuple((f - 1) // 2 for f in kernel[:dims]) if n.padding == "same" else \
                (0,) * dims
        else:
            pad = _ints(n.padding, dims, node, "padding", self.issues)
        stride2, pad2 = (*stride, 1)[:2], (*pad, 0)[:2]
        out = [(src.shape[1 + a] + 2 * pad2[a] - kernel[a]) // stride2[a] + 1 for a in (0, 1)]
        if min(out) < 1:
            self.fail(node, f"kernel {list(kernel[:dims])} is larger than its padded input",
                      "weight")
            return
        spec: dict[str, Any] = {
            "name": node, "type": "conv", "inputs": [src.name],
            "loop_dims": {"K": k, "C": c_in // groups, "FY": kernel[0], "FX": kernel[1]},
            "stride": list(stride2), "padding": list(pad2)}
        if groups > 1:
            spec["groups"] = groups
        self.weighted(node, spec, (k, out[0], out[1]), src.rank)

    def linear(self, node: str, src: _Tensor) -> None:
        import numpy as np

        w = np.asarray(self.nodes[node].weight)
        if w.ndim != 2:
            self.fail(node, f"weight has shape {list(w.shape)}; expected (out, in)", "weight")
            return
        size = src.shape[0] * src.shape[1] * src.shape[2]
        if int(w.shape[1]) != size:
            self.fail(node, f"weight reads {w.shape[1]} features but its input {src.name!r} "
                      f"has shape {list(src.shape[:src.rank])} ({size} features)", "weight")
            return
        if src.rank > 1:  # exports may leave the flatten implicit
            src = self._flatten_layer(f"{node}_flatten", src, f"implicit before {node!r}")
        self.weighted(node, {"name": node, "type": "linear", "inputs": [src.name],
                             "loop_dims": {"K": int(w.shape[0]), "C": size}},
                      (int(w.shape[0]), 1, 1), 1)

    def pool(self, node: str, src: _Tensor) -> None:
        n = self.nodes[node]
        if src.rank != 3:
            self.fail(node, f"its input {src.name!r} has shape {list(src.shape[:src.rank])}; "
                      f"{_kind(n)} needs 3 dimensions", "input_type")
            return
        kernel = _ints(n.kernel_size, 2, node, "kernel_size", self.issues)
        stride = _ints(n.stride if n.stride is not None else kernel, 2, node, "stride",
                       self.issues)
        pad = _ints(n.padding if n.padding is not None else 0, 2, node, "padding", self.issues)
        out = [(src.shape[1 + a] + 2 * pad[a] - kernel[a]) // stride[a] + 1 for a in (0, 1)]
        if min(out) < 1:
            self.fail(node, f"kernel {list(kernel)} is larger than its input", "kernel_size")
            return
        self.layers.append({"name": node, "type": "pool", "inputs": [src.name],
                            "pool": POOLS[_kind(n)], "kernel": list(kernel),
                            "stride": list(stride), "padding": list(pad),
                            "comment": f"NIR {_kind(n)} {node!r}"})
        self.tensors[node] = _Tensor(node, (src.shape[0], out[0], out[1]), 3)

    def flatten(self, node: str, src: _Tensor) -> None:
        # Flattening whatever dimensions remain: exports disagree on whether
        # start_dim counts the batch, and only a full flatten can feed a linear layer.
        self.tensors[node] = src if src.rank == 1 else \
            self._flatten_layer(node, src, f"NIR Flatten {node!r}")

    def _flatten_layer(self, name: str, src: _Tensor, comment: str) -> _Tensor:
        self.layers.append({"name": name, "type": "flatten", "inputs": [src.name],
                            "comment": comment})
        size = src.shape[0] * src.shape[1] * src.shape[2]
        return _Tensor(name, (size, 1, 1), 1)


def nir_to_network_dict(graph: Any, options: NirOptions, name: str = "nir",
                        source: str = "a NIR graph") -> dict[str, Any]:
    """The network YAML form of a NIR ``graph`` (see the module docstring).

    Parameters
    ----------
    graph
        A ``nir.NIRGraph`` (read with ``type_check=False`` or built in code).
    options
        ``T`` and the precisions, which NIR does not carry reliably.
    name
        The network's name.
    source
        Where the graph came from, for the document's comment.

    Raises
    ------
    StemsInputError
        Every problem found, each naming the NIR node (as the layer) and its field.
    """
    issues: list[Issue] = []
    nodes, edges = _inline(graph)
    order, preds = _topological(nodes, edges, issues)
    if issues:
        raise StemsInputError(issues)
    succs: dict[str, list[str]] = {n: [] for n in nodes}
    for dst, ps in preds.items():
        for p in ps:
            succs[p].append(dst)
    b = _Builder(nodes, preds, succs, options, issues)
    for node in order:
        b.add(node)
    if b.input is None and not issues:
        issues.append(Issue("the graph has no Input node", field="nodes"))
    if not b.layers and not issues:
        issues.append(Issue("the graph has no conv, linear or pool node", field="nodes"))
    if issues:
        raise StemsInputError(issues)
    assert b.input is not None
    c, h, w = b.input.shape
    o = options
    doc: dict[str, Any] = {
        "name": name,
        "comment": f"converted from {source} by stems-opt; T and precisions given on "
                   "conversion",
        "timesteps": o.timesteps,
        "defaults": {"weight_bits": o.weight_bits, "spike_bits": o.spike_bits,
                     "state_bits": o.state_bits},
        "input": {"name": b.input.name, "channels": c, "height": h, "width": w,
                  "bits": o.spike_bits},
        "layers": b.layers,
    }
    if b.outputs:
        doc["outputs"] = b.outputs
    return doc


__all__ = ["NIR_SUFFIX", "NirOptions", "load_nir", "nir_to_network_dict", "read_nir_document",
           "read_nir_graph"]
