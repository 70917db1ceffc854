"""A mapping problem: a network, an accelerator and what to minimise."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from stems_opt.hardware import Hardware
from stems_opt.network import Network


class Objective(str, Enum):
    """What the optimiser minimises."""

    TRAFFIC = "traffic"
    ENERGY = "energy"
    LATENCY = "latency"
    EDP = "edp"


@dataclass(frozen=True)
class KnownOptimum:
    """An optimum recorded in an instance file, with where it came from."""

    objective: Objective
    value: float
    provenance: str = ""


@dataclass(frozen=True)
class Problem:
    """Network + hardware + objective: everything a solver needs.

    Parameters
    ----------
    name
        Instance name (the instance file's stem by default).
    max_segment_layers
        Optional cap on layers per segment for the optimiser's search space
        (``None``: no cap). Named schedules and ``evaluate`` ignore it.
    weights
        For the EDP search's inner solves only (``objective`` EDP): minimise
        ``a * energy_fJ + b * latency_cycles`` for ``weights = (a, b)``
        instead of the product (``docs/solver.md``, EDP).
    """

    network: Network
    hardware: Hardware
    objective: Objective = Objective.TRAFFIC
    name: str = ""
    known_optima: tuple[KnownOptimum, ...] = ()
    max_segment_layers: int | None = None
    weights: tuple[int, int] | None = None

    def with_objective(self, objective: Objective) -> Problem:
        """A copy minimising ``objective``."""
        return Problem(self.network, self.hardware, objective, self.name, self.known_optima,
                       self.max_segment_layers)

    def weighted(self, energy_weight: int, latency_weight: int) -> Problem:
        """A copy minimising ``energy_weight * energy_fJ + latency_weight * cycles``."""
        return Problem(self.network, self.hardware, Objective.EDP, self.name, self.known_optima,
                       self.max_segment_layers, (energy_weight, latency_weight))
