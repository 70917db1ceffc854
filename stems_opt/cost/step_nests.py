"""Which loop nest each step runs: pinned by the mapping, else the objective's.

A mapping may pin the nest of any step of a conv or linear layer
(:class:`stems_opt.mapping.StepNest`, ``nests`` in a mapping file); the
other steps run the objective's nest: the fewest cycles (stalls included,
then the least energy; :mod:`stems_opt.cost.cycles`) under ``--objective
latency``, the least energy (:func:`stems_opt.cost.loops.optimal_nest`)
otherwise (``docs/model.md`` 7). :func:`nest_violations` checks pinned nests,
:func:`with_nests` writes every step's nest into a mapping (``--out``).
"""

from __future__ import annotations

from stems_opt.cost.cycles import fewest_cycles_nest, has_ports
from stems_opt.cost.geometry import SegmentGeometry, weight_chunks
from stems_opt.cost.loops import (
    DIMS,
    Loop,
    Nest,
    NestCost,
    NestHardware,
    StepShape,
    _Geometry,
    check_nest,
    layer_steps,
    nest_cost,
    optimal_nest,
)
from stems_opt.mapping import Mapping, Segment, StepNest, Violation
from stems_opt.network import Layer, Network


def to_nest(pinned: StepNest) -> Nest:
    """The cost model's form of a pinned nest (innermost loop first)."""
    return Nest(tuple(Loop(d, f) for d, f in reversed(pinned.loops)), pinned.held)


def step_key(shape: StepShape) -> tuple[int, int, int, int]:
    """``(oy, ox, iy, ix)``: how a mapping file names a step."""
    return shape.oy, shape.ox, shape.iy, shape.ix


def step_nest(shape: StepShape, hw: NestHardware, pinned: tuple[StepNest, ...] = (),
              fewest_cycles: bool = False) -> tuple[Nest, NestCost]:
    """The nest ``shape`` runs and its cost: the pinned one for its step, else
    the fewest-cycles nest (``fewest_cycles``) or the least-energy one."""
    key = step_key(shape)
    for p in pinned:
        if p.step == key:
            nest = to_nest(p)
            return nest, nest_cost(nest, shape, hw)
    if fewest_cycles and has_ports(hw):
        return fewest_cycles_nest(shape, hw)
    nest, _ = optimal_nest(shape, hw)
    return nest, nest_cost(nest, shape, hw)


def layer_energy_fj(layer: Layer, geo: SegmentGeometry, m: int, hw: NestHardware, chunks: int,
                    pinned: tuple[StepNest, ...], fewest_cycles: bool
                    ) -> dict[tuple[str, str], int]:
    """Operand energy (fJ) per ``(level, operand)`` of ``layer`` over all its
    steps in ``geo``'s segment, each run by :func:`step_nest`."""
    total: dict[tuple[str, str], int] = {}
    steps = layer_steps(layer, geo.seg.axis, geo.bounds[layer.name], m, geo.tb, chunks)
    for shape, count in steps.items():
        _, cost = step_nest(shape, hw, pinned, fewest_cycles)
        for key, fj in cost.energy_fj.items():
            total[key] = total.get(key, 0) + fj * count * geo.S
    return total


def _steps(network: Network, seg: Segment, layer: Layer) -> list[StepShape]:
    geo = SegmentGeometry(network, seg)
    return sorted(layer_steps(layer, seg.axis, geo.bounds[layer.name], seg.sub_tile(layer.name),
                              geo.tb, weight_chunks(seg, layer)),
                  key=lambda s: (s.oy, s.ox, s.iy, s.ix))


def nest_violations(network: Network, mapping: Mapping, hw: NestHardware,
                    loop_nests: bool) -> list[Violation]:
    """Every problem of the mapping's pinned nests (the mapping's structure must
    be valid): unknown layers or steps, factors that do not multiply to the
    step's temporal extents, the weight-chunk loop, causality, the capacity of
    every inner buffer, buffers the hardware lacks."""
    out: list[Violation] = []
    for i, seg in enumerate(mapping.segments):
        for name, pinned in seg.nests.items():
            where = {"segment": i, "layer": name}
            if not loop_nests:
                out.append(Violation("nest", "pinned nests need hardware with loop_nests: true",
                                     field=f"nests.{name}", **where))
                continue
            if name not in seg.layers or not network.layer(name).has_weights:
                out.append(Violation("structure", "nests names a layer of this segment "
                                     "without weights or outside it", field="nests", **where))
                continue
            shapes = {step_key(s): s for s in _steps(network, seg, network.layer(name))}
            seen: set[tuple[int, int, int, int]] = set()
            for j, p in enumerate(pinned):
                field = f"nests.{name}[{j}]"
                shape = shapes.get(p.step)
                if p.step in seen:
                    out.append(Violation("nest", "a second nest for the same step",
                                         field=field, **where))
                    continue
                seen.add(p.step)
                if shape is None:
                    listed = "; ".join(f"oy {k[0]} ox {k[1]} iy {k[2]} ix {k[3]}"
                                       for k in shapes)
                    out.append(Violation("nest", f"no step of the layer has oy {p.oy} ox {p.ox} "
                                         f"iy {p.iy} ix {p.ix} (its steps: {listed})",
                                         field=field, **where))
                    continue
                out += [Violation("nest", msg, field=field, **where)
                        for msg in _nest_problems(p, shape, hw)]
    return out


def _nest_problems(pinned: StepNest, shape: StepShape, hw: NestHardware) -> list[str]:
    """Why ``pinned`` cannot run ``shape`` on ``hw`` (empty: it can)."""
    problems = []
    extent = _Geometry(shape, hw).extent
    for d, dim in enumerate(DIMS):
        got = 1
        for name, f in pinned.loops:
            got *= f if name == dim else 1
        if got != extent[d]:
            problems.append(f"loops over {dim} multiply to {got}; the step's temporal extent "
                            f"of {dim} is {extent[d]}")
    for op, _ in pinned.held:
        if hw.buffer(op) is None:
            problems.append(f"held.{op}: the hardware has no inner buffer for {op}")
    if problems:
        return problems
    return [p for p in check_nest(to_nest(pinned), shape, hw) if "multiply" not in p]


def with_nests(network: Network, mapping: Mapping, hw: NestHardware,
               fewest_cycles: bool = False) -> Mapping:
    """``mapping`` with the nest of every step of every conv and linear layer
    written out: the pinned one, else the objective's (:func:`step_nest`)."""
    segs = []
    for seg in mapping.segments:
        nests = dict(seg.nests)
        for name in seg.layers:
            layer = network.layer(name)
            if not layer.has_weights:
                continue
            pinned = seg.nests.get(name, ())
            nests[name] = tuple(_pin(s, step_nest(s, hw, pinned, fewest_cycles)[0])
                                for s in _steps(network, seg, layer))
        segs.append(seg.replace(nests=nests))
    return Mapping(tuple(segs), mapping.name)


def _pin(shape: StepShape, nest: Nest) -> StepNest:
    return StepNest(shape.oy, shape.ox, shape.iy, shape.ix,
                    tuple((lp.dim, lp.factor) for lp in reversed(nest.loops)), nest.held)
