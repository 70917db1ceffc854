"""The referee: :func:`evaluate` scores a mapping (traffic, occupancy, energy, latency).

Every solver's answer is re-scored here from the same pieces the optimiser's
coefficients come from (:mod:`stems_opt.cost.traffic`,
:mod:`stems_opt.cost.energy`), so the two agree by construction and the
tests check that they do. The formulas are written out in ``docs/model.md``.
No solver is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stems_opt.cost.energy import (
    EnergyRates,
    energy_by_level,
    layer_operand_energy_fj,
    nest_hardware,
    pj_to_fj,
)
from stems_opt.cost.geometry import SegmentGeometry, weight_chunks
from stems_opt.cost.latency import segment_latency
from stems_opt.cost.loops import GB
from stems_opt.cost.traffic import (
    Term,
    TrafficBreakdown,
    mapping_contexts,
    peak_of,
    segment_terms,
    traffic_breakdown,
)
from stems_opt.mapping import Mapping
from stems_opt.problem import Objective, Problem


@dataclass(frozen=True)
class SegmentCost:
    """Cost of one segment."""

    index: int
    layers: tuple[str, ...]
    traffic: TrafficBreakdown
    peak_gb_bits: int
    persistent_gb_bits: int
    peak_tile: int
    peak_layer: str
    energy_pj: dict[str, float]
    latency_cycles: int
    terms: tuple[Term, ...] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Cost:
    """The referee's verdict on a mapping."""

    traffic: TrafficBreakdown
    traffic_by_layer: dict[str, int]
    segments: tuple[SegmentCost, ...]
    energy_pj: dict[str, float]
    latency_cycles: int
    capacity_bits: int
    memory_energy_fj: int
    energy_by_level_pj: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def traffic_bits(self) -> int:
        """Total off-chip traffic."""
        return self.traffic.total_bits

    @property
    def total_energy_pj(self) -> float:
        """Total energy."""
        return self.energy_pj["total"]

    @property
    def peak_gb_bits(self) -> int:
        """Largest GB occupancy over all segments."""
        return max(s.peak_gb_bits for s in self.segments)

    @property
    def feasible(self) -> bool:
        """Whether every segment fits the GB."""
        return self.peak_gb_bits <= self.capacity_bits

    def objective_value(self, objective: str, weights: tuple[int, int] | None = None) -> float:
        """Traffic in bits, energy in pJ, latency in cycles or EDP in pJ x cycles;
        with ``weights`` ``(a, b)`` the EDP search's ``a * energy_fJ + b * cycles``."""
        if weights is not None:
            return weights[0] * self.total_energy_pj * 1000 + weights[1] * self.latency_cycles
        return {"traffic": self.traffic_bits, "energy": self.total_energy_pj,
                "latency": self.latency_cycles,
                "edp": self.total_energy_pj * self.latency_cycles}[objective]

    @property
    def edp_pj_cycles(self) -> float:
        """Energy-delay product: total energy (pJ) times latency (cycles)."""
        return self.total_energy_pj * self.latency_cycles

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: traffic (bits), energy (pJ), occupancy, latency, per segment."""
        tr = self.traffic
        return {
            "traffic_bits": {
                "total": tr.total_bits,
                "reads": sum(tr.read_bits.values()),
                "writes": sum(tr.write_bits.values()),
                "by_tensor": tr.by_class(),
                "reads_by_tensor": dict(tr.read_bits),
                "writes_by_tensor": dict(tr.write_bits),
                "by_layer": dict(self.traffic_by_layer),
                "by_segment": [s.traffic.total_bits for s in self.segments],
            },
            "energy_pj": dict(self.energy_pj),
            "energy_by_level_pj": {level: dict(ops)
                                   for level, ops in self.energy_by_level_pj.items()},
            "peak_gb_bits": self.peak_gb_bits,
            "capacity_bits": self.capacity_bits,
            "latency_cycles": self.latency_cycles,
            "edp_pj_cycles": self.edp_pj_cycles,
            "segments": [{
                "layers": list(s.layers),
                "traffic_bits": s.traffic.total_bits,
                "traffic_bits_by_tensor": s.traffic.by_class(),
                "peak_gb_bits": s.peak_gb_bits,
                "persistent_gb_bits": s.persistent_gb_bits,
                "peak_tile": s.peak_tile,
                "peak_layer": s.peak_layer,
                "latency_cycles": s.latency_cycles,
            } for s in self.segments],
        }


def fewest_cycles(problem: Problem) -> bool:
    """Whether steps the mapping does not pin run their least-cycles nests: under
    the latency objective (``docs/model.md`` 7); else their least-energy ones."""
    return problem.objective is Objective.LATENCY and problem.weights is None


def evaluate(problem: Problem, mapping: Mapping) -> Cost:
    """Score ``mapping``: traffic, per-segment peak occupancy, energy, latency.

    The mapping must be structurally valid (:func:`stems_opt.mapping.check_structure`);
    capacity is reported, not enforced: see :attr:`Cost.feasible`.
    """
    net, hw = problem.network, problem.hardware
    fewest = fewest_cycles(problem)
    rates = EnergyRates.of(hw)
    contexts = mapping_contexts(net, mapping)
    seg_costs = []
    by_layer: dict[str, int] = {lay.name: 0 for lay in net.layers}
    all_terms: list[Term] = []
    operand_fj: dict[tuple[str, str], int] = {}
    for i, (seg, ctx) in enumerate(zip(mapping.segments, contexts, strict=True)):
        geo = SegmentGeometry(net, seg)
        terms = segment_terms(net, seg, ctx, geo)
        peak, persistent, tile, pos = peak_of(terms, geo)
        traffic = traffic_breakdown(terms)
        for t in terms:
            if t.layer:
                by_layer[t.layer] += t.read_bits + t.write_bits
        reads, writes = sum(traffic.read_bits.values()), sum(traffic.write_bits.values())
        seg_fj: dict[tuple[str, str], int] = {}
        for lay in geo.layers:
            got = layer_operand_energy_fj(geo, lay, seg.sub_tile(lay.name), hw,
                                          weight_chunks(seg, lay), fewest)
            for key, fj in got.items():
                seg_fj[key] = seg_fj.get(key, 0) + fj
                operand_fj[key] = operand_fj.get(key, 0) + fj
        gb_fj = sum(fj for (level, _), fj in seg_fj.items() if level == GB)
        inner_fj = sum(seg_fj.values()) - gb_fj
        dram_fj = reads * (rates.read_fj_per_bit - rates.gb_write_fj_per_bit) + \
            writes * (rates.write_fj_per_bit - rates.gb_read_fj_per_bit)
        fill_fj = reads * rates.gb_write_fj_per_bit + writes * rates.gb_read_fj_per_bit
        seg_costs.append(SegmentCost(
            index=i, layers=seg.layers, traffic=traffic, peak_gb_bits=peak,
            persistent_gb_bits=persistent, peak_tile=tile, peak_layer=seg.layers[pos],
            energy_pj={"dram": dram_fj / 1000, "global_buffer": (gb_fj + fill_fj) / 1000,
                       "inner_levels": inner_fj / 1000},
            latency_cycles=sum(segment_latency(geo, ctx.written, hw, nest_hardware(hw),
                                               fewest).values()),
            terms=tuple(terms)))
        all_terms.extend(terms)
    traffic = traffic_breakdown(all_terms)
    reads, writes = sum(traffic.read_bits.values()), sum(traffic.write_bits.values())
    memory_fj = reads * rates.read_fj_per_bit + writes * rates.write_fj_per_bit + \
        sum(operand_fj.values())
    compute_fj = 0.0
    neuron_fj = 0
    T = net.timesteps
    for lay in net.layers:
        e = hw.array.mac_pj if lay.uses_mac else hw.array.accumulate_pj
        compute_fj += lay.operations(T) * pj_to_fj(e) * lay.spike_rate
        neuron_fj += lay.neuron_updates(T) * pj_to_fj(hw.array.neuron_update_pj)
    energy = {
        "dram": sum(s.energy_pj["dram"] for s in seg_costs),
        "global_buffer": sum(s.energy_pj["global_buffer"] for s in seg_costs),
        "inner_levels": sum(s.energy_pj["inner_levels"] for s in seg_costs),
        "compute": compute_fj / 1000,
        "neuron_updates": neuron_fj / 1000,
    }
    energy["total"] = (memory_fj + compute_fj + neuron_fj) / 1000
    levels = energy_by_level(traffic, operand_fj, rates)
    levels["compute"] = {"": compute_fj / 1000}
    levels["neuron_updates"] = {"": neuron_fj / 1000}
    return Cost(traffic=traffic, traffic_by_layer=by_layer, segments=tuple(seg_costs),
                energy_pj=energy, latency_cycles=sum(s.latency_cycles for s in seg_costs),
                capacity_bits=hw.gb_capacity_bits, memory_energy_fj=memory_fj,
                energy_by_level_pj=levels)
