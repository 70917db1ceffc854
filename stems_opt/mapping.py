"""A mapping: segments of the layer order and every per-segment decision.

Decisions not written down take the plain defaults (weights streamed in one
chunk, state spilled, activations through DRAM, halos re-read, one sub-tile);
:meth:`Mapping.canonical` writes every decision out, which is what the
mapping files contain.
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from stems_opt.checks import enum_field as _enum
from stems_opt.checks import expect_mapping as _expect_mapping
from stems_opt.checks import int_field as _int
from stems_opt.checks import unknown_fields as _unknown
from stems_opt.errors import Issue, StemsInputError, excerpt
from stems_opt.limits import MAX_COUNT
from stems_opt.network import Axis, Network, divisors

if TYPE_CHECKING:
    from stems_opt.problem import Problem


class Order(str, Enum):
    """Loop order of time batches and tiles inside a segment."""

    TIME_OUTER = "time_outer"
    SPACE_OUTER = "space_outer"


class StateMode(str, Enum):
    """Where a layer's neuron state lives during its segment."""

    RESIDENT = "resident"
    TILE_RESIDENT = "tile_resident"
    SPILLED = "spilled"


class Placement(str, Enum):
    """Where an activation tensor lives between its producer and a consumer."""

    ON_CHIP = "on_chip"
    DRAM = "dram"


class Halo(str, Enum):
    """What happens to overlap rows of a DRAM-read tensor at tile boundaries."""

    KEEP = "keep"
    REREAD = "reread"


@dataclass(frozen=True)
class WeightChoice:
    """Weights either resident for the whole segment or streamed in ``chunks`` along K."""

    resident: bool = False
    chunks: int = 1

    def __str__(self) -> str:
        return "resident" if self.resident else f"streamed/{self.chunks}"


STREAMED = WeightChoice()
RESIDENT = WeightChoice(resident=True)

NEST_DIMS = ("K", "C", "OY", "OX", "FY", "FX", "T")
"""The dimensions a loop of a pinned nest may walk."""
NEST_OPERANDS = ("W", "I")
"""Operands an inner buffer may hold (``held``)."""


@dataclass(frozen=True)
class StepNest:
    """The loop nest pinned for the steps of one shape of a layer (``nests``
    in a mapping file, ``docs/formats.md``).

    ``oy``/``ox`` are the step's output rows and columns, ``iy``/``ix`` the
    input rows and columns of its window: they name the step. ``loops`` are
    ``(dimension, factor)`` from the outermost loop down to the array;
    ``held`` gives, per buffered operand, how many innermost loops its inner
    buffer holds.
    """

    oy: int
    ox: int
    iy: int
    ix: int
    loops: tuple[tuple[str, int], ...]
    held: tuple[tuple[str, int], ...] = ()

    @property
    def step(self) -> tuple[int, int, int, int]:
        """``(oy, ox, iy, ix)``: which steps of the layer the nest runs."""
        return self.oy, self.ox, self.iy, self.ix


@dataclass(frozen=True)
class Segment:
    """Layers run together step by step, with their decisions.

    Parameters
    ----------
    layers
        Contiguous layer names in topological order.
    time_batch
        ``Tb``, a divisor of T.
    tiles
        ``n``, the tile count along ``axis``.
    sub_tiles
        Per layer ``m`` (default 1).
    weights
        Per weighted layer (default streamed, one chunk).
    states
        Per stateful layer (default spilled).
    activations
        Placement of tensors produced in this segment for their consumers in
        this segment, keyed by producer (default ``dram``).
    inputs
        Placement of tensors produced before this segment (or the network
        input) for this segment's consumers, keyed by producer (default
        ``dram``).
    halos
        Per DRAM-read tensor (default ``reread``).
    nests
        Per conv or linear layer, the loop nests pinned for its steps (on
        hardware with ``loop_nests``); a step without one runs the
        objective's nest (``docs/model.md`` 7).
    """

    layers: tuple[str, ...]
    time_batch: int
    tiles: int = 1
    axis: Axis = Axis.OY
    order: Order = Order.TIME_OUTER
    sub_tiles: dict[str, int] = field(default_factory=dict)
    weights: dict[str, WeightChoice] = field(default_factory=dict)
    states: dict[str, StateMode] = field(default_factory=dict)
    activations: dict[str, Placement] = field(default_factory=dict)
    inputs: dict[str, Placement] = field(default_factory=dict)
    halos: dict[str, Halo] = field(default_factory=dict)
    nests: dict[str, tuple[StepNest, ...]] = field(default_factory=dict)

    def sub_tile(self, layer: str) -> int:
        """``m`` of ``layer``."""
        return self.sub_tiles.get(layer, 1)

    def weight(self, layer: str) -> WeightChoice:
        """Weight decision of ``layer``."""
        return self.weights.get(layer, STREAMED)

    def state(self, layer: str) -> StateMode:
        """State decision of ``layer``."""
        return self.states.get(layer, StateMode.SPILLED)

    def activation(self, tensor: str) -> Placement:
        """In-segment placement of ``tensor``."""
        return self.activations.get(tensor, Placement.DRAM)

    def input(self, tensor: str) -> Placement:
        """Placement of the earlier ``tensor`` for this segment."""
        return self.inputs.get(tensor, Placement.DRAM)

    def halo(self, tensor: str) -> Halo:
        """Halo decision for DRAM-read ``tensor``."""
        return self.halos.get(tensor, Halo.REREAD)

    def steps(self, timesteps: int) -> int:
        """``N = S * n``."""
        return (timesteps // self.time_batch) * self.tiles

    def replace(self, **changes: object) -> Segment:
        """A copy with ``changes`` applied (dict fields are merged, not replaced)."""
        values = {f: getattr(self, f) for f in self.__dataclass_fields__}
        for key, value in changes.items():
            if isinstance(values[key], dict) and isinstance(value, dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
        return Segment(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Mapping:
    """Segments covering the layer order, with an optional name."""

    segments: tuple[Segment, ...]
    name: str = ""

    def segment_of(self, layer: str) -> int:
        """Index of the segment holding ``layer``."""
        for i, seg in enumerate(self.segments):
            if layer in seg.layers:
                return i
        raise KeyError(layer)

    def canonical(self, network: Network) -> Mapping:
        """Every decision written out (the form stored in mapping files)."""
        segs = []
        where = {name: i for i, s in enumerate(self.segments) for name in s.layers}
        for i, seg in enumerate(self.segments):
            layers = [network.layer(n) for n in seg.layers]
            inside = set(seg.layers)
            acts = {}
            for lay in layers:
                if any(c in inside for c in network.consumers(lay.name)):
                    acts[lay.name] = seg.activation(lay.name)
            ins = {}
            for lay in layers:
                for src in lay.inputs:
                    if src not in inside and where.get(src, -1) != i:
                        ins[src] = seg.input(src)
            dram_read = [t for t, p in {**acts, **ins}.items() if p is Placement.DRAM]
            halos = {t: seg.halo(t) for t in sorted(dram_read)}
            segs.append(Segment(
                layers=seg.layers, time_batch=seg.time_batch, tiles=seg.tiles, axis=seg.axis,
                order=seg.order,
                sub_tiles={lay.name: seg.sub_tile(lay.name) for lay in layers},
                weights={lay.name: seg.weight(lay.name) for lay in layers if lay.has_weights},
                states={lay.name: seg.state(lay.name) for lay in layers if lay.stateful},
                activations=acts, inputs=ins, halos=halos, nests=dict(seg.nests)))
        return Mapping(tuple(segs), self.name)

    def without_nests(self) -> Mapping:
        """A copy with no pinned nest (every step runs the objective's nest)."""
        return Mapping(tuple(Segment(**{**{f: getattr(s, f) for f in s.__dataclass_fields__},
                                        "nests": {}}) for s in self.segments), self.name)

    def to_dict(self) -> dict[str, Any]:
        """The mapping-file form ``{name, segments}`` (JSON-ready; see ``docs/formats.md``)."""
        return mapping_to_dict(self)["mapping"]

    @classmethod
    def from_dict(cls, doc: Any) -> Mapping:
        """Read the mapping-file form (with or without the ``mapping:`` wrapper).

        Raises
        ------
        StemsInputError
            With every problem found, each naming the segment and the field.
        """
        return mapping_from_dict(doc)


@dataclass(frozen=True)
class Violation:
    """One reason a mapping is not valid for a problem.

    ``code`` is a short stable identifier (``structure``, ``divisor``,
    ``range``, ``capacity``, ...); ``segment`` and ``layer`` say where.
    """

    code: str
    message: str
    segment: int | None = None
    layer: str | None = None
    field: str | None = None
    tile: int | None = None
    bits: int | None = None
    capacity_bits: int | None = None

    def __str__(self) -> str:
        where = []
        if self.segment is not None:
            where.append(f"segment {self.segment}")
        if self.layer:
            where.append(f"layer {excerpt(self.layer)}")
        if self.field:
            where.append(f"field {excerpt(self.field)}")
        return (", ".join(where) + ": " if where else "") + self.message


def check_structure(network: Network, mapping: Mapping, k_unroll: int = 1) -> list[Violation]:
    """Every structural violation (coverage, ranges, divisibility, keys).

    ``k_unroll`` is the array's K unrolling, the floor for ``K / chunks``.
    Keys of the per-segment tables may name anything (they come from a file),
    so every name is checked before the network is asked about it.
    """
    out: list[Violation] = []
    order = [layer.name for layer in network.layers]
    listed = [name for seg in mapping.segments for name in seg.layers]
    unknown = [n for n in listed if not network.has_layer(n)]
    for n in unknown:
        out.append(Violation("structure", "no such layer in the network", layer=n,
                             field="layers"))
    if unknown:
        return out
    for n in sorted({n for n in listed if listed.count(n) > 1}):
        out.append(Violation("structure", "layer is in more than one segment", layer=n,
                             field="layers"))
    for n in order:
        if n not in listed:
            out.append(Violation("structure", "layer is in no segment", layer=n, field="layers"))
    if out:
        return out
    if listed != order:
        out.append(Violation("structure", "segments must cut the layer order into contiguous "
                             "runs in order", field="layers"))
        return out
    for i, seg in enumerate(mapping.segments):
        out += segment_violations(network, i, seg, k_unroll)
    return out


def segment_violations(network: Network, i: int, seg: Segment, k_unroll: int = 1
                       ) -> list[Violation]:
    """The structural violations of segment ``i`` on its own (its layers must exist):
    ranges, divisibility and the keys of its tables."""
    if not seg.layers:
        return [Violation("structure", "empty segment", segment=i, field="layers")]
    return [*_frame_violations(network, i, seg),
            *_sub_tile_violations(network, i, seg),
            *_weight_violations(network, i, seg, k_unroll),
            *_state_violations(network, i, seg),
            *_tensor_violations(network, i, seg),
            *_sub_tile_value_violations(i, seg)]


def _unknown_key(i: int, table: str, key: str, what: str = "layer") -> Violation:
    return Violation("structure", f"no such {what} in the network", segment=i, layer=key,
                     field=table)


def _frame_violations(network: Network, i: int, seg: Segment) -> list[Violation]:
    """Time batch, tile count and order."""
    out: list[Violation] = []
    T = network.timesteps
    if not isinstance(seg.time_batch, int) or seg.time_batch < 1 or T % seg.time_batch:
        out.append(Violation("divisor", f"time_batch {seg.time_batch} must divide T = {T} "
                             f"(one of {excerpt(divisors(T))})", segment=i,
                             field="time_batch"))
    max_n = min(network.layer(n).extent(seg.axis) for n in seg.layers)
    if not 1 <= seg.tiles <= max_n:
        out.append(Violation("range", f"tiles {seg.tiles} must be in 1..{max_n} (the "
                             f"smallest {seg.axis.value} extent in the segment)", segment=i,
                             field="tiles"))
    if seg.order is Order.SPACE_OUTER and (seg.tiles == 1 or seg.time_batch == T):
        out.append(Violation("structure", "with one tile or Tb = T the order is "
                             "time_outer", segment=i, field="order"))
    return out


def _sub_tile_violations(network: Network, i: int, seg: Segment) -> list[Violation]:
    out: list[Violation] = []
    for key in seg.sub_tiles:
        if not network.has_layer(key):
            out.append(_unknown_key(i, "sub_tiles", key))
        elif key not in seg.layers:
            out.append(Violation("structure", "sub_tiles names a layer outside the segment",
                                 segment=i, layer=key, field="sub_tiles"))
    return out


def _sub_tile_value_violations(i: int, seg: Segment) -> list[Violation]:
    out: list[Violation] = []
    for name in seg.layers:
        m = seg.sub_tile(name)
        if not isinstance(m, int) or m < 1:
            out.append(Violation("range", f"sub_tiles must be >= 1, got {m}", segment=i,
                                 layer=name, field="sub_tiles"))
    return out


def _weight_violations(network: Network, i: int, seg: Segment, k_unroll: int
                       ) -> list[Violation]:
    out: list[Violation] = []
    for key, wc in seg.weights.items():
        if not network.has_layer(key):
            out.append(_unknown_key(i, "weights", key))
        elif key not in seg.layers or not network.layer(key).has_weights:
            out.append(Violation("structure", "weights names a layer of this segment "
                                 "without weights or outside it", segment=i, layer=key,
                                 field="weights"))
        elif not wc.resident:
            k = network.layer(key).k
            if wc.chunks < 1 or k % wc.chunks:
                out.append(Violation("divisor", f"chunks {wc.chunks} must divide K = {k}",
                                     segment=i, layer=key, field="weights"))
            elif wc.chunks > 1 and k // wc.chunks < k_unroll:
                out.append(Violation("range", f"K / chunks = {k // wc.chunks} is below "
                                     f"the array's K unrolling {k_unroll}", segment=i,
                                     layer=key, field="weights"))
    return out


def _state_violations(network: Network, i: int, seg: Segment) -> list[Violation]:
    out: list[Violation] = []
    for key, mode in seg.states.items():
        if not network.has_layer(key):
            out.append(_unknown_key(i, "states", key))
        elif key not in seg.layers or not network.layer(key).stateful:
            out.append(Violation("structure", "states names a layer of this segment "
                                 "without state or outside it", segment=i, layer=key,
                                 field="states"))
        elif mode is StateMode.TILE_RESIDENT and not (
                seg.order is Order.SPACE_OUTER and seg.tiles > 1
                and seg.time_batch < network.timesteps):
            out.append(Violation("structure", "tile_resident needs space_outer, tiles > 1 "
                                 "and time_batch < T", segment=i, layer=key, field="states"))
    return out


def _tensor_violations(network: Network, i: int, seg: Segment) -> list[Violation]:
    """The tables keyed by tensor: activations, inputs and halos."""
    out: list[Violation] = []
    inside = set(seg.layers)

    def read_inside(tensor: str) -> bool:
        known = network.has_layer(tensor) or tensor == network.input.name
        return known and any(c in inside for c in network.consumers(tensor))

    def known_tensor(key: str) -> bool:
        return network.has_layer(key) or key == network.input.name

    for key in seg.activations:
        if not network.has_layer(key):
            out.append(_unknown_key(i, "activations", key, "tensor"))
        elif key not in inside or not read_inside(key):
            out.append(Violation("structure", "activations names a tensor not both made "
                                 "and read in this segment", segment=i, layer=key,
                                 field="activations"))
    read_earlier = {src for n in seg.layers for src in network.layer(n).inputs
                    if src not in inside}
    for key, place in seg.inputs.items():
        if not known_tensor(key):
            out.append(_unknown_key(i, "inputs", key, "tensor"))
        elif key not in read_earlier:
            out.append(Violation("structure", "inputs names a tensor this segment does "
                                 "not read from an earlier segment", segment=i, layer=key,
                                 field="inputs"))
        elif key == network.input.name and place is Placement.ON_CHIP:
            out.append(Violation("structure", "the network input always comes from DRAM",
                                 segment=i, layer=key, field="inputs"))
    for key in seg.halos:
        if not known_tensor(key):
            out.append(_unknown_key(i, "halos", key, "tensor"))
        elif key not in read_earlier and key not in seg.activations and not read_inside(key):
            out.append(Violation("structure", "halos names a tensor this segment does not "
                                 "read", segment=i, layer=key, field="halos"))
    return out


# ---------------------------------------------------------------------------
# The mapping-file form
# ---------------------------------------------------------------------------

SEGMENT_FIELDS = {"layers", "time_batch", "tiles", "axis", "order", "sub_tiles", "weights",
                  "states", "activations", "inputs", "halos", "nests"}
NEST_FIELDS = {"oy", "ox", "iy", "ix", "loops", "held"}


def _count(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= MAX_COUNT


def _step_nest(v: Any, where: str, field_: str, issues: list[Issue]) -> StepNest | None:
    """One pinned nest of a mapping file, or ``None`` with its problems added."""
    if not isinstance(v, AbcMapping):
        issues.append(Issue("must be a mapping {oy, ox, iy, ix, loops, held}", layer=where,
                            field=field_))
        return None
    local = _unknown(v, NEST_FIELDS, where, prefix=f"{field_}.")
    for key in ("oy", "ox", "iy", "ix"):
        if not _count(v.get(key), 1):
            local.append(Issue(f"must be an integer in 1..{MAX_COUNT}, got "
                               f"{excerpt(v.get(key))}", layer=where, field=f"{field_}.{key}"))
    raw = v.get("loops")
    loops: list[tuple[str, int]] = []
    if not isinstance(raw, list):
        local.append(Issue("must be a list of loops 'DIM FACTOR', outermost first, e.g. "
                           "['K 2', 'C 4']", layer=where, field=f"{field_}.loops"))
    else:
        for j, lp in enumerate(raw):
            parts = lp.split() if isinstance(lp, str) else []
            if len(parts) == 2 and parts[0] in NEST_DIMS and parts[1].isdigit() \
                    and 1 <= int(parts[1]) <= MAX_COUNT:
                loops.append((parts[0], int(parts[1])))
            else:
                local.append(Issue(f"must be 'DIM FACTOR' with DIM one of "
                                   f"{', '.join(NEST_DIMS)} and FACTOR in 1..{MAX_COUNT}, "
                                   f"got {excerpt(lp)}", layer=where,
                                   field=f"{field_}.loops[{j}]"))
    held_raw = v.get("held", {}) or {}
    held: list[tuple[str, int]] = []
    if not isinstance(held_raw, AbcMapping):
        local.append(Issue("must be a mapping {W: n, I: n} of innermost loops held",
                           layer=where, field=f"{field_}.held"))
    else:
        n = len(raw) if isinstance(raw, list) else MAX_COUNT
        for op, cnt in held_raw.items():
            if op not in NEST_OPERANDS:
                local.append(Issue(f"must name an operand W or I, got {excerpt(op)}",
                                   layer=where, field=f"{field_}.held"))
            elif not (_count(cnt, 0) and cnt <= n):
                local.append(Issue(f"must be an integer in 0..{n} (the loops listed), got "
                                   f"{excerpt(cnt)}", layer=where,
                                   field=f"{field_}.held.{op}"))
            else:
                held.append((op, cnt))
    issues += local
    if local:
        return None
    return StepNest(v["oy"], v["ox"], v["iy"], v["ix"], tuple(loops), tuple(sorted(held)))


def _weight_choice(v: Any, where: str, key: str, issues: list[Issue]) -> WeightChoice | None:
    if v == "resident":
        return WeightChoice(resident=True)
    if v == "streamed":
        return WeightChoice()
    if isinstance(v, str) and v.startswith("streamed/"):
        try:
            return WeightChoice(chunks=int(v.split("/", 1)[1]))
        except ValueError:
            pass
    issues.append(Issue(f"weights of {excerpt(key)} must be 'resident', 'streamed' or "
                        f"'streamed/K_CHUNKS', got {excerpt(v)}", layer=where,
                        field=f"weights.{key}"))
    return None


def _segment(s: Any, where: str, issues: list[Issue]) -> Segment | None:
    """One segment of a mapping file, or ``None`` with its problems added to ``issues``."""
    if not isinstance(s, AbcMapping):
        issues.append(Issue("must be a mapping", layer=where))
        return None
    local = _unknown(s, SEGMENT_FIELDS, where)
    layers = s.get("layers")
    if not isinstance(layers, list) or not layers:
        local.append(Issue("must be a non-empty list of layer names", layer=where,
                           field="layers"))
    tb = _int(s, "time_batch", where, local)
    n = _int(s, "tiles", where, local, default=1)
    axis = _enum(Axis, s.get("axis", "OY"), where, "axis", local)
    order = _enum(Order, s.get("order", "time_outer"), where, "order", local)

    def table(key: str, conv: Any) -> dict[str, Any]:
        raw = s.get(key, {}) or {}
        if not isinstance(raw, AbcMapping):
            local.append(Issue("must be a mapping from names to choices", layer=where,
                               field=key))
            return {}
        out = {}
        for k, v in raw.items():
            c = conv(v, str(k))
            if c is not None:
                out[str(k)] = c
        return out

    def sub(v: Any, k: str) -> int | None:
        if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_COUNT:
            return v
        local.append(Issue(f"must be an integer in 1..{MAX_COUNT}, got {excerpt(v)}",
                           layer=where,
                           field=f"sub_tiles.{k}"))
        return None

    def choice(enum: Any, key: str) -> Any:
        return lambda v, k: _enum(enum, v, where, f"{key}.{k}", local)

    def nests(v: Any, k: str) -> tuple[StepNest, ...] | None:
        if not isinstance(v, list):
            local.append(Issue("must be a list of pinned nests", layer=where,
                               field=f"nests.{k}"))
            return None
        got = [_step_nest(e, where, f"nests.{k}[{j}]", local) for j, e in enumerate(v)]
        return None if any(g is None for g in got) else tuple(got)  # type: ignore[misc]

    tables = dict(
        sub_tiles=table("sub_tiles", sub),
        weights=table("weights", lambda v, k: _weight_choice(v, where, k, local)),
        states=table("states", choice(StateMode, "states")),
        activations=table("activations", choice(Placement, "activations")),
        inputs=table("inputs", choice(Placement, "inputs")),
        halos=table("halos", choice(Halo, "halos")),
        nests=table("nests", nests),
    )
    issues += local
    if local:
        return None
    return Segment(layers=tuple(map(str, layers)), time_batch=tb, tiles=n, axis=axis,
                   order=order, **tables)


def mapping_from_dict(doc: Any, file: str = "<mapping>", problem: Problem | None = None
                      ) -> Mapping:
    """Build a :class:`Mapping` from its YAML/JSON form.

    With ``problem``, a file whose segments do not all parse also reports the
    structural problems (:func:`segment_violations`) of the segments that do,
    so every mistake comes out at once.
    """
    d = _expect_mapping(doc, "mapping", file)
    if "mapping" in d and isinstance(d["mapping"], AbcMapping):
        d = dict(d["mapping"])
    issues = _unknown(d, {"name", "segments", "comment"}, None)
    segs_raw = d.get("segments")
    if not isinstance(segs_raw, list) or not segs_raw:
        issues.append(Issue("must be a non-empty list of segments", field="segments"))
        segs_raw = []
    segments = [_segment(s, f"segment {i}", issues) for i, s in enumerate(segs_raw)]
    if issues:
        if problem is not None:
            issues += _partial_structure_issues(problem, segments)
        raise StemsInputError(issues).with_file(file)
    return Mapping(tuple(seg for seg in segments if seg is not None), str(d.get("name", "")))


def _partial_structure_issues(problem: Problem, segments: list[Segment | None]) -> list[Issue]:
    """Structural problems of the segments that parsed, numbered as in the file.

    Coverage (every layer in exactly one segment, in order) is not checked:
    a layer in no segment may be the unparsed segment's.
    """
    net = problem.network
    out = []
    for i, seg in enumerate(segments):
        if seg is None:
            continue
        unknown = [n for n in seg.layers if not net.has_layer(n)]
        out += [Issue("no such layer in the network", layer=n, field="layers", segment=i)
                for n in unknown]
        if not unknown:
            out += [Issue(v.message, layer=v.layer, field=v.field, segment=i) for v in
                    segment_violations(net, i, seg, problem.hardware.array.factor("K"))]
    return out


def mapping_to_dict(mapping: Mapping) -> dict[str, Any]:
    """The YAML/JSON form of ``mapping`` (every field written out as given)."""
    segs = []
    for seg in mapping.segments:
        segs.append({
            "layers": list(seg.layers),
            "time_batch": seg.time_batch,
            "tiles": seg.tiles,
            "axis": seg.axis.value,
            "order": seg.order.value,
            "sub_tiles": dict(seg.sub_tiles),
            "weights": {k: str(v) if not v.resident and v.chunks > 1 else
                        ("resident" if v.resident else "streamed") for k, v in seg.weights.items()},
            "states": {k: v.value for k, v in seg.states.items()},
            "activations": {k: v.value for k, v in seg.activations.items()},
            "inputs": {k: v.value for k, v in seg.inputs.items()},
            "halos": {k: v.value for k, v in seg.halos.items()},
        })
        if seg.nests:
            segs[-1]["nests"] = {layer: [_nest_to_dict(n) for n in ns]
                                 for layer, ns in seg.nests.items()}
    out: dict[str, Any] = {"name": mapping.name} if mapping.name else {}
    out["segments"] = segs
    return {"mapping": out}


def _nest_to_dict(n: StepNest) -> dict[str, Any]:
    return {"oy": n.oy, "ox": n.ox, "iy": n.iy, "ix": n.ix,
            "loops": [f"{d} {f}" for d, f in n.loops], "held": dict(n.held)}
