"""Readable tables and JSON documents for costs and results (never imports a solver)."""

from __future__ import annotations

from typing import Any

from stems_opt.cost_model import TENSOR_CLASSES, Cost, compulsory_traffic_bits
from stems_opt.io import mapping_to_dict
from stems_opt.mapping import Mapping, Segment
from stems_opt.problem import Problem
from stems_opt.result import Result


def _mbit(bits: float) -> str:
    return f"{bits / 1e6:,.3f}"


def cost_to_dict(cost: Cost) -> dict[str, Any]:
    """JSON-ready form of a :class:`Cost`."""
    tr = cost.traffic
    return {
        "traffic_bits": {
            "total": tr.total_bits,
            "reads": sum(tr.read_bits.values()),
            "writes": sum(tr.write_bits.values()),
            "by_tensor": tr.by_class(),
            "reads_by_tensor": dict(tr.read_bits),
            "writes_by_tensor": dict(tr.write_bits),
            "by_layer": dict(cost.traffic_by_layer),
            "by_segment": [s.traffic.total_bits for s in cost.segments],
        },
        "energy_pj": dict(cost.energy_pj),
        "energy_by_level_pj": {level: dict(ops)
                               for level, ops in cost.energy_by_level_pj.items()},
        "peak_gb_bits": cost.peak_gb_bits,
        "capacity_bits": cost.capacity_bits,
        "latency_cycles": cost.latency_cycles,
        "segments": [{
            "layers": list(s.layers),
            "traffic_bits": s.traffic.total_bits,
            "traffic_bits_by_tensor": s.traffic.by_class(),
            "peak_gb_bits": s.peak_gb_bits,
            "persistent_gb_bits": s.persistent_gb_bits,
            "peak_tile": s.peak_tile,
            "peak_layer": s.peak_layer,
            "latency_cycles": s.latency_cycles,
        } for s in cost.segments],
    }


def result_to_dict(problem: Problem, result: Result) -> dict[str, Any]:
    """The JSON document of ``stems-opt evaluate`` and ``solve``."""
    doc: dict[str, Any] = {
        "instance": problem.name,
        "objective": result.objective,
        "status": result.status.value,
        "solver": result.solver,
        "runtime_s": round(result.runtime_s, 6),
        "build_s": round(result.build_s, 6),
        "objective_value": result.objective_value,
        "bound": result.bound,
        "gap": result.gap,
        "lower_bound_bits": compulsory_traffic_bits(problem.network),
    }
    if result.message:
        doc["message"] = result.message
    if result.stats:
        doc["stats"] = dict(result.stats)
    if result.cost is not None:
        doc.update(cost_to_dict(result.cost))
    if result.mapping is not None:
        doc["mapping"] = mapping_to_dict(result.mapping)["mapping"]
    return doc


def _segment_line(i: int, seg: Segment) -> str:
    res_w = [n for n, w in seg.weights.items() if w.resident]
    res_v = [n for n, v in seg.states.items() if v.value != "spilled"]
    on_chip = [n for n, p in {**seg.activations, **seg.inputs}.items() if p.value == "on_chip"]
    first, last = seg.layers[0], seg.layers[-1]
    span = first if first == last else f"{first}..{last} ({len(seg.layers)})"
    return (f"  {i:>3}  {span:<34} Tb={seg.time_batch:<3} n={seg.tiles:<3} {seg.order.value:<11} "
            f"W res {len(res_w)}/{len(seg.weights)}  V kept {len(res_v)}/{len(seg.states)}  "
            f"on-chip {len(on_chip)}")


def format_cost(problem: Problem, cost: Cost, mapping: Mapping) -> str:
    """A readable table: per segment, then per tensor class, then energy."""
    lines = [f"{'seg':>5}  {'layers':<34} {'schedule':<31} residency"]
    for i, seg in enumerate(mapping.segments):
        lines.append(_segment_line(i, seg))
    lines.append("")
    lines.append(f"  {'seg':>3}  {'traffic Mbit':>13} {'weights':>10} {'state':>10} {'acts':>10}"
                 f"  {'peak GB kbit':>13}  peak at")
    for s in cost.segments:
        bc = s.traffic.by_class()
        flag = "  OVER" if s.peak_gb_bits > cost.capacity_bits else ""
        lines.append(f"  {s.index:>3}  {_mbit(s.traffic.total_bits):>13} {_mbit(bc['weights']):>10}"
                     f" {_mbit(bc['state']):>10} {_mbit(bc['activations']):>10}  "
                     f"{s.peak_gb_bits / 1e3:>13,.1f}  tile {s.peak_tile}, {s.peak_layer}{flag}")
    tr = cost.traffic
    lines.append("")
    lines.append(f"  {'tensor':<12} {'read Mbit':>12} {'write Mbit':>12} {'total Mbit':>12}")
    for c in TENSOR_CLASSES:
        lines.append(f"  {c:<12} {_mbit(tr.read_bits[c]):>12} {_mbit(tr.write_bits[c]):>12} "
                     f"{_mbit(tr.read_bits[c] + tr.write_bits[c]):>12}")
    lb = compulsory_traffic_bits(problem.network)
    lines.append(f"  {'total':<12} {_mbit(sum(tr.read_bits.values())):>12} "
                 f"{_mbit(sum(tr.write_bits.values())):>12} {_mbit(tr.total_bits):>12}"
                 f"   (compulsory {_mbit(lb)}, ratio {tr.total_bits / lb:.3f})")
    e = cost.energy_pj
    lines.append("")
    lines.append("  energy (uJ): " + ", ".join(
        f"{k} {v / 1e6:,.3f}" for k, v in e.items() if k != "total") +
        f"; total {e['total'] / 1e6:,.3f}")
    lines.extend(_level_table(cost))
    lines.append(f"  peak global buffer {cost.peak_gb_bits:,} of {cost.capacity_bits:,} bits"
                 f"{'' if cost.feasible else '  (DOES NOT FIT)'}; latency "
                 f"{cost.latency_cycles:,} cycles")
    return "\n".join(lines)


def _level_table(cost: Cost) -> list[str]:
    """Energy (uJ) per level (rows) and operand (columns); registers cost nothing."""
    levels = cost.energy_by_level_pj
    if not levels:
        return []
    ops = ["W", "I", "O", "V"]
    lines = [f"  {'level':<16}" + "".join(f"{op:>10}" for op in ops) + f"{'total':>12}"]
    for level, by_op in levels.items():
        cells = "".join(f"{by_op[op] / 1e6:>10,.3f}" if op in by_op else f"{'':>10}"
                        for op in ops)
        lines.append(f"  {level:<16}{cells}{sum(by_op.values()) / 1e6:>12,.3f}")
    return lines


def format_result(problem: Problem, result: Result) -> str:
    """Header (status, solver, bound, gap, runtime) plus :func:`format_cost`."""
    head = [f"instance {problem.name}: {result.solver}, objective {result.objective}"]
    status = result.status.value
    if result.objective_value is not None:
        unit = "bits" if result.objective == "traffic" else "pJ"
        status += f", value {result.objective_value:,.6g} {unit}"
    if result.bound is not None:
        status += f", bound {result.bound:,.6g}, gap {100 * (result.gap or 0):.4f}%"
    status += f", {result.runtime_s:.2f} s"
    if result.build_s:
        status += f" ({result.build_s:.2f} s model build)"
    head.append(f"status: {status}")
    if result.message:
        head.append(result.message)
    if result.cost is not None and result.mapping is not None:
        head.append(format_cost(problem, result.cost, result.mapping))
    return "\n".join(head)
