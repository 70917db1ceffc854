"""What a backend is given and what it returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stems_opt.stopping import Stop


@dataclass(frozen=True)
class SolveOptions:
    """Solver settings common to every backend."""

    time_limit_s: float | None = None
    threads: int | None = None
    seed: int = 0
    stop: Stop | None = None  # a deadline or stop request that cancels the solve


@dataclass(frozen=True)
class BackendAnswer:
    """Raw answer of a backend: ``status`` is optimal, feasible, infeasible or unknown."""

    status: str
    values: Sequence[float] | None
    objective: float | None
    bound: float | None
    solve_s: float
    detail: str = ""
