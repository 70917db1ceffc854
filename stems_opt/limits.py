"""The ranges every number of an input must lie in, so that every command runs it exactly.

``validate`` accepting a file must mean that ``evaluate``, ``solve`` (both
backends) and ``compare`` can run it. Three things can break on numbers that
are merely positive and finite:

- **Solver arithmetic.** HiGHS works in doubles, which hold integers exactly
  only below ``2**53``; CP-SAT needs int64 coefficients and checks that no
  linear expression can leave int64. The objective is an integer in both
  (traffic in bits, energy in fJ), so :func:`worst_case_objective` bounds it
  for *every* mapping, and :data:`MAX_OBJECTIVE` = ``2**53`` caps that bound.
  Every objective coefficient is the cost of part of one mapping, so it is
  below ``2**53`` too: exact in a double, and in int64 with 10 bits to spare
  for CP-SAT's sums over a model (it checks them and refuses a model that
  could overflow rather than answer wrongly). Measured: the RED-LIF energy
  models sum to ``2**49.4`` against a worst case of ``2**51.2``, and an
  instance at ``2**52.99`` solves to the same optimum with both backends
  (``tests/test_input_limits.py``).
- **The fJ grid.** Energies are rounded to integer fJ (``pj_to_fj``); an
  energy of :data:`MAX_PJ` pJ is ``1e9`` fJ, exact in a double, and its
  products with traffic are covered by the worst-case bound above.
- **Work.** Loops and arrays grow with the rows of a tiled axis, so spatial
  sizes are capped by :data:`MAX_EXTENT`; other integers (channels, ``K``,
  bits, timesteps, counts) by :data:`MAX_COUNT`, which keeps divisor
  enumeration (trial division up to the square root, 46,341 steps) cheap.

The limits are documented in ``docs/formats.md`` (section 1, "Limits").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stems_opt.errors import Issue

if TYPE_CHECKING:
    from stems_opt.hardware import Hardware
    from stems_opt.network import Network

MAX_OBJECTIVE = 2**53
"""Largest worst-case objective (bits of traffic, fJ of energy) an instance may have."""
MAX_COUNT = 2**31 - 1
"""Largest integer field that is not a spatial size or a memory size."""
MAX_EXTENT = 2**16
"""Largest spatial size: input height and width, kernel, stride, padding, layer extents."""
MAX_MEMORY_BITS = 2**53
"""Largest memory ``size`` in bits (a capacity beyond the objective's range is meaningless)."""
MAX_PJ = 1e6
"""Largest energy per bit or per operation, in pJ (1 µJ; DRAM is about 10 pJ/bit)."""
MIN_BANDWIDTH, MAX_BANDWIDTH = 1e-3, 2.0**53
"""Range of ``bandwidth_bits_per_cycle``: latency is traffic over bandwidth."""


def worst_case_traffic_bits(network: Network) -> tuple[int, str]:
    """An upper bound on the traffic of any mapping, and the layer contributing most.

    Per layer with extent ``E`` (the larger of ``OY`` and ``OX``): a segment
    runs it in at most ``T`` time batches times ``n * m <= E`` (sub-)tiles, so
    its weights are read at most ``T * E`` times; its state is spilled and
    refilled at most ``T`` times (``2 T |V|``); its output is written once;
    each (sub-)window of an input spans at most the whole input, so every
    input is read at most ``E`` times over. The same bound covers the
    operand accesses at the global buffer (``layer_gb_access_bits``).
    """
    T = network.timesteps
    total, worst, worst_name = 0, -1, ""
    for lay in network.layers:
        e = max(lay.oy, lay.ox)
        bits = T * e * lay.weight_size_bits + 2 * T * lay.state_size_bits \
            + lay.output_size_bits(T)
        bits += sum(network.tensor_size_bits(src) * e for src in dict.fromkeys(lay.inputs))
        total += bits
        if bits > worst:
            worst, worst_name = bits, lay.name
    return total, worst_name


def worst_case_objective(network: Network, hardware: Hardware) -> tuple[int, int, str]:
    """Upper bounds on the traffic (bits) and energy (fJ) objectives of any mapping,
    and the layer contributing most to the traffic bound.

    Energy: every DRAM bit at the dearer of the read and write rates (GB side
    included), every GB operand access (bounded by the same traffic bound) at
    the dearer GB rate, plus compute and neuron updates at their rates.
    """
    from stems_opt.cost_model import EnergyRates, pj_to_fj

    traffic, name = worst_case_traffic_bits(network)
    rates = EnergyRates.of(hardware)
    per_bit = max(rates.read_fj_per_bit, rates.write_fj_per_bit) \
        + max(rates.gb_read_fj_per_bit, rates.gb_write_fj_per_bit)
    arr = hardware.array
    op_fj = max(pj_to_fj(arr.mac_pj), pj_to_fj(arr.accumulate_pj))
    T = network.timesteps
    compute = sum(lay.operations(T) * op_fj + lay.neuron_updates(T) * pj_to_fj(
        arr.neuron_update_pj) for lay in network.layers)
    return traffic, traffic * per_bit + compute, name


def magnitude_issues(network: Network, hardware: Hardware, network_file: str | None = None
                     ) -> list[Issue]:
    """Problems with an instance whose worst-case objective leaves :data:`MAX_OBJECTIVE`.

    Both name the network's layer contributing most: energies are capped per
    field, so a bound beyond the limit comes from the network's sizes.
    """
    traffic, energy, name = worst_case_objective(network, hardware)
    if traffic >= MAX_OBJECTIVE:
        return [Issue(f"the network is too large: a mapping may move up to {traffic:.3g} bits, "
                      f"beyond the 2^53 ({MAX_OBJECTIVE:.3g}) the solvers count exactly; this "
                      "layer contributes most", file=network_file, layer=name,
                      field="loop_dims")]
    if energy >= MAX_OBJECTIVE:
        # Network sizes and energies both scale the bound; name the largest layer, and
        # the hardware file whose energies it is multiplied by.
        return [Issue(f"too large for the hardware's energies: a mapping may cost up to "
                      f"{energy:.3g} fJ, beyond the 2^53 ({MAX_OBJECTIVE:.3g}) fJ the solvers "
                      "count exactly; this layer contributes most", file=network_file,
                      layer=name, field="loop_dims")]
    return []
