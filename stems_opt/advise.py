"""Which neuron states to drop: exact savings of making layers (or blocks) stateless.

Each candidate (a stateful layer, or a block with several stateful layers) is
made ``stateless`` (spiking, no membrane potential, as in STEMS's
state-removal study) and the instance is re-solved exactly for traffic and
for energy. Candidates are ranked by the saving of the chosen objective per
state bit removed; the saving curve removes the ranked layers one after the
other and re-solves each prefix. Savings are differences of proven optima
(a point the time limit stops before its proof is flagged with its gap).

Dropping state changes what the network computes: accuracy must be checked
by retraining; this module only prices the memory side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from stems_opt.network import Network, NeuronKind
from stems_opt.problem import Objective, Problem
from stems_opt.result import Result

ACCURACY_NOTE = ("Removing neuron state changes what the network computes: check the accuracy "
                 "of every variant by retraining before adopting it. These numbers price only "
                 "the memory side.")


@dataclass(frozen=True)
class Optima:
    """The exact optimum of one network variant for both objectives."""

    traffic: Result
    energy: Result

    @property
    def proven(self) -> bool:
        """Whether both values carry an optimality proof."""
        return self.traffic.status.value == "optimal" and self.energy.status.value == "optimal"

    @property
    def traffic_bits(self) -> float:
        """Optimal (or best found) traffic."""
        return _value(self.traffic)

    @property
    def energy_pj(self) -> float:
        """Optimal (or best found) energy."""
        return _value(self.energy)


@dataclass(frozen=True)
class Candidate:
    """A layer or block made stateless, and what it saves against the base optimum."""

    name: str
    kind: str
    layers: tuple[str, ...]
    state_bits: int
    optima: Optima
    traffic_saved_bits: float
    energy_saved_pj: float

    @property
    def traffic_saved_per_bit(self) -> float:
        """Traffic bits saved per state bit removed."""
        return self.traffic_saved_bits / self.state_bits

    @property
    def energy_saved_pj_per_bit(self) -> float:
        """Energy (pJ) saved per state bit removed."""
        return self.energy_saved_pj / self.state_bits


@dataclass(frozen=True)
class CurvePoint:
    """The first ``len(layers)`` ranked layers made stateless together."""

    layers: tuple[str, ...]
    state_bits_removed: int
    optima: Optima


@dataclass(frozen=True)
class StateAdvice:
    """The base optimum, the ranked candidates and the saving curve."""

    base: Optima
    state_bits: int
    objective: Objective
    candidates: tuple[Candidate, ...]
    curve: tuple[CurvePoint, ...]


def _value(r: Result) -> float:
    if r.objective_value is None:
        raise ValueError(f"no mapping fits ({r.status.value}): {r.message}")
    return r.objective_value


def stateless_variant(network: Network, layers: Sequence[str]) -> Network:
    """``network`` with the neurons of ``layers`` made ``stateless``."""
    drop = set(layers)
    new = tuple(replace(lay, neuron=NeuronKind.STATELESS) if lay.name in drop else lay
                for lay in network.layers)
    return replace(network, name=network.name, layers=new)


def state_candidates(network: Network) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(name, kind, layers)``: every stateful layer, then every block holding more
    than one stateful layer (a block with one is the same as that layer)."""
    out = [(lay.name, "layer", (lay.name,)) for lay in network.layers if lay.stateful]
    for block in network.blocks:
        stateful = tuple(n for n in block.layers if network.layer(n).stateful)
        if len(stateful) > 1:
            out.append((block.name, "block", stateful))
    return out


def _optima(problem: Problem, network: Network, **solve_options: object) -> Optima:
    from stems_opt.solvers import solve

    base = replace(problem, network=network)
    return Optima(solve(base.with_objective(Objective.TRAFFIC), **solve_options),  # type: ignore
                  solve(base.with_objective(Objective.ENERGY), **solve_options))  # type: ignore


def advise_state(problem: Problem, top: int | None = None, curve: bool = True,
                 **solve_options: object) -> StateAdvice:
    """Rank state removals by exact savings (see the module docstring).

    Parameters
    ----------
    top
        Layers in the saving curve (all ranked layers when ``None``).
    curve
        Whether to compute the saving curve.
    solve_options
        Passed to :func:`stems_opt.solvers.solve` (``solver``, ``time_limit_s``, ...).

    Raises
    ------
    ValueError
        If no mapping of the base network fits the global buffer.
    """
    net = problem.network
    base = _optima(problem, net, **solve_options)
    objective = problem.objective
    cands = []
    for name, kind, layers in state_candidates(net):
        opt = _optima(problem, stateless_variant(net, layers), **solve_options)
        bits = sum(net.layer(n).state_size_bits for n in layers)
        cands.append(Candidate(name, kind, layers, bits, opt,
                               base.traffic_bits - opt.traffic_bits,
                               base.energy_pj - opt.energy_pj))

    def rank(c: Candidate) -> tuple[float, float, int]:
        per_bit = c.traffic_saved_per_bit if objective is Objective.TRAFFIC else \
            c.energy_saved_pj_per_bit
        total = c.traffic_saved_bits if objective is Objective.TRAFFIC else c.energy_saved_pj
        return -per_bit, -total, net.index(c.layers[0])

    cands.sort(key=rank)
    points = []
    if curve:
        ranked = [c.name for c in cands if c.kind == "layer"][:top]
        for i in range(1, len(ranked) + 1):
            layers = tuple(ranked[:i])
            points.append(CurvePoint(layers, sum(net.layer(n).state_size_bits for n in layers),
                                     _optima(problem, stateless_variant(net, layers),
                                             **solve_options)))
    return StateAdvice(base, net.state_size_bits, objective, tuple(cands), tuple(points))


def _flag(o: Optima) -> str:
    if o.proven:
        return "optimal"
    gaps = [r.gap for r in (o.traffic, o.energy) if r.gap]
    return f"gap {100 * max(gaps):.2f}%" if gaps else "not proven"


def format_advice(problem: Problem, advice: StateAdvice, top: int | None = None) -> str:
    """The ranking, the saving curve and the accuracy note, as text."""
    b = advice.base
    lines = [f"instance {problem.name}: {advice.state_bits:,} state bits; optimum "
             f"{b.traffic_bits:,.0f} bits of traffic, {b.energy_pj / 1e6:,.3f} uJ "
             f"({_flag(b)})",
             f"ranked by {advice.objective.value} saved per state bit removed:",
             f"  {'rank':>4}  {'candidate':<20} {'kind':<5} {'state bits':>11} "
             f"{'traffic saved':>14} {'/bit':>7} {'energy saved uJ':>16} {'pJ/bit':>8}  status"]
    for i, c in enumerate(advice.candidates[:top], 1):
        lines.append(f"  {i:>4}  {c.name:<20} {c.kind:<5} {c.state_bits:>11,} "
                     f"{c.traffic_saved_bits:>14,.0f} {c.traffic_saved_per_bit:>7.3f} "
                     f"{c.energy_saved_pj / 1e6:>16,.3f} {c.energy_saved_pj_per_bit:>8.3f}  "
                     f"{_flag(c.optima)}")
    if advice.curve:
        lines += ["", "saving curve (ranked layers made stateless together):",
                  f"  {'layers':>6} {'state bits removed':>19} {'traffic bits':>14} "
                  f"{'energy uJ':>12}  status"]
        for p in advice.curve:
            lines.append(f"  {len(p.layers):>6} {p.state_bits_removed:>19,} "
                         f"{p.optima.traffic_bits:>14,.0f} {p.optima.energy_pj / 1e6:>12,.3f}  "
                         f"{_flag(p.optima)}  (+{p.layers[-1]})")
    lines += ["", ACCURACY_NOTE]
    return "\n".join(lines)
