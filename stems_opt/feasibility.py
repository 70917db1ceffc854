"""Whether a mapping runs on a problem: structure, ranges and global-buffer capacity.

:func:`check` needs both :mod:`stems_opt.mapping` (the mapping and its
structural checks) and :mod:`stems_opt.cost` (capacity is the cost model's
peak occupancy), which itself reads mappings: living above both keeps the
imports free of circles.
"""

from __future__ import annotations

from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.evaluation import Cost, evaluate
from stems_opt.cost.geometry import sub_tile_limits
from stems_opt.cost.step_nests import nest_violations
from stems_opt.mapping import Mapping, Violation, check_structure
from stems_opt.problem import Problem


def check(problem: Problem, mapping: Mapping) -> list[Violation]:
    """Every violation of ``mapping`` for ``problem``: structure, ranges, capacity.

    Capacity violations name the segment, the tile (step), the layer
    executing at the peak, the bits needed and the capacity.
    """
    return check_and_score(problem, mapping)[0]


def check_and_score(problem: Problem, mapping: Mapping) -> tuple[list[Violation], Cost | None]:
    """:func:`check`, and the mapping's cost when it was scored (every check but
    capacity passed): what a solver's answer needs, in one scoring (a second one
    took 0.3 s on SEW-ResNet-152)."""
    out = check_structure(problem.network, mapping, problem.hardware.array.factor("K"))
    if out:
        return out, None
    for i, seg in enumerate(mapping.segments):
        limits = sub_tile_limits(problem.network, seg)
        for name in seg.layers:
            m = seg.sub_tile(name)
            if m > limits[name]:
                out.append(Violation("range", f"sub_tiles {m} exceeds the layer's smallest "
                                     f"tile extent {limits[name]}", segment=i, layer=name,
                                     field="sub_tiles"))
    hw = problem.hardware
    out += nest_violations(problem.network, mapping, nest_hardware(hw), hw.loop_nests)
    if out:
        return out, None
    cost = evaluate(problem, mapping)
    cap = problem.hardware.gb_capacity_bits
    for i, sc in enumerate(cost.segments):
        if sc.peak_gb_bits > cap:
            out.append(Violation("capacity", f"global buffer needs {sc.peak_gb_bits} bits at tile "
                                 f"{sc.peak_tile} while {sc.peak_layer!r} runs; capacity is "
                                 f"{cap} bits", segment=i, layer=sc.peak_layer, tile=sc.peak_tile,
                                 bits=sc.peak_gb_bits, capacity_bits=cap))
    return out, cost
