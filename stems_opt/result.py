"""What every solver returns, exact or heuristic."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from stems_opt.cost_model import Cost
from stems_opt.mapping import Mapping


class SolveStatus(str, Enum):
    """Outcome of a solve.

    ``optimal`` is only used with a proof (zero gap); ``feasible`` is a
    mapping that fits without a proof of optimality; ``infeasible`` means no
    mapping of the searched space fits (for a heuristic: none it tried).
    """

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Result:
    """A solver's answer; ``cost`` always comes from :func:`cost_model.evaluate`.

    Parameters
    ----------
    objective_value
        The solver's own objective for ``mapping`` (traffic bits or energy
        pJ); equals ``cost.objective_value(objective)`` for exact solvers.
    bound
        A proven lower bound on the optimum, when the solver has one.
    gap
        ``(objective - bound) / objective``; 0 for a proven optimum.
    """

    status: SolveStatus
    solver: str
    objective: str
    mapping: Mapping | None = None
    cost: Cost | None = None
    objective_value: float | None = None
    bound: float | None = None
    gap: float | None = None
    runtime_s: float = 0.0
    build_s: float = 0.0
    message: str = ""
    stats: dict[str, float | str] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        """Whether a mapping that fits was found."""
        return self.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)
