"""What every solver returns, exact or heuristic."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from stems_opt.cost.evaluation import Cost
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
    """A solver's answer; ``cost`` always comes from :func:`stems_opt.cost.evaluation.evaluate`.

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: status, solver, objective and value, bound and gap, times,
        then the cost (:meth:`Cost.to_dict`) and the mapping (:meth:`Mapping.to_dict`)
        when there are any. Numbers are plain Python numbers."""
        doc: dict[str, Any] = {
            "objective": self.objective,
            "status": self.status.value,
            "solver": self.solver,
            "runtime_s": round(self.runtime_s, 6),
            "build_s": round(self.build_s, 6),
            "objective_value": _plain(self.objective_value),
            "bound": _plain(self.bound),
            "gap": _plain(self.gap),
        }
        if self.message:
            doc["message"] = self.message
        if self.stats:
            doc["stats"] = {k: _plain(v) for k, v in self.stats.items()}
        if self.cost is not None:
            doc.update(self.cost.to_dict())
        if self.mapping is not None:
            doc["mapping"] = self.mapping.to_dict()
        return doc


def relative_gap(value: float, bound: float | None) -> float | None:
    """``(value - bound) / |value|``, never below 0 (``0`` for a zero value), or ``None``
    without a bound: the gap every result reports."""
    if bound is None:
        return None
    return 0.0 if value == 0 else max(0.0, (value - bound) / abs(value))


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (``json`` refuses them)."""
    return value.item() if hasattr(value, "item") else value
