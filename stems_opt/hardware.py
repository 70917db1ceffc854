"""The accelerator: DRAM, a shared global buffer, inner levels and the compute array."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from stems_opt.errors import Issue, excerpt, raise_if
from stems_opt.limits import MAX_BANDWIDTH, MAX_COUNT, MAX_MEMORY_BITS, MAX_PJ, MIN_BANDWIDTH

OPERANDS = ("W", "I", "O", "V")
ARRAY_DIMS = ("K", "C", "OY", "OX", "FY", "FX")


def is_number(value: object) -> bool:
    """Whether ``value`` is a finite int or float (bools are not numbers here).

    YAML reads ``true``, ``.nan`` and ``.inf`` as a bool and floats; none of
    them is a meaningful size, energy or frequency.
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def check_clock(clock_hz: Any) -> list[Issue]:
    """Issues with a clock frequency: ``None`` (not given) or a finite number > 0."""
    if clock_hz is None or (is_number(clock_hz) and clock_hz > 0):
        return []
    return [Issue(f"must be a finite positive number of Hz, got {excerpt(clock_hz)}",
                  field="clock_hz")]


def _check_nonneg(owner: str, **values: float) -> list[Issue]:
    """Energies: finite, in ``[0, MAX_PJ]`` (see :mod:`stems_opt.limits`)."""
    return [Issue(f"must be a finite number in 0..{MAX_PJ:g}, got {excerpt(v)}", layer=owner,
                  field=k)
            for k, v in values.items() if not is_number(v) or not 0 <= v <= MAX_PJ]


@dataclass(frozen=True)
class MemoryLevel:
    """One memory: capacity, per-bit energies, bandwidth and the operands it serves.

    ``capacity_bits`` is ``None`` for DRAM (unlimited).
    """

    name: str
    capacity_bits: int | None
    read_pj_per_bit: float
    write_pj_per_bit: float
    bandwidth_bits_per_cycle: float | None = None
    operands: tuple[str, ...] = OPERANDS

    def __post_init__(self) -> None:
        issues = _check_nonneg(self.name, read_pj_per_bit=self.read_pj_per_bit,
                               write_pj_per_bit=self.write_pj_per_bit)
        if self.capacity_bits is not None and (not isinstance(self.capacity_bits, int)
                                               or isinstance(self.capacity_bits, bool)
                                               or not 1 <= self.capacity_bits
                                               <= MAX_MEMORY_BITS):
            issues.append(Issue(f"must be an integer number of bits in 1..2^53, got "
                                f"{excerpt(self.capacity_bits)}", layer=self.name, field="size"))
        if self.bandwidth_bits_per_cycle is not None:
            bw = self.bandwidth_bits_per_cycle
            if not is_number(bw) or not MIN_BANDWIDTH <= bw <= MAX_BANDWIDTH:
                issues.append(Issue(f"must be a finite number in {MIN_BANDWIDTH:g}..2^53, got "
                                    f"{excerpt(bw)}", layer=self.name,
                                    field="bandwidth_bits_per_cycle"))
        for op in self.operands:
            if op not in OPERANDS:
                issues.append(Issue(f"unknown operand {excerpt(op)} (one of "
                                    f"{', '.join(OPERANDS)})",
                                    layer=self.name, field="operands"))
        raise_if(issues)


@dataclass(frozen=True)
class ComputeArray:
    """A PE array with fixed spatial unrolling and per-operation energies.

    The defaults are those of the hardware YAML's ``operational_array``: no
    unrolling (one PE) and energies of 0 pJ until given.
    """

    unrolling: dict[str, int] = field(default_factory=dict)
    accumulate_pj: float = 0.0
    mac_pj: float = 0.0
    neuron_update_pj: float = 0.0

    def __post_init__(self) -> None:
        issues = _check_nonneg("operational_array", accumulate_pj=self.accumulate_pj,
                               mac_pj=self.mac_pj, neuron_update_pj=self.neuron_update_pj)
        for dim, f in self.unrolling.items():
            if dim not in ARRAY_DIMS:
                issues.append(Issue(f"unknown dimension (one of {', '.join(ARRAY_DIMS)})",
                                    layer="operational_array", field=f"sizes.{dim}"))
            elif not isinstance(f, int) or isinstance(f, bool) or not 1 <= f <= MAX_COUNT:
                issues.append(Issue(f"must be an integer in 1..{MAX_COUNT}, got {excerpt(f)}",
                                    layer="operational_array", field=f"sizes.{dim}"))
        raise_if(issues)

    @property
    def pe_count(self) -> int:
        """Number of processing elements."""
        return math.prod(self.unrolling.values())

    def factor(self, dim: str) -> int:
        """Spatial unrolling of ``dim`` (1 when not unrolled)."""
        return self.unrolling.get(dim, 1)


@dataclass(frozen=True)
class Hardware:
    """An accelerator with DRAM, one shared global buffer (GB) and optional inner levels.

    ``loop_nests``: operand accesses below DRAM come from each step's optimal
    loop nest (inner levels charged); otherwise each operand goes between the
    GB and the array once per use and inner levels cost nothing.
    """

    name: str
    dram: MemoryLevel
    global_buffer: MemoryLevel
    array: ComputeArray
    inner_levels: tuple[MemoryLevel, ...] = ()
    clock_hz: float | None = None
    loop_nests: bool = False  # charge operand accesses through each step's optimal loop nest

    def __post_init__(self) -> None:
        issues: list[Issue] = []
        if self.global_buffer.capacity_bits is None:
            issues.append(Issue("the global buffer needs a size", layer="global_buffer",
                                field="size"))
        for lvl in self.inner_levels:
            if lvl.capacity_bits is None:
                issues.append(Issue("inner levels need a size", layer=lvl.name, field="size"))
        issues += check_clock(self.clock_hz)
        raise_if(issues)

    @property
    def gb_capacity_bits(self) -> int:
        """Capacity of the global buffer in bits."""
        assert self.global_buffer.capacity_bits is not None
        return self.global_buffer.capacity_bits

    @property
    def dram_bandwidth_bits_per_cycle(self) -> float:
        """DRAM port width (bits per cycle); 64 when not given."""
        return self.dram.bandwidth_bits_per_cycle or 64.0
