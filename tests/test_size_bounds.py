"""Buffer sizes solved in order: the bound handed from a larger buffer to a smaller one.

The bound is valid because the optimum never rises with the buffer; both are
checked against the brute-force (peak, objective) frontier of the
hand-picked cases, at every frontier point's peak (where the optimum steps).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from stems_opt.problem import Objective
from stems_opt.result import SolveStatus
from stems_opt.size_bounds import solve_sizes, with_capacity

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import brute_force as bf  # noqa: E402
from test_optimizer import CASES, OBJECTIVES, case_frontiers, make_problem, same  # noqa: E402


def optimum(frontier: list[bf.Point], capacity_bits: int, p) -> float | None:
    """The brute-force optimum at ``capacity_bits`` in objective units."""
    from stems_opt.cost.evaluation import evaluate

    point = bf.optimum_at(frontier, capacity_bits)
    if point is None:
        return None
    return evaluate(with_capacity(p, capacity_bits), point.mapping).objective_value(
        p.objective.value)


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_optimum_never_rises_with_the_buffer(case: str, objective: Objective) -> None:
    """The premise of the sweep bound, on the brute-force frontier: at every pair of
    sizes the larger buffer's optimum is at most the smaller one's."""
    network, ku, size = CASES[case]
    frontier = case_frontiers(case)[0][objective]
    p = make_problem(network, size, ku, objective)
    sizes = sorted({pt.peak_bits for pt in frontier})
    values = [optimum(frontier, s, p) for s in sizes]
    for small, large in itertools.pairwise(values):
        assert small is not None and large is not None and large <= small


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.value)
@pytest.mark.parametrize("case", ["chain_T4", "residual_T1", "conv_pool_T2_chunks"])
def test_sweep_hints_never_exceed_the_optimum(case: str, objective: Objective) -> None:
    """Every bound the sweep hands to a buffer is at most that buffer's brute-force
    optimum, and every point is still proven at it.

    Mutation: sweeping smallest first (``reverse=False`` in :func:`solve_sizes`) hands
    a smaller buffer's optimum to a larger one; where the frontier steps down
    that hint exceeds the larger buffer's optimum and this test fails.
    """
    network, ku, size = CASES[case]
    frontier = case_frontiers(case)[0][objective]
    p = make_problem(network, size, ku, objective)
    sizes = sorted({pt.peak_bits for pt in frontier})
    results = solve_sizes(p, sizes, time_limit_s=60.0)
    for s, r in zip(sizes, results, strict=True):
        want = optimum(frontier, s, p)
        assert want is not None
        hint = float(r.stats["lower_bound_hint"])
        assert hint <= want * (1 + 1e-12), (s, hint, want)
        assert r.status is SolveStatus.OPTIMAL and same(objective, r.objective_value, want)
    values = [optimum(frontier, s, p) for s in sizes]
    assert values[0] > values[-1], "the case's optimum must step with the buffer"
