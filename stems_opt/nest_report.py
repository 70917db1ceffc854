"""``--show-loops LAYER``: the optimal loop nest of each step of one layer."""

from __future__ import annotations

from typing import Any

from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.evaluation import fewest_cycles
from stems_opt.cost.geometry import SegmentGeometry, weight_chunks
from stems_opt.cost.loops import Nest, NestCost, layer_steps
from stems_opt.cost.step_nests import step_key, step_nest
from stems_opt.errors import Issue, StemsInputError
from stems_opt.mapping import Mapping
from stems_opt.problem import Problem


def _nest_lines(nest: Nest, cost: NestCost) -> list[str]:
    """The nest from the GB down to the array, buffer boundaries marked."""
    held = dict(nest.held)
    names = {"W": "weight buffer", "I": "input buffer"}
    lines = ["    (global buffer)"]
    depth = 2
    for p in range(len(nest.loops), -1, -1):
        for op, q in sorted(held.items()):
            if q == p:
                lines.append("  " * depth + f"  -- below: {names[op]} holds {op}")
        if p == 0:
            break
        lp = nest.loops[p - 1]
        lines.append("  " * depth + f"  for {lp.dim} in [0,{lp.factor}):")
        depth += 1
    lines.append("  " * depth + "  (array, spatial unrolling)")
    lines.append("    accesses (bits read / written):")
    for (level, op), (r, w) in sorted(cost.access_bits.items()):
        lines.append(f"      {level:<16} {op}  {r:>14,} / {w:>14,}  "
                     f"({cost.energy_fj[(level, op)] / 1000:,.1f} pJ)")
    lines.append(f"    cycles {cost.cycles:,} (compute {cost.compute_cycles:,})")
    return lines


def show_loops(problem: Problem, mapping: Mapping, layer: str) -> tuple[str, dict[str, Any]]:
    """Text and JSON of ``layer``'s step nests under ``mapping``."""
    net = problem.network
    if not net.has_layer(layer):
        raise StemsInputError(Issue(f"no layer {layer!r} in network {net.name!r}",
                                    field="show-loops"))
    lay = net.layer(layer)
    seg_index = next(i for i, s in enumerate(mapping.segments) if layer in s.layers)
    seg = mapping.segments[seg_index]
    head = f"loop nests of {layer} (segment {seg_index}, axis {seg.axis.value}, " \
           f"Tb {seg.time_batch}, {seg.sub_tile(layer)} sub-tile(s) per tile)"
    if not lay.has_weights:
        return head + ": no weights, one access per use", {"layer": layer, "steps": []}
    geo = SegmentGeometry(net, seg)
    hw = nest_hardware(problem.hardware)
    pinned = seg.nests.get(layer, ())
    fewest = fewest_cycles(problem)
    which = "least-cycles" if fewest else "least-energy"
    lines = [head + f"; steps run their {which} nest unless the mapping pins one"]
    steps = []
    for shape, count in sorted(layer_steps(lay, seg.axis, geo.bounds[layer],
                                           seg.sub_tile(layer), geo.tb,
                                           weight_chunks(seg, lay)).items(),
                               key=lambda kv: (kv[0].oy, kv[0].ox, kv[0].iy, kv[0].ix)):
        nest, cost = step_nest(shape, hw, pinned, fewest)
        fj = cost.total_fj
        runs = count * geo.S
        source = "pinned" if any(p.step == step_key(shape) for p in pinned) else which
        lines.append(f"  step oy {shape.oy} ox {shape.ox} (input {shape.iy} x {shape.ix}), "
                     f"Tb {shape.tb}, {shape.chunks} chunk(s): {runs} step(s), "
                     f"{fj / 1000:,.1f} pJ each ({source} nest)")
        lines.extend(_nest_lines(nest, cost))
        steps.append({"oy": shape.oy, "ox": shape.ox, "iy": shape.iy, "ix": shape.ix,
                      "tb": shape.tb, "chunks": shape.chunks, "count": runs,
                      "energy_pj": fj / 1000, "cycles": cost.cycles, "nest": source,
                      "loops": [[lp.dim, lp.factor] for lp in nest.loops],
                      "held": dict(nest.held),
                      "access_bits": {f"{lv}.{op}": list(rw)
                                      for (lv, op), rw in sorted(cost.access_bits.items())}})
    return "\n".join(lines), {"layer": layer, "steps": steps}
