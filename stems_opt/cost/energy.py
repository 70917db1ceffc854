"""Energy rates and the energy of operand accesses below DRAM, per level and operand.

Energies are integers on a 1 fJ grid (:func:`pj_to_fj`) so that solvers see
integers; the intra-layer loop nests they come from are in
:mod:`stems_opt.cost.loops`.
"""

from __future__ import annotations

from dataclasses import dataclass

from stems_opt.cost.cycles import has_ports
from stems_opt.cost.geometry import SegmentGeometry
from stems_opt.cost.loops import GB, NestHardware, layer_nest_energy, layer_nest_total_fj
from stems_opt.cost.step_nests import layer_energy_fj
from stems_opt.cost.traffic import TENSOR_CLASSES, TrafficBreakdown
from stems_opt.hardware import Hardware
from stems_opt.network import Layer, LayerKind


def pj_to_fj(value_pj: float) -> int:
    """Energies are kept on a 1 fJ grid so that solvers see integers."""
    return round(value_pj * 1000)


@dataclass(frozen=True)
class EnergyRates:
    """Integer fJ per bit for a DRAM read and a DRAM write, GB fill/drain included."""

    read_fj_per_bit: int
    write_fj_per_bit: int
    gb_read_fj_per_bit: int
    gb_write_fj_per_bit: int

    @staticmethod
    def of(hw: Hardware) -> EnergyRates:
        """Rates of ``hw``: a DRAM read also writes the GB, a DRAM write reads it."""
        gb = hw.global_buffer
        gr, gw = pj_to_fj(gb.read_pj_per_bit), pj_to_fj(gb.write_pj_per_bit)
        return EnergyRates(pj_to_fj(hw.dram.read_pj_per_bit) + gw,
                           pj_to_fj(hw.dram.write_pj_per_bit) + gr, gr, gw)


def layer_gb_access_bits(geo: SegmentGeometry, layer: Layer, m: int
                         ) -> dict[str, tuple[int, int]]:
    """Operand reads and writes at the GB per operand, one access per use.

    Each operand goes between the GB and the array once per use: the weights
    once per sub-tile per timestep, every input row of every (sub-)window once
    per timestep, each output once, the state read and written once per
    timestep. The rule of pools and adds, and of every layer on hardware
    without ``loop_nests``.
    """
    if layer.kind is LayerKind.FLATTEN:
        return {}
    T = geo.T
    rows, _, _ = geo.window_reads(layer.name, m, keep=False)  # the same windows for each input
    reads = sum(rows * geo.network.tensor_row_bits(src, geo.seg.axis) * T
                for src in dict.fromkeys(layer.inputs))
    out = {"I": (reads, 0), "O": (0, layer.output_size_bits(T))}
    if layer.has_weights:
        out["W"] = (layer.weight_size_bits * T * geo.active_tiles(layer.name) * m, 0)
    if layer.stateful:
        out["V"] = (layer.state_size_bits * T, layer.state_size_bits * T)
    return out


_NEST_HW: dict[int, tuple[Hardware, NestHardware]] = {}


def nest_hardware(hw: Hardware) -> NestHardware:
    """The loop nests' view of ``hw`` (memoised per hardware object)."""
    hit = _NEST_HW.get(id(hw))
    if hit is None or hit[0] is not hw:
        hit = (hw, NestHardware.of(hw))
        _NEST_HW[id(hw)] = hit
    return hit[1]


def layer_operand_energy_fj(geo: SegmentGeometry, layer: Layer, m: int, hw: Hardware,
                            chunks: int = 1, fewest_cycles: bool = False
                            ) -> dict[tuple[str, str], int]:
    """Energy (integer fJ) of ``layer``'s operand accesses below DRAM, per
    ``(level, operand)``: GB reads and writes and the inner levels.

    Conv and linear layers run every step (sub-tile x time batch) with its
    optimal loop nest (:mod:`stems_opt.cost.loops`) on hardware with
    ``loop_nests``, ``chunks`` being the weight chunks of a streamed layer;
    otherwise each operand is accessed once per use (:func:`layer_gb_access_bits`).
    A step whose nest the segment pins runs that one; ``fewest_cycles``: the
    other steps run their least-cycles nests (:mod:`stems_opt.cost.step_nests`).
    """
    nh = nest_hardware(hw)
    if layer.has_weights and hw.loop_nests:
        pinned = geo.seg.nests.get(layer.name, ())
        if pinned or (fewest_cycles and has_ports(nh)):
            return layer_energy_fj(layer, geo, m, nh, chunks, pinned, fewest_cycles)
        return dict(layer_nest_energy(layer, geo.seg.axis, geo.bounds[layer.name], m, geo.tb,
                                      geo.S, nh, chunks))
    return {(GB, op): r * nh.gb_read_fj_per_bit + w * nh.gb_write_fj_per_bit
            for op, (r, w) in layer_gb_access_bits(geo, layer, m).items() if r or w}


def layer_operand_total_fj(geo: SegmentGeometry, layer: Layer, m: int, hw: Hardware,
                           chunks: int = 1) -> int:
    """The sum of :func:`layer_operand_energy_fj`'s values (the option costs'
    operand term); a layer whose steps run their least-energy nests is summed
    from the nest energies alone, its nests not found."""
    if layer.has_weights and hw.loop_nests and not geo.seg.nests.get(layer.name, ()):
        return layer_nest_total_fj(layer, geo.seg.axis, geo.bounds[layer.name], m, geo.tb,
                                   geo.S, nest_hardware(hw), chunks)
    return sum(layer_operand_energy_fj(geo, layer, m, hw, chunks).values())


READ_OPERAND = {"weights": "W", "state": "V", "activations": "I"}
"""The operand a DRAM read of each tensor class moves (an activation read is an input)."""
WRITE_OPERAND = {"weights": "W", "state": "V", "activations": "O"}
"""The operand a DRAM write of each tensor class moves (an activation write is an output)."""


def energy_by_level(traffic: TrafficBreakdown, operand_fj: dict[tuple[str, str], int],
                    rates: EnergyRates) -> dict[str, dict[str, float]]:
    """Memory energy (pJ) per level and operand: DRAM, the GB (its fills and
    drains for DRAM plus the operand accesses of the loop nests), each inner
    level. Registers cost nothing and are not listed."""
    dram_r = rates.read_fj_per_bit - rates.gb_write_fj_per_bit
    dram_w = rates.write_fj_per_bit - rates.gb_read_fj_per_bit
    fj: dict[str, dict[str, int]] = {"dram": {}, GB: {}}
    for cls in TENSOR_CLASSES:
        for bits, op, dram_rate, gb_rate in (
                (traffic.read_bits[cls], READ_OPERAND[cls], dram_r, rates.gb_write_fj_per_bit),
                (traffic.write_bits[cls], WRITE_OPERAND[cls], dram_w, rates.gb_read_fj_per_bit)):
            if bits:
                fj["dram"][op] = fj["dram"].get(op, 0) + bits * dram_rate
                fj[GB][op] = fj[GB].get(op, 0) + bits * gb_rate
    for (level, op), v in sorted(operand_fj.items()):
        fj.setdefault(level, {})
        fj[level][op] = fj[level].get(op, 0) + v
    return {level: {op: v / 1000 for op, v in sorted(ops.items())} for level, ops in fj.items()}
