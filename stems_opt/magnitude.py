"""Upper bounds on any mapping's objective, and the problems of instances beyond them.

The limits themselves (:data:`stems_opt.limits.MAX_OBJECTIVE` and why) are
in :mod:`stems_opt.limits`; the bounds need the network and the cost
model's energy rates, which :mod:`stems_opt.limits` (imported by the parsers)
must not.
"""

from __future__ import annotations

from stems_opt.cost.energy import EnergyRates, pj_to_fj
from stems_opt.errors import Issue
from stems_opt.hardware import Hardware
from stems_opt.limits import MAX_OBJECTIVE
from stems_opt.network import Network


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
