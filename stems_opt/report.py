"""Readable tables and JSON documents for costs and results (never imports a solver)."""

from __future__ import annotations

from typing import Any

from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.evaluation import Cost, fewest_cycles
from stems_opt.cost.step_nests import with_nests
from stems_opt.cost.traffic import TENSOR_CLASSES, compulsory_traffic_bits
from stems_opt.mapping import Mapping, Segment
from stems_opt.problem import Problem
from stems_opt.result import Result
from stems_opt.version import SCHEMA_VERSION, __version__


def _bit_unit(cost: Cost) -> tuple[str, float, int]:
    """One unit for every bit column of a report: kbit, or Mbit for large networks."""
    if max(cost.traffic_bits, cost.capacity_bits) >= 100_000_000:
        return "Mbit", 1e6, 3
    return "kbit", 1e3, 1


LEGEND = "\n".join((
    "  Tb: timesteps per time batch; n: tiles; W res: weights kept in the global buffer (GB)",
    "  for the whole segment / layers with weights; V kept: neuron states kept on chip (whole",
    "  or per tile) / stateful layers; on-chip: activations passed through the GB, not DRAM.",
    "  Traffic: DRAM reads + writes; 1 kbit = 1,000 bits, 1 Mbit = 10^6 bits, 1 uJ = 10^6 pJ."))


def cost_to_dict(cost: Cost) -> dict[str, Any]:
    """JSON-ready form of a :class:`Cost` (:meth:`Cost.to_dict`)."""
    return cost.to_dict()


def result_to_dict(problem: Problem, result: Result) -> dict[str, Any]:
    """The JSON document of ``stems-opt evaluate`` and ``solve`` (``docs/result-schema.json``).

    :meth:`Result.to_dict` plus what the result came from: the schema and
    stems_opt versions, the instance, and the compulsory traffic.
    """
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "stems_opt_version": __version__,
                           "instance": problem.name}
    doc.update(result.to_dict())
    if result.mapping is not None and problem.hardware.loop_nests:
        doc["mapping"] = mapping_with_nests(problem, result.mapping).to_dict()
    doc["lower_bound_bits"] = compulsory_traffic_bits(problem.network)
    return doc


def mapping_with_nests(problem: Problem, mapping: Mapping) -> Mapping:
    """``mapping`` with the loop nest of every step written out (on hardware with
    ``loop_nests``): what ``--out`` writes and ``--json`` prints, so that the
    mapping scores the same under every objective."""
    if not problem.hardware.loop_nests:
        return mapping
    return with_nests(problem.network, mapping, nest_hardware(problem.hardware),
                      fewest_cycles(problem))


def mapping_provenance(problem: Problem, result: Result) -> dict[str, Any]:
    """What a mapping file records about where its mapping came from."""
    return {"schema_version": SCHEMA_VERSION, "stems_opt_version": __version__,
            "instance": problem.name, "objective": result.objective, "solver": result.solver,
            "status": result.status.value, "objective_value": result.to_dict()["objective_value"]}


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
    """A readable table: per segment, then per tensor class, then energy and a legend."""
    unit, scale, digits = _bit_unit(cost)

    def b(bits: float) -> str:
        return f"{bits / scale:,.{digits}f}"

    lines = [f"{'seg':>5}  {'layers':<34} {'schedule':<31} residency"]
    for i, seg in enumerate(mapping.segments):
        lines.append(_segment_line(i, seg))
    lines.append("")
    lines.append(f"  {'seg':>3}  {'traffic ' + unit:>13} {'weights':>10} {'state':>10} "
                 f"{'acts':>10}  {'peak GB ' + unit:>13}  peak at")
    for s in cost.segments:
        bc = s.traffic.by_class()
        flag = "  OVER" if s.peak_gb_bits > cost.capacity_bits else ""
        lines.append(f"  {s.index:>3}  {b(s.traffic.total_bits):>13} {b(bc['weights']):>10}"
                     f" {b(bc['state']):>10} {b(bc['activations']):>10}  "
                     f"{b(s.peak_gb_bits):>13}  tile {s.peak_tile}, {s.peak_layer}{flag}")
    tr = cost.traffic
    lines.append("")
    lines.append(f"  {'tensor':<12} {'read ' + unit:>12} {'write ' + unit:>12} "
                 f"{'total ' + unit:>12}")
    for c in TENSOR_CLASSES:
        lines.append(f"  {c:<12} {b(tr.read_bits[c]):>12} {b(tr.write_bits[c]):>12} "
                     f"{b(tr.read_bits[c] + tr.write_bits[c]):>12}")
    lb = compulsory_traffic_bits(problem.network)
    lines.append(f"  {'total':<12} {b(sum(tr.read_bits.values())):>12} "
                 f"{b(sum(tr.write_bits.values())):>12} {b(tr.total_bits):>12}"
                 f"   (compulsory {b(lb)}, ratio {tr.total_bits / lb:.3f})")
    e = cost.energy_pj
    lines.append("")
    lines.append("  energy (uJ): " + ", ".join(
        f"{k} {v / 1e6:,.3f}" for k, v in e.items() if k != "total") +
        f"; total {e['total'] / 1e6:,.3f}")
    lines.extend(_level_table(cost))
    lines.append(f"  peak global buffer {cost.peak_gb_bits:,} of {cost.capacity_bits:,} bits"
                 f"{'' if cost.feasible else '  (DOES NOT FIT)'}; latency "
                 f"{cost.latency_cycles:,} cycles; EDP {cost.edp_pj_cycles:,.6g} pJ x cycles")
    lines.append("")
    lines.append(LEGEND)
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


def _over(problem: Problem, objective: str) -> str:
    """What the objective's value covers, where the hardware decides it."""
    if objective == "traffic":
        return ""
    if problem.hardware.loop_nests:
        return " (conv and linear steps through their loop nests and the inner buffers)"
    return " (operands one access per use below the GB; inner buffers not charged)"


def format_result(problem: Problem, result: Result) -> str:
    """Header (status, solver, bound, gap, runtime) plus :func:`format_cost`."""
    head = [f"instance {problem.name}: {result.solver}, objective {result.objective}"
            + _over(problem, result.objective)]
    status = result.status.value
    if result.objective_value is not None:
        unit = {"traffic": "bits", "latency": "cycles", "edp": "pJ x cycles"}.get(
            result.objective, "pJ")
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
