"""``--show-loops LAYER``: the optimal loop nest of each step of one layer."""

from __future__ import annotations

from typing import Any

from stems_opt.cost.energy import READ_OPERAND, WRITE_OPERAND, nest_hardware
from stems_opt.cost.evaluation import fewest_cycles
from stems_opt.cost.geometry import SegmentGeometry, weight_chunks
from stems_opt.cost.loops import Nest, NestCost, layer_steps
from stems_opt.cost.step_nests import step_key, step_nest
from stems_opt.cost.traffic import mapping_contexts, segment_terms
from stems_opt.errors import Issue, StemsInputError
from stems_opt.mapping import Mapping, Order, Segment
from stems_opt.problem import Problem


def _dram_loops(seg: Segment, geo: SegmentGeometry, layer: str, timesteps: int
                ) -> list[tuple[str, int]]:
    """The loops above the global buffer, outermost first: the segment's time batches
    and the tiles in which the layer has rows, in the segment's order, then the
    layer's sub-tiles (each a step: a sub-tile count is at most every such tile's
    rows)."""
    batches = ("T batch", timesteps // seg.time_batch)
    active = geo.active_tiles(layer)
    tiles = (f"{seg.axis.value} tile" + (f" with rows ({active} of {seg.tiles})"
                                          if active < seg.tiles else ""), active)
    outer = [batches, tiles] if seg.order is Order.TIME_OUTER else [tiles, batches]
    return [*outer, (f"{seg.axis.value} sub-tile", seg.sub_tile(layer))]


def _dram_bits(problem: Problem, mapping: Mapping, seg_index: int,
               geo: SegmentGeometry, layer: str) -> dict[str, list[int]]:
    """The layer's DRAM reads and writes in bits per operand over the whole run
    (its weights ``W``, inputs ``I``, output ``O`` and state ``V``), as the cost
    model charges them."""
    net = problem.network
    ctx = mapping_contexts(net, mapping)[seg_index]
    got: dict[str, list[int]] = {}
    for t in segment_terms(net, mapping.segments[seg_index], ctx, geo):
        if t.layer != layer or not (t.read_bits or t.write_bits):
            continue
        if t.read_bits:  # (the operands of the DRAM rows of energy_by_level)
            got.setdefault(READ_OPERAND[t.tensor_class], [0, 0])[0] += t.read_bits
        if t.write_bits:
            got.setdefault(WRITE_OPERAND[t.tensor_class], [0, 0])[1] += t.write_bits
    return dict(sorted(got.items()))


def _dram_lines(loops: list[tuple[str, int]], bits: dict[str, list[int]],
                step: str) -> list[str]:
    lines = ["  above the global buffer (DRAM level; the segment's schedule):"]
    for depth, (dim, factor) in enumerate(loops):
        lines.append("    " + "  " * depth + f"for {dim} in [0,{factor}):")
    lines.append("    " + "  " * len(loops) + step)
    lines.append("    DRAM accesses of the layer, whole run (bits read / written):")
    lines += [f"      dram             {op}  {r:>14,} / {w:>14,}" for op, (r, w) in bits.items()]
    if not bits:
        lines.append("      none (every operand stays on chip)")
    return lines


def _nest_lines(nest: Nest, cost: NestCost) -> list[str]:
    """The nest from the GB down to the array, buffer boundaries marked (registers
    hold one word per operand and cost nothing, so they have no line)."""
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
    geo = SegmentGeometry(net, seg)
    loops = _dram_loops(seg, geo, layer, net.timesteps)
    bits = _dram_bits(problem, mapping, seg_index, geo, layer)
    above = _dram_lines(loops, bits, "one step (its nest below)" if lay.has_weights
                        else "one step")
    doc: dict[str, Any] = {"layer": layer, "dram_loops": [list(lp) for lp in loops],
                           "dram_access_bits": bits, "steps": []}
    if not lay.has_weights:
        return "\n".join([head + ": no weights, one access per use below the GB",
                          *above]), doc
    hw = nest_hardware(problem.hardware)
    pinned = seg.nests.get(layer, ())
    fewest = fewest_cycles(problem)
    which = "least-cycles" if fewest else "least-energy"
    lines = [head + f"; steps run their {which} nest unless the mapping pins one", *above]
    steps = doc["steps"]
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
    return "\n".join(lines), doc
